"""Steps every exporter shares: reference logits, BatchNorm folding, naming the op a converter refused.

torch is imported inside the functions: the format modules import this one, and the format table
(export.formats) must stay cheap to import.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import numpy as np

from edgekd.errors import ExportError

if TYPE_CHECKING:
    import torch
    from torch import nn


@contextmanager
def quiet_converter() -> Iterator[None]:
    """Silence what converters print on success (progress lines, deprecation warnings of their own
    internals); errors still raise. C++ INFO logs are held back by TF_CPP_MIN_LOG_LEVEL."""
    import contextlib
    import io
    import warnings

    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.disable(logging.WARNING)  # converters log optional-kernel and deprecation notices by the dozen
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logging.disable(logging.NOTSET)


def reference_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    t = torch.from_numpy(x)
    with torch.no_grad():
        return torch.cat([model(t[i:i + 512]) for i in range(0, len(t), 512)]).numpy()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` with every BatchNorm that directly follows a Conv2d folded into it.

    Models torch.fx cannot trace are returned unchanged (converters fold BatchNorm themselves,
    and the audit's op list shows what remains).
    """
    import copy

    import torch.fx
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        traced = torch.fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception:  # fx raises many types for untraceable Python control flow
        return model
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and type(modules[prev.target]) is nn.Conv2d):
            fused = fuse_conv_bn_eval(modules[prev.target], modules[node.target])
            parent, _, name = prev.target.rpartition(".")
            setattr(traced.get_submodule(parent) if parent else traced, name, fused)
            node.replace_all_uses_with(prev)
            traced.graph.erase_node(node)
    traced.graph.lint()
    traced.recompile()
    return traced.eval()


def weighted_layers(model: nn.Module) -> list[str]:
    """Module paths of the layers int8 quantizes (convolutions and linear layers), in model order:
    what `ExportOptions.float_layers` names."""
    from torch import nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
    return [name for name, m in model.named_modules() if isinstance(m, kinds) and name]


def _chain_text(exc: BaseException) -> str:
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(parts))  # converters colour their messages


def explain_failure(model: nn.Module, sample: torch.Tensor, exc: Exception, fmt: str) -> ExportError:
    """An ExportError naming the layer (module path) and op the converter could not handle.

    The model's own graph (torch.export) lists every op with the module it came from; the ops
    that the converter's error chain mentions are the culprits.
    """
    import torch

    text = _chain_text(exc)
    located = []
    try:
        program = torch.export.export(model, (sample,))
        for node in program.graph.nodes:
            if node.op != "call_function":
                continue
            name = str(node.target)  # e.g. "aten.conv2d.default", "mylib.op.default"
            base = name.removesuffix(".default")
            if any(form in text for form in (name, base.replace(".", "::", 1))) and not base.startswith("aten."):
                stack = node.meta.get("nn_module_stack") or {}
                path, cls = list(stack.values())[-1] if stack else ("<top level>", type(model))
                located.append(f"layer '{path}' ({getattr(cls, '__name__', cls)}) op {name}")
    except Exception:  # the model may not even export; the converter's message is then all we have
        pass
    where = "; ".join(dict.fromkeys(located)) or "a layer the converter did not name"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if any(k in ln.lower() for k in ("not found", "unsupported", "no decomposition",
                                                                          "not supported"))), lines[0] if lines else "")
    return ExportError(f"cannot convert to {fmt}: {where}. Converter said: {detail[:300]}. Replace that layer with "
                       "standard torch.nn ops, or drop this format from export.formats")
