"""The typed, frozen pipeline config: defaults live here and only here.

A config is read from TOML, overridden with dotted `key=value` pairs, type-checked (config.typed)
and validated; every problem (unknown key, wrong type, impossible value) is raised at once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from edgekd.errors import ConfigError
from edgekd.pipeline.config.typed import apply_override, build, parse_override, read_toml


@dataclass(frozen=True)
class RunConfig:
    name: str = ""  # "" means the config file's stem
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    amp: bool = False  # automatic mixed precision (float16) for training on CUDA


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # a name in pipeline.data.DATASETS
    path: str = ""  # directory (idx, folder) or file (npz); relative paths are taken from the working directory
    test_path: str = ""  # a separate test set, read like `path` (idx, npz, folder); then test_fraction is unused
    val_path: str = ""  # a separate validation set, likewise; then val_fraction is unused
    test_fraction: float = 0.2  # ignored when the data come split (test_path, idx's t10k, a folder's test/)
    val_fraction: float = 0.1  # of what remains after the test split; used for early stopping
    layout: Literal["nchw", "nhwc"] = "nchw"  # npz only: layout of a rank-4 `x`
    image_size: tuple[int, ...] = ()  # folder only: (height, width) to resize to; () keeps the files' size
    # folder only, with image_size: "stretch" resizes to it; "crop" scales to cover it (aspect kept) and cuts out
    # the centre, as ImageNet-style evaluation does
    resize: Literal["stretch", "crop"] = "stretch"
    grayscale: Literal["auto", True, False] = "auto"  # folder only: one channel; "auto": when every image is gray
    # read training batches from the pixels, normalised batch by batch, instead of holding the splits as
    # float32 (the same tensors either way); "auto": when the splits would take over 512 MiB as float32
    stream: Literal["auto", True, False] = "auto"
    cache: bool = True  # folder only: decode once into a uint8 array on disk, reused by later runs (pipeline.data.cache)
    folds: int = 0  # k-fold cross-validation (edgekd cv): the test split is fold `fold` of `folds`
    fold: int = 0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: Literal["cosine", "none"] = "cosine"
    jitter: int = 0  # random shifts of up to ±jitter pixels, edges replicated, applied on the fly each epoch
    crop_padding: int = 0  # random crops of the image padded by this many pixels (filled with the train mean)
    flip: bool = False  # random horizontal flips (half the images); leave off for digits and text
    mixup: float = 0.0  # α of Beta(α, α): blend each batch with a shuffled copy (0.2 is usual); 0 is off
    cutmix: float = 0.0  # α likewise: paste a box of a shuffled copy (1.0 is usual); with mixup, one per batch
    patience: int = 0  # stop after this many epochs without a better val accuracy; 0 never stops early
    seed: int = -1  # initial weights and batch order; -1 takes run.seed (sweeps vary it without a new data split)

    @property
    def augmented(self) -> bool:
        """True when the inputs change every epoch (then the teacher sees each augmented batch: no cache)."""
        return bool(self.jitter or self.crop_padding or self.flip or self.mixup or self.cutmix)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class TeacherConfig(ModelConfig):
    # a teacher trained elsewhere: an edgekd .pt, a state dict (of `arch` with `kwargs`), a TorchScript
    # file or a torch.export program (.pt2); the teacher stage then only evaluates it
    checkpoint: str = ""


@dataclass(frozen=True)
class TransferConfig:
    """Which classes the transfer set (baseline and student) holds; the teacher still knows them all."""

    omit_classes: tuple[int, ...] = ()  # drop these classes' samples (Hinton et al. 2015, section 3)
    only_classes: tuple[int, ...] = ()  # keep only these classes' samples


@dataclass(frozen=True)
class HintConfig:
    """An L2 loss between a student layer (through a learned 1x1 conv or linear regressor, dropped after
    training) and a teacher layer, both named by module path, e.g. "features.3" (FitNets)."""

    student: str = ""
    teacher: str = ""
    weight: float = 0.1


@dataclass(frozen=True)
class DistillConfig:
    loss: str = "kd"  # a name in pipeline.training.losses.LOSSES
    # shared by the losses that declare them (pipeline.training.losses.SHARED)
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft (teacher) loss; 1 - alpha weighs the hard-label loss
    # the chosen loss's other parameters, checked against its Params dataclass (which holds their defaults);
    # left out of hashes and config.toml while empty, so adding it changed no existing run's hashes
    loss_options: dict[str, Any] = field(default_factory=dict, metadata={"omit_empty": True})
    transfer_copies: int = 0  # jittered copies of the train split added to the transfer set
    transfer_jitter: int = 2  # ±pixels of those copies
    transfer: TransferConfig = TransferConfig()
    # with classes missing from the transfer set: raise their output biases by the amount that maximises
    # validation accuracy ("auto"), or leave them ("none")
    bias_correction: Literal["auto", "none"] = "auto"
    hints: tuple[HintConfig, ...] = ()


@dataclass(frozen=True)
class QatConfig:
    """Quantization-aware training of a model whose int8 files need it (export.int8_method)."""

    # chosen on validation drops (benchmarks/int8_methods.py models; README "How int8 files are made")
    epochs: int = 15
    lr: float = 5e-4
    models: tuple[str, ...] = ("student", "teacher", "baseline")  # which models' int8 files may be trained so


@dataclass(frozen=True)
class ExportConfig:
    models: tuple[str, ...] = ("student", "teacher")  # checkpoints to export: teacher, baseline, student
    # names in export.formats.FORMATS, checked against the table itself when validated (_validate_export):
    # a Literal built from it at import would miss a row added later and name each bad item separately
    formats: tuple[str, ...] = ("onnx", "onnx_int8", "tflite", "tflite_fp16", "tflite_int8", "pte", "pte_int8")
    tflite_layout: Literal["nhwc", "nchw"] = "nhwc"
    calibration_samples: int = 256  # drawn from the train split, stratified by class
    onnx_calibration: Literal["minmax", "entropy", "percentile"] = "minmax"  # int8 TFLite (PT2E) always uses a histogram
    onnx_reduce_range: bool = True  # 7-bit ONNX int8 weights, so x86 CPUs without VNNI do not saturate
    max_int8_drop: float = 0.01  # int8 accuracy may fall at most this far below fp32 (a fraction: 0.01 = 1 point)
    # how int8 files are made: "ptq" post-training calibration only; "qat" quantization-aware training with
    # the teacher supervising; "auto" PTQ, then QAT where PTQ's drop on the validation split is not within the limit
    int8_method: Literal["ptq", "qat", "auto"] = "auto"
    # when the int8 file so made is still not within the limit on the validation split: keep its most sensitive
    # layers in float, one at a time, until it is
    int8_fallback: bool = True
    qat: QatConfig = QatConfig()
    opset: int = 18


@dataclass(frozen=True)
class SearchConfig:
    """What `edgekd search` varies in the student (pipeline.search); read by search alone."""

    # the student kwargs a width multiplier scales (ints or lists of ints); () takes the built-in architecture's
    # own (cnn, mlp, dsconv); a user model ('file.py:Class') names its own
    width_keys: tuple[str, ...] = ()
    depth_key: str = ""  # the list kwarg whose length is the depth (with width_keys; "" keeps the depth)
    widths: tuple[float, ...] = (0.25, 0.375, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    depths: tuple[int, ...] = (0, -1, 1)  # stages relative to the config's student
    # input resolution: the student average-pools its input by each factor (2: half the height and width, a
    # quarter of the MACs) and the file still takes the data's size; (1,) keeps the resolution
    input_pools: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class BenchConfig:
    threads: int = 1
    processes: int = 5  # fresh processes per file; the spread of their medians is the run-to-run noise
    warmup: int = 20  # per process
    min_runs: int = 40  # per process: timing continues until both min_runs and min_seconds are reached
    min_seconds: float = 0.2
    eager: tuple[str, ...] = ("teacher", "student")  # PyTorch eager reference rows (on the local target)
    targets: tuple[str, ...] = ("local",)  # where to measure: "local" or names from [targets] / --targets FILE
    max_parallel: int = 4  # targets measured at once (those on this machine's CPU never overlap)
    profile: bool = False  # also an op profile per file (its own process, not timed; .onnx and .pte have a profiler)


@dataclass(frozen=True)
class PipelineConfig:
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig(arch="cnn")
    student: ModelConfig = ModelConfig(arch="mlp")
    distill: DistillConfig = DistillConfig()
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    search: SearchConfig = SearchConfig()
    targets: dict[str, Any] = field(default_factory=dict)  # [targets.NAME] tables (pipeline.config.targets)

    def target_configs(self) -> dict:
        from edgekd.pipeline.config.targets import parse_targets

        return parse_targets(self.targets, "targets")[0]

    def section(self, *names: str) -> dict[str, Any]:
        """The named sections as plain dicts: what a stage's config hash is computed from."""
        return {n: _plain(getattr(self, n)) for n in names}

    def as_dict(self) -> dict[str, Any]:
        """The whole config as plain dicts: what the run's config hash is computed from."""
        return _plain(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(_plain(self))


def _plain(config: Any) -> dict[str, Any]:
    """`dataclasses.asdict`, less the fields marked {"omit_empty": True} while they are empty."""
    out = dataclasses.asdict(config)
    _drop_empty(config, out)
    return out


def _drop_empty(config: Any, out: dict[str, Any]) -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("omit_empty") and not value:
            del out[f.name]
        elif dataclasses.is_dataclass(value):
            _drop_empty(value, out[f.name])


def validate(cfg: PipelineConfig) -> list[str]:
    """Every impossible value in an otherwise well-typed config."""
    from edgekd.models import check_arch  # imports torch: only when a config is validated
    from edgekd.pipeline.data.datasets import DATASETS  # data imports this module's types

    p: list[str] = []
    if cfg.data.dataset not in DATASETS:
        p.append(f"data.dataset = {cfg.data.dataset!r}: unknown; valid: {', '.join(DATASETS)}")
    elif DATASETS[cfg.data.dataset].needs_path and not cfg.data.path:
        p.append(f"data.path: dataset {cfg.data.dataset!r} needs a path to the user's data")
    for key in ("test_path", "val_path"):
        if getattr(cfg.data, key) and cfg.data.dataset in DATASETS and not DATASETS[cfg.data.dataset].needs_path:
            p.append(f"data.{key}: dataset {cfg.data.dataset!r} is bundled and comes without files to split; "
                     f"{key} is for datasets read from files (idx, npz, folder)")
    if not 0 < cfg.data.test_fraction < 1:
        p.append(f"data.test_fraction = {cfg.data.test_fraction}: must be in (0, 1)")
    if not 0 <= cfg.data.val_fraction < 1:
        p.append(f"data.val_fraction = {cfg.data.val_fraction}: must be in [0, 1)")
    if cfg.data.image_size and (len(cfg.data.image_size) != 2 or min(cfg.data.image_size) < 1):
        p.append(f"data.image_size = {list(cfg.data.image_size)}: expected [height, width] of positive integers")
    if cfg.distill.temperature <= 0:
        p.append(f"distill.temperature = {cfg.distill.temperature}: must be > 0 (Hinton et al. use 1-20)")
    from edgekd.pipeline.training.losses import LOSSES, described, loss_params

    if cfg.distill.loss not in LOSSES:
        p.append(f"distill.loss = {cfg.distill.loss!r}: unknown; valid: {described()}")
    else:
        p += loss_params(cfg.distill)[1]
    tr = cfg.distill.transfer
    if tr.omit_classes and tr.only_classes:
        p.append("distill.transfer: give omit_classes or only_classes, not both")
    for h in cfg.distill.hints:
        if not h.student or not h.teacher or h.weight < 0:
            p.append(f"distill.hints: {h}: needs student and teacher module paths and a weight >= 0")
    if cfg.data.folds and not (cfg.data.folds >= 2 and 0 <= cfg.data.fold < cfg.data.folds):
        p.append(f"data.folds = {cfg.data.folds}, data.fold = {cfg.data.fold}: need folds >= 2 and 0 <= fold < folds")
    if not 0 <= cfg.distill.alpha <= 1:
        p.append(f"distill.alpha = {cfg.distill.alpha}: must be in [0, 1]")
    for key in ("transfer_copies", "transfer_jitter"):
        if getattr(cfg.distill, key) < 0:
            p.append(f"distill.{key} = {getattr(cfg.distill, key)}: must be >= 0")
    p += _validate_export(cfg.export)
    b = cfg.bench
    for key, low in (("threads", 1), ("processes", 1), ("warmup", 0), ("min_runs", 1)):
        if getattr(b, key) < low:
            p.append(f"bench.{key} = {getattr(b, key)}: must be >= {low}")
    if b.min_seconds < 0:
        p.append(f"bench.min_seconds = {b.min_seconds}: must be >= 0")
    from edgekd.pipeline.config.targets import parse_targets

    targets, target_problems = parse_targets(cfg.targets, "targets")
    p += target_problems
    unknown = [t for t in b.targets if t not in targets]
    if unknown:
        p.append(f"bench.targets: unknown {', '.join(map(repr, unknown))}; defined: {', '.join(targets)} "
                 "(add a [targets.NAME] table or pass --targets FILE)")
    if b.max_parallel < 1:
        p.append(f"bench.max_parallel = {b.max_parallel}: must be >= 1")
    bad = [m for m in b.eager if m not in ("teacher", "baseline", "student")]
    if bad:
        p.append(f"bench.eager: unknown {', '.join(map(repr, bad))}; valid: teacher, baseline, student")
    if cfg.run.amp and cfg.run.device == "cpu":
        p.append("run.amp = true needs CUDA; set run.device = 'cuda' (or 'auto' on a machine with a GPU), or amp = false")
    if not cfg.search.widths or min(cfg.search.widths) <= 0:
        p.append(f"search.widths = {list(cfg.search.widths)}: give one or more multipliers > 0")
    if not cfg.search.input_pools or min(cfg.search.input_pools) < 1:
        p.append(f"search.input_pools = {list(cfg.search.input_pools)}: give one or more integer factors >= 1")
    if cfg.search.depth_key and not cfg.search.width_keys:
        p.append("search.depth_key needs search.width_keys: name the keywords the width multiplier scales too")
    if cfg.run.seed < 0:
        p.append(f"run.seed = {cfg.run.seed}: must be >= 0")
    if cfg.run.threads < 0:
        p.append(f"run.threads = {cfg.run.threads}: must be >= 0 (0 keeps torch's default)")
    for role in ("teacher", "student"):
        model: ModelConfig = getattr(cfg, role)
        p += [f"{role}.arch = {model.arch!r}: {msg}" for msg in check_arch(model.arch, model.kwargs)]
        t = model.train
        for key, low in (("epochs", 1), ("batch_size", 1), ("jitter", 0), ("crop_padding", 0), ("patience", 0),
                          ("seed", -1), ("mixup", 0), ("cutmix", 0)):
            if getattr(t, key) < low:
                p.append(f"{role}.train.{key} = {getattr(t, key)}: must be >= {low}")
        if t.lr <= 0:
            p.append(f"{role}.train.lr = {t.lr}: must be > 0")
        if t.weight_decay < 0:
            p.append(f"{role}.train.weight_decay = {t.weight_decay}: must be >= 0")
    return p


def _validate_export(e: ExportConfig) -> list[str]:
    from edgekd.export.formats import FORMATS

    p = []
    roles = ("teacher", "baseline", "student")
    for key, given, valid in (("models", e.models, roles), ("formats", e.formats, tuple(FORMATS)),
                              ("qat.models", e.qat.models, roles)):
        unknown = [v for v in given if v not in valid]
        if unknown:
            p.append(f"export.{key}: unknown {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    if e.calibration_samples < 1:
        p.append(f"export.calibration_samples = {e.calibration_samples}: must be >= 1")
    if not 0 <= e.max_int8_drop <= 1:
        p.append(f"export.max_int8_drop = {e.max_int8_drop}: must be a fraction in [0, 1] (0.01 = 1 point)")
    if e.qat.epochs < 1 or e.qat.lr <= 0:
        p.append(f"export.qat: epochs = {e.qat.epochs} and lr = {e.qat.lr}: need epochs >= 1 and lr > 0")
    if e.opset < 17:
        p.append(f"export.opset = {e.opset}: must be >= 17")
    return p


def load_config(path: Path | None, overrides: list[str] = ()) -> PipelineConfig:
    """Read `path` (TOML), apply `key=value` overrides, type-check and validate.

    Raises:
        ConfigError: listing every unknown key, wrong type and impossible value at once.
    """
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        raw, _ = read_toml(Path(path), "config file (pass an existing config such as configs/digits.toml)")
    problems: list[str] = []
    for item in overrides:
        keys, value = parse_override(item)
        apply_override(raw, keys, value, problems)
    cfg = build(PipelineConfig, raw, "", problems)
    problems += validate(cfg)
    if problems:
        raise ConfigError(problems, source + (" with --set overrides" if overrides else ""))
    if not cfg.run.name and path is not None:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=Path(path).stem))
    return _absolute_paths(cfg)


def _absolute_paths(cfg: PipelineConfig) -> PipelineConfig:
    """Files the config names, resolved against the working directory, so the resolved config.toml
    (and every worker process) finds them from anywhere."""
    def absolute(text: str) -> str:
        return str(Path(text).expanduser().resolve()) if text else text

    def arch(text: str) -> str:  # "path/to/file.py:ClassName"
        module, sep, name = text.partition(":")
        return f"{absolute(module)}{sep}{name}" if sep and module.endswith(".py") else text
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, path=absolute(cfg.data.path), test_path=absolute(cfg.data.test_path),
                                      val_path=absolute(cfg.data.val_path)),
        teacher=dataclasses.replace(cfg.teacher, checkpoint=absolute(cfg.teacher.checkpoint), arch=arch(cfg.teacher.arch)),
        student=dataclasses.replace(cfg.student, arch=arch(cfg.student.arch)))
