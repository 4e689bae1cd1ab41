"""Checks that run before any stage: every model the run will use is built (or loaded) on the real input
shape, so wrong options, a wrong output size or a teacher file that does not fit exit 2 naming the key,
not after the teacher has trained for ten minutes."""
from __future__ import annotations

from pathlib import Path

import torch

from edgekd.errors import ConfigError, DataError, ModelError
from edgekd.models import ModelSpec, build_model
from edgekd.models.registry import options_hint
from edgekd.pipeline.config import PipelineConfig
from edgekd.pipeline.data import Dataset
from edgekd.pipeline.training.checkpoint import read_teacher

NOT_CONVERTIBLE = {  # teacher file format -> why the converters cannot take it, and the fix
    "torchscript": ("TorchScript, which neither torch.onnx (dynamo) nor litert-torch can convert",
                    "set export.models = ['student'], or bring a state dict or a torch.export (.pt2) file"),
}


def _samples(data: Dataset) -> torch.Tensor:
    """A few real inputs (not zeros): what a model must give finite outputs for before it is trained."""
    return torch.from_numpy(data.x_val[:8] if len(data.x_val) >= 2 else data.x_train[:8])


def _non_finite(key: str, out: torch.Tensor) -> list[str]:
    bad = ~torch.isfinite(out.detach()).reshape(len(out), -1).all(1)
    if not bad.any():
        return []
    return [f"{key}: the model's outputs are NaN or infinite on {int(bad.sum())} of {len(out)} real input samples, "
            "before any training; training it would learn nothing. Fix its forward() (a division by zero, the log "
            "or sqrt of a negative number, an uninitialised tensor) or its weights so that it returns finite logits"]


def _check_model(role: str, cfg: PipelineConfig, data: Dataset) -> list[str]:
    model = getattr(cfg, role)
    try:
        net = build_model(ModelSpec(model.arch, data.in_shape, data.num_classes, dict(model.kwargs)))
    except ModelError as exc:
        hint = options_hint(model.arch)
        return [f"{role}.arch / {role}.kwargs: {exc}" + (f"; {hint}" if hint else "")]
    try:
        with torch.no_grad():
            out = net(_samples(data))
    except Exception as exc:  # the user's own model code raised
        return [f"{role}.arch = {model.arch!r}: fails on real inputs of shape {[len(_samples(data)), *data.in_shape]} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"]
    return _non_finite(f"{role}.arch = {model.arch!r}", out)


def _check_teacher_file(cfg: PipelineConfig, data: Dataset, exports: bool) -> list[str]:
    t, path = cfg.teacher, Path(cfg.teacher.checkpoint)
    try:
        model, kind, _ = read_teacher(path, ModelSpec(t.arch, data.in_shape, data.num_classes, dict(t.kwargs)))
        with torch.no_grad():
            out = model(_samples(data)[:2])
    except (DataError, ModelError) as exc:
        return [f"teacher.checkpoint: {exc}"]
    except Exception as exc:  # the user's own model code raised
        return [f"teacher.checkpoint = {str(path)!r}: fails on inputs of shape {[2, *data.in_shape]} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"]
    problems = []
    if tuple(out.shape) != (2, data.num_classes):
        problems.append(f"teacher.checkpoint = {str(path)!r} outputs shape {list(out.shape[1:])} per sample; the "
                        f"dataset has {data.num_classes} classes")
    else:
        problems += _non_finite(f"teacher.checkpoint = {str(path)!r}", out)
    exports_teacher = exports and "teacher" in cfg.export.models
    if kind in NOT_CONVERTIBLE and exports_teacher:
        why, fix = NOT_CONVERTIBLE[kind]
        problems.append(f"teacher.checkpoint = {str(path)!r} is {why}, but export.models includes 'teacher'; {fix}")
    if kind == "torch.export" and getattr(model, "batch_of_one", False) and exports_teacher \
            and any(f.startswith("onnx") for f in cfg.export.formats):
        problems.append(f"teacher.checkpoint = {str(path)!r} was exported for batch size 1 only, and ONNX files "
                        "have a dynamic batch axis; export it with dynamic_shapes for the batch dimension, or drop "
                        "'teacher' from export.models")
    return problems


def _check_distillation(cfg: PipelineConfig, data: Dataset) -> list[str]:
    """Hint pairs that name real modules with pairable shapes; transfer classes that exist."""
    from edgekd.pipeline.training.bias import output_layer
    from edgekd.pipeline.training.hints import build_hints

    problems = []
    t = cfg.distill.transfer
    bad = [c for c in (*t.omit_classes, *t.only_classes) if not 0 <= c < data.num_classes]
    if bad:
        problems.append(f"distill.transfer: class ids {bad} out of range; the data has classes 0..{data.num_classes - 1}")
    elif len(set(t.omit_classes)) >= data.num_classes or (t.only_classes and not set(t.only_classes)):
        problems.append("distill.transfer: leaves no class to train on")
    try:
        student = build_model(ModelSpec(cfg.student.arch, data.in_shape, data.num_classes, dict(cfg.student.kwargs)))
        if (t.omit_classes or t.only_classes) and cfg.distill.bias_correction == "auto":
            output_layer(student, data.num_classes)
        if cfg.distill.hints:
            teacher = (read_teacher(Path(cfg.teacher.checkpoint), ModelSpec(cfg.teacher.arch, data.in_shape,
                                                                            data.num_classes, dict(cfg.teacher.kwargs)))[0]
                       if cfg.teacher.checkpoint else
                       build_model(ModelSpec(cfg.teacher.arch, data.in_shape, data.num_classes, dict(cfg.teacher.kwargs))))
            build_hints(cfg.distill.hints, student, teacher, torch.from_numpy(data.x_train[:2]))
    except (ModelError, DataError) as exc:
        problems.append(str(exc))
    return problems


def preflight(cfg: PipelineConfig, data: Dataset, stages: list[str]) -> None:
    """Raise ConfigError (exit 2) listing every model problem at once; nothing has been written yet."""
    problems = (_check_teacher_file(cfg, data, "export" in stages) if cfg.teacher.checkpoint
                else _check_model("teacher", cfg, data))
    problems += _check_model("student", cfg, data)
    if not problems:
        problems += _check_distillation(cfg, data)
    if problems:
        raise ConfigError(problems, "models")
