"""ONNX files on onnxruntime's CPU provider, in batches of 256 for accuracy."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from edgekd.errors import AgentError

SUFFIXES = (".onnx",)
PACKAGES = ("onnxruntime",)
PIP = ("onnxruntime",)


class Runner:
    # y = x + x on a float32 [1, 4] (opset 13, IR 7, 82 bytes, built with onnx.helper): the no-op run
    # that creates onnxruntime's environment, thread pools and allocator before the model.
    NOOP = "CAcSBmVkZ2VrZDpACg4KAXgKAXgSAXkiA0FkZBIEbm9vcFoTCgF4Eg4KDAgBEggKAggBCgIIBGITCgF5Eg4KDAgBEggKAggBCgIIBEIECgAQDQ=="

    @staticmethod
    def load_runtime():
        try:
            import onnxruntime as ort
        except ImportError:
            raise AgentError(f"no ONNX runtime: pip install {PIP[0]}", 3) from None
        return ort, "onnxruntime", ort.__version__

    @staticmethod
    def options(ort, threads: int):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return opts

    @classmethod
    def noop_run(cls, threads: int) -> None:
        ort, _, _ = cls.load_runtime()
        session = ort.InferenceSession(base64.b64decode(cls.NOOP), cls.options(ort, threads), providers=["CPUExecutionProvider"])
        assert session.run(None, {"x": np.ones((1, 4), np.float32)})[0].tolist() == [[2.0] * 4]

    def __init__(self, path: Path, threads: int):
        ort, self.runtime, self.version = self.load_runtime()
        try:
            self.session = ort.InferenceSession(str(path), self.options(ort, threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own Fail / InvalidProtobuf / NoSuchFile types
            raise AgentError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        meta = self.session.get_inputs()[0]
        self.name = meta.name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in meta.shape)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32, copy=False)

    def run(self, prepared: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.name: prepared})[0]

    def logits(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.run(x[i:i + 256]) for i in range(0, len(x), 256)])

