"""Quantization-aware training, the converter's side: a model with int8 fake quantization in the loop
(`QatNet`, trained by the pipeline like any model), and the int8 files written from it.

The fake quantization is litert-torch's PT2E quantizer (per-channel symmetric int8 weights, int8
activations), the same quantizer the post-training int8 TFLite file uses, so the QAT model is the
int8 TFLite file's arithmetic. The ONNX int8 file takes the QAT-trained weights and BatchNorm
statistics and is quantized by onnxruntime with its own 7-bit weight grid (x86 without VNNI
saturates on 8-bit weights; `onnx_format.convert_onnx_int8`).

litert-torch 0.10.0's `prepare_qat_pt2e` is broken upstream (google-ai-edge/litert-torch #801, #355):
its conv+BatchNorm annotator hands a bare function to `torch.export`, which fails with "Expected mod
to be an instance of torch.nn.Module, got <class 'function'>". `_patched_pattern_export` wraps the
pattern in torchao's `WrapperModule` while a model is prepared; it is the only workaround of it, and
tests/test_qat.py fails when upstream is fixed (then delete the patch) or moves the function.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

from edgekd.errors import ExportError
from edgekd.export.common import explain_failure, quiet_converter

if TYPE_CHECKING:
    from edgekd.export.spec import ExportOptions

UPSTREAM_ISSUES = "google-ai-edge/litert-torch #801 and #355"
_PATCHED = "_get_aten_graph_module_for_pattern"  # litert_torch.quantize.pt2e_quantizer_utils imports it from torchao


def quantizer():
    """The int8 quantizer of the TFLite formats, with fake quantization for training."""
    with quiet_converter():
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


@contextmanager
def _patched_pattern_export() -> Iterator[None]:
    """While it is active, litert-torch's pattern export gets an nn.Module (upstream #801, #355)."""
    with quiet_converter():
        from litert_torch.quantize import pt2e_quantizer_utils as utils
        from torchao.quantization.pt2e.export_utils import WrapperModule
    original = getattr(utils, _PATCHED, None)
    if original is None:
        raise ExportError(f"litert-torch changed: litert_torch.quantize.pt2e_quantizer_utils.{_PATCHED} is gone, "
                          f"so edgekd's workaround for {UPSTREAM_ISSUES} no longer applies; set export.int8_method = "
                          "'ptq', and update edgekd/export/qat.py to this litert-torch version")

    def wrapped(pattern, *args, **kwargs):
        return original(pattern if isinstance(pattern, nn.Module) else WrapperModule(pattern), *args, **kwargs)

    setattr(utils, _PATCHED, wrapped)
    try:
        yield
    finally:
        setattr(utils, _PATCHED, original)


class QatNet(nn.Module):
    """The prepared PT2E graph behind an NCHW forward, so it trains and evaluates like the eager model.

    `layout` is the int8 TFLite file's input layout: for "nhwc" the graph is the channels-last I/O
    wrapper of the model and the batch is permuted on the way in. `.train()` / `.eval()` switch the
    graph's BatchNorm and dropout the way PT2E requires (an exported graph has no training flag), and
    its range observers.
    """

    def __init__(self, graph: nn.Module, layout: str):
        super().__init__()
        self.graph, self.layout = graph, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x.permute(0, 2, 3, 1) if self.layout == "nhwc" else x)

    def train(self, mode: bool = True) -> "QatNet":
        """Training mode also switches the range observers on; evaluation freezes them, so validating
        (or labelling) never moves the ranges the int8 file will carry."""
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
        from torchao.quantization.pt2e.fake_quantize import disable_observer, enable_observer

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        self.graph.apply(enable_observer if mode else disable_observer)
        self.training = mode
        return self

    def float_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights and BatchNorm statistics under the eager model's names."""
        prefix = "wrapped." if self.layout == "nhwc" else ""  # litert-torch's channels-last wrapper
        return {k.removeprefix(prefix): v.detach().clone() for k, v in self.graph.state_dict().items()
                if not k.startswith("activation_post_process")}


def build(model: nn.Module, sample: torch.Tensor, layout: str) -> QatNet:
    """A copy of `model` (fp32, eval mode, NCHW `sample` of batch 1) with int8 fake quantization in the
    loop, for training at any batch size; its forward takes NCHW like the model."""
    import copy

    from edgekd.export.tflite_format import io_model

    with quiet_converter():
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    net, io_sample = io_model(copy.deepcopy(model).eval(), sample, layout)
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = (({0: batch},),) if layout == "nhwc" else ({0: batch},)  # the wrapper's forward takes *args
    # traced at batch 2: torch.export specialises a dynamic dimension whose example has size 1
    try:
        with quiet_converter(), _patched_pattern_export():
            graph = prepare_qat_pt2e(torch.export.export(net, (io_sample.repeat(2, *[1] * (io_sample.dim() - 1)),),
                                                         dynamic_shapes=shapes).module(), quantizer())
    except ExportError:
        raise
    except Exception as exc:  # export/prepare failures name an unsupported op
        raise explain_failure(model, sample, exc, "quantization-aware int8") from exc
    return QatNet(graph, layout)


def float_model(model: nn.Module, net: QatNet) -> nn.Module:
    """A copy of the eager `model` holding the QAT-trained weights (fake quantization removed)."""
    import copy

    out = copy.deepcopy(model)
    missing, unexpected = out.load_state_dict(net.float_state_dict(), strict=False)
    # torch.export drops BatchNorm's num_batches_tracked (a counter no forward reads); anything else is a bug
    lost = [k for k in missing if not k.endswith("num_batches_tracked")] + list(unexpected)
    assert not lost, f"the QAT graph and the model disagree on {lost}"
    return out.eval()


def convert_tflite(net: QatNet, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """Full-integer int8 TFLite from the trained QAT graph: its learned ranges, int8 input and output."""
    import copy

    from edgekd.export.tflite_format import write_tflite

    if net.layout != options.tflite_layout:
        raise ExportError(f"the QAT model was prepared for layout {net.layout!r}, export.tflite_layout is "
                          f"{options.tflite_layout!r}; re-run so that QAT trains again")
    with quiet_converter():
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
    trained = copy.deepcopy(net).eval()
    with quiet_converter():
        quantized = convert_pt2e(trained.graph, fold_quantize=False)
    io_sample = sample.permute(0, 2, 3, 1).contiguous() if net.layout == "nhwc" else sample
    write_tflite(quantized, io_sample, path, "int8 TFLite (QAT)", (trained, sample),
                 quant_config=QuantConfig(pt2e_quantizer=quantizer()))
