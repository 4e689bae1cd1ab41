"""The pipeline config: typed, frozen dataclasses read from TOML (`load_config`), defaults in one place."""
from edgekd.pipeline.config.schema import (BenchConfig, DataConfig, DistillConfig, ExportConfig, HintConfig, ModelConfig,
                                           PipelineConfig, RunConfig, SearchConfig, TeacherConfig, TrainConfig, TransferConfig,
                                           load_config, validate)

__all__ = ["BenchConfig", "DataConfig", "DistillConfig", "ExportConfig", "HintConfig", "ModelConfig", "TransferConfig", "PipelineConfig", "RunConfig", "SearchConfig",
           "TeacherConfig", "TrainConfig", "load_config", "validate"]
