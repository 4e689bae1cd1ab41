"""Architectures (nn.Module) and the registry that builds them by name."""
from edgekd.models.registry import ARCHITECTURES, ModelSpec, build_model, check_arch, count_macs, count_params

__all__ = ["ARCHITECTURES", "ModelSpec", "build_model", "check_arch", "count_macs", "count_params"]
