"""Checkpoints: state dict + architecture spec, loadable with torch.load(weights_only=True).

The file holds only what defines the model (no seconds, no dates), so two identical trainings write
byte-identical checkpoints and everything downstream can be skipped on a re-run.
"""
from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import DataError, ModelError
from edgekd.fileio import sha256_file, write_bytes
from edgekd.models import ModelSpec, build_model

log = logging.getLogger(__name__)

FORMAT = "edgekd.checkpoint/1"


def _source_hashes(arch: str) -> dict[str, str]:
    """sha256 of the user's source files behind `arch` (none for built-in architectures)."""
    from edgekd.models.registry import source_files

    out = {}
    for file in source_files(arch):
        try:
            out[file] = sha256_file(Path(file))
        except OSError:
            out[file] = "missing"
    return out


def save_checkpoint(path: Path, model: nn.Module, spec: ModelSpec) -> None:
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "spec": spec.to_dict(), "state_dict": state}
    sources = _source_hashes(spec.arch)
    if sources:  # a user model: the code its weights were trained with, checked when it is rebuilt
        blob["sources"] = sources
    torch.save(blob, buf)
    write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model stored at `path` in eval mode.

    Raises:
        DataError: the file is missing, truncated or not an edgekd checkpoint.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec.from_dict(blob["spec"])
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found; run `edgekd run` to create it") from None
    except (RuntimeError, KeyError, TypeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(f"{path}: not a readable edgekd checkpoint ({type(exc).__name__}); re-create it with "
                        "`edgekd run CONFIG --force STAGE` for the stage that writes it") from None
    if "program" in blob:  # a teacher brought as TorchScript or torch.export
        return _load_program(blob["program_format"], blob["program"]), spec
    try:
        model = build_model(spec)
        model.load_state_dict(blob["state_dict"])
    except (ModelError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot rebuild its {spec.arch!r} model ({exc})") from exc
    if isinstance(blob.get("sources"), dict):
        now = _source_hashes(spec.arch)
        changed = sorted(f for f in set(blob["sources"]) | set(now) if blob["sources"].get(f) != now.get(f))
        if changed:
            log.warning("%s: the source of its model %r has changed since it was saved (%s); it is rebuilt with the "
                        "code as it is now. `edgekd run` re-trains the stages that use it", path, spec.arch,
                        ", ".join(changed))
    return model.eval(), spec


# -- teachers trained elsewhere (teacher.checkpoint)

class ExportedTeacher(nn.Module):
    """A torch.export program as a module. It has no training mode (its module refuses .train() and
    .eval()), and one exported for a single sample runs a batch row by row."""

    def __init__(self, program: nn.Module, batch_of_one: bool):
        super().__init__()
        self.program, self.batch_of_one = program, batch_of_one

    def train(self, mode: bool = True) -> "ExportedTeacher":
        self.training = mode
        return self

    def forward(self, x):
        if not self.batch_of_one or x.shape[0] == 1:
            return self.program(x)
        return torch.cat([self.program(x[i:i + 1]) for i in range(x.shape[0])])


def model_file_format(path: Path) -> str:
    """"edgekd", "state_dict", "torchscript" or "torch.export", from the file's contents."""
    import zipfile

    try:
        names = zipfile.ZipFile(path).namelist() if zipfile.is_zipfile(path) else []
    except (OSError, zipfile.BadZipFile):
        names = []
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith(("models/model.json", "serialized_exported_program.json")) for n in names):
        return "torch.export"
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"teacher.checkpoint = {str(path)!r}: file not found") from None
    except Exception as exc:  # torch.load raises many types for files that are not what they claim
        raise DataError(f"teacher.checkpoint = {str(path)!r}: not an edgekd checkpoint, state dict, TorchScript "
                        f"or torch.export (.pt2) file ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        return "edgekd"
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return "state_dict"
    raise DataError(f"teacher.checkpoint = {str(path)!r}: a torch file, but neither an edgekd checkpoint nor a state "
                    "dict of tensors; save `model.state_dict()`, or a TorchScript or torch.export (.pt2) file")


def _load_program(kind: str, data: bytes) -> nn.Module:
    if kind == "torchscript":
        return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    program = torch.export.load(io.BytesIO(data))
    module = program.module()
    try:
        module(torch.zeros(2, *program.example_inputs[0][0].shape[1:]))
        return ExportedTeacher(module, batch_of_one=False)
    except Exception:  # exported for a fixed batch of one (the usual torch.export(model, (x,)) call)
        return ExportedTeacher(module, batch_of_one=True)


def read_teacher(path: Path, spec: ModelSpec) -> tuple[nn.Module, str, ModelSpec]:
    """The model in `path` (any of the four formats), its format and spec (an edgekd file's own). `spec` (teacher.arch, kwargs and
    the data's shape) rebuilds a plain state dict. Loads with weights_only=True except TorchScript and
    torch.export files, whose loaders read code and graphs, not pickles (only load files you trust)."""
    kind = model_file_format(path)
    if kind == "edgekd":
        model, own = load_checkpoint(path)
        return model, kind, own
    if kind == "state_dict":
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(spec)
        try:
            model.load_state_dict(blob.get("state_dict", blob))
        except RuntimeError as exc:
            raise ModelError(f"teacher.checkpoint = {str(path)!r} does not fit teacher.arch = {spec.arch!r} with "
                             f"kwargs {spec.kwargs}: {str(exc).splitlines()[0]}; set the arch and kwargs it was "
                             "trained with") from None
        return model.eval(), kind, spec
    try:
        return _load_program(kind, path.read_bytes()), kind, ModelSpec(kind, spec.in_shape, spec.num_classes, {})
    except Exception as exc:  # the loaders raise many types for damaged files
        raise DataError(f"teacher.checkpoint = {str(path)!r}: not a loadable {kind} file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]})") from None


def save_program_checkpoint(path: Path, kind: str, source: Path, spec: ModelSpec) -> None:
    """teacher.pt for a TorchScript or torch.export teacher: the program's bytes inside an edgekd
    checkpoint, so the run directory stays self-contained and loadable with weights_only=True."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "spec": spec.to_dict(), "program_format": kind, "program": source.read_bytes()}, buf)
    write_bytes(path, buf.getvalue())
