"""ONNX files on onnxruntime's CPU provider, in batches of 256 for accuracy."""
from __future__ import annotations

import base64
import json
import tempfile
from collections import defaultdict
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
        self.path, self.threads = path, threads
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


    def profile(self, prepared: np.ndarray, warmup: int, runs: int) -> dict:
        """Each kernel's mean time per run over `runs` runs after `warmup`, from onnxruntime's session
        profiling, in a second session of the same file (profiling is fixed when a session is created)."""
        ort = self.load_runtime()[0]
        with tempfile.TemporaryDirectory(prefix="edgekd-ort-") as tmp:
            opts = self.options(ort, self.threads)
            opts.enable_profiling, opts.profile_file_prefix = True, f"{tmp}/ort"
            session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            for _ in range(warmup + runs):
                session.run(None, {self.name: prepared})
            events = json.loads(Path(session.end_profiling()).read_text())
        timed = [e for e in events if e.get("name") == "model_run"][-runs:]
        since = timed[0]["ts"]  # the warm-up runs' events come before the first timed run
        ops: dict[tuple[str, str], float] = defaultdict(float)
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= since:
                ops[(e["name"].removesuffix("_kernel_time"), e["args"]["op_name"])] += e["dur"]
        return {"profiler": f"onnxruntime {ort.__version__} session profiling", "runs": len(timed),
                "profiled_run_us": float(np.median([e["dur"] for e in timed])),
                "ops": [{"name": name, "op": op, "us": us / len(timed)} for (name, op), us in ops.items()]}
