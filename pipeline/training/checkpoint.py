"""Checkpoints: state dict + architecture spec, loadable with torch.load(weights_only=True).

The file holds only what defines the model (no seconds, no dates), so two identical trainings write
byte-identical checkpoints and everything downstream can be skipped on a re-run.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import DataError, ModelError
from edgekd.fileio import write_bytes
from edgekd.models import ModelSpec, build_model

FORMAT = "edgekd.checkpoint/1"


def save_checkpoint(path: Path, model: nn.Module, spec: ModelSpec) -> None:
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "spec": spec.to_dict(), "state_dict": state}, buf)
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
    try:
        model = build_model(spec)
        model.load_state_dict(blob["state_dict"])
    except (ModelError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot rebuild its {spec.arch!r} model ({exc})") from exc
    return model.eval(), spec
