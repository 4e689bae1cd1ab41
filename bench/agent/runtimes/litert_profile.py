"""LiteRT's op profiler, reached through the C API of the libLiteRt.so that ai-edge-litert ships (ctypes):
its Python API has no profiler hook.

LiteRT turns profiling on from a runtime option, `enable_profiling = true`, which its C++ helper
(LrtSetRuntimeOptionsEnableProfiling, not exported) serialises as that TOML text in an opaque option
named "runtime_options_string"; CPU options travel the same way ("num_threads = N"). The compiled model
then owns a profiler that starts stopped. With a profiler attached, the XNNPACK delegate records each
of its operators (whole microseconds, back to back within a run); ops outside the delegate are TFLite's
own events. Layouts and names: LiteRT 2.3.0, litert/c/litert_profiler_event.h,
litert/c/options/litert_runtime_options.cc, litert/runtime/compiled_model.cc.
"""
from __future__ import annotations

import ctypes as C
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


class _Layout(C.Structure):  # litert/c/litert_layout.h
    _fields_ = [("rank", C.c_uint, 7), ("has_strides", C.c_uint, 1), ("dimensions", C.c_int32 * 8),
                ("strides", C.c_uint32 * 8)]


class _TensorType(C.Structure):  # LiteRtRankedTensorType
    _fields_ = [("element_type", C.c_int), ("layout", _Layout)]


class _Memory(C.Structure):
    _fields_ = [("total", C.c_size_t), ("in_use", C.c_size_t), ("private", C.c_size_t)]


class _Event(C.Structure):  # ProfiledEventData
    _fields_ = [("tag", C.c_char_p), ("event_type", C.c_int), ("start_us", C.c_uint64), ("elapsed_us", C.c_uint64),
                ("begin_memory", _Memory), ("end_memory", _Memory), ("metadata1", C.c_uint64),
                ("metadata2", C.c_uint64), ("source", C.c_int)]


assert C.sizeof(_Layout) == 68 and C.sizeof(_TensorType) == 72 and C.sizeof(_Event) == 104  # as in LiteRT 2.3.0

OPERATOR, DELEGATE_OPERATOR, DELEGATE_PROFILED_OPERATOR = 2, 4, 8  # LiteRtProfilerEventType
RUN_STARTS = "LiteRT::Run[buffer registration]"  # the first event of every run
CPU_ACCELERATOR, LOCK_WRITE = 1, 1
_P, _S = C.c_void_p, C.c_int
SIGNATURES = {
    "LiteRtCreateEnvironment": [C.c_int, _P, C.POINTER(_P)], "LiteRtDestroyEnvironment": [_P],
    "LiteRtCreateModelFromFile": [_P, C.c_char_p, C.POINTER(_P)], "LiteRtDestroyModel": [_P],
    "LiteRtGetModelSignature": [_P, C.c_size_t, C.POINTER(_P)],
    "LiteRtGetNumSignatureInputs": [_P, C.POINTER(C.c_size_t)],
    "LiteRtGetNumSignatureOutputs": [_P, C.POINTER(C.c_size_t)],
    "LiteRtGetSignatureInputTensorByIndex": [_P, C.c_size_t, C.POINTER(_P)],
    "LiteRtGetSignatureOutputTensorByIndex": [_P, C.c_size_t, C.POINTER(_P)],
    "LiteRtGetRankedTensorType": [_P, C.POINTER(_TensorType)],
    "LiteRtCreateOptions": [C.POINTER(_P)], "LiteRtDestroyOptions": [_P],
    "LiteRtSetOptionsHardwareAccelerators": [_P, C.c_int],
    "LiteRtCreateOpaqueOptions": [C.c_char_p, _P, _P, C.POINTER(_P)], "LiteRtAddOpaqueOptions": [_P, _P],
    "LiteRtCreateCompiledModel": [_P, _P, _P, C.POINTER(_P)], "LiteRtDestroyCompiledModel": [_P],
    "LiteRtGetCompiledModelInputBufferRequirements": [_P, C.c_size_t, C.c_size_t, C.POINTER(_P)],
    "LiteRtGetCompiledModelOutputBufferRequirements": [_P, C.c_size_t, C.c_size_t, C.POINTER(_P)],
    "LiteRtGetTensorBufferRequirementsBufferSize": [_P, C.POINTER(C.c_size_t)],
    "LiteRtCreateManagedTensorBufferFromRequirements": [_P, C.POINTER(_TensorType), _P, C.POINTER(_P)],
    "LiteRtLockTensorBuffer": [_P, C.POINTER(_P), C.c_int], "LiteRtUnlockTensorBuffer": [_P],
    "LiteRtDestroyTensorBuffer": [_P],
    "LiteRtRunCompiledModel": [_P, C.c_size_t, C.c_size_t, C.POINTER(_P), C.c_size_t, C.POINTER(_P)],
    "LiteRtCompiledModelGetProfiler": [_P, C.POINTER(_P)], "LiteRtStartProfiler": [_P], "LiteRtStopProfiler": [_P],
    "LiteRtGetNumProfilerEvents": [_P, C.POINTER(C.c_int)],
    "LiteRtGetProfilerEvents": [_P, C.c_int, C.POINTER(_Event)],
    "LiteRtGetProfileSummary": [_P, _P, C.POINTER(_P)],
}
VOID = {"LiteRtDestroyEnvironment", "LiteRtDestroyModel", "LiteRtDestroyOptions", "LiteRtDestroyCompiledModel",
        "LiteRtDestroyTensorBuffer"}


def _library(path: Path) -> C.CDLL:
    lib = C.CDLL(str(path))
    for name, args in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, (None if name in VOID else _S)
    return lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"LiteRT: {what} failed (status {status})")


def _opaque_options(lib: C.CDLL, libc: C.CDLL, identifier: str, toml: str) -> _P:
    """An opaque option holding a malloc'd TOML string, which LiteRT frees with the options."""
    handle = _P()
    _check(lib.LiteRtCreateOpaqueOptions(identifier.encode(), libc.strdup(toml.encode()),
                                         C.cast(libc.free, _P).value, C.byref(handle)), f"options {identifier}")
    return handle


def profile(library: Path, model: Path, prepared: np.ndarray, warmup: int, runs: int, threads: int,
            summary: bool = False) -> dict:
    """Each op's mean time per run over `runs` runs after `warmup`, of `model` compiled for the CPU
    (XNNPACK) with the profiler on, fed `prepared` (the input as the model takes it). `summary`: also
    LiteRT's own text of the same events (the tables `benchmark_model --enable_op_profiling` prints)."""
    lib, libc = _library(library), C.CDLL(None)
    libc.strdup.restype, libc.strdup.argtypes, libc.free.argtypes = _P, [C.c_char_p], [_P]
    env, handle, options, compiled, profiler = _P(), _P(), _P(), _P(), _P()
    buffers: list[_P] = []
    try:
        _check(lib.LiteRtCreateEnvironment(0, None, C.byref(env)), "environment")
        _check(lib.LiteRtCreateModelFromFile(env, str(model).encode(), C.byref(handle)), "loading the model")
        _check(lib.LiteRtCreateOptions(C.byref(options)), "options")
        _check(lib.LiteRtSetOptionsHardwareAccelerators(options, CPU_ACCELERATOR), "the CPU accelerator")
        cpu = f'kernel_mode = "xnnpack"\nnum_threads = {int(threads)}\n'
        for identifier, toml in (("runtime_options_string", "enable_profiling = true\n"), ("xnnpack", cpu),
                                 ("cpu_delegate", cpu)):  # the accelerator and the compiled model read either name
            _check(lib.LiteRtAddOpaqueOptions(options, _opaque_options(lib, libc, identifier, toml)), identifier)
        _check(lib.LiteRtCreateCompiledModel(env, handle, options, C.byref(compiled)), "compiling the model")
        _check(lib.LiteRtCompiledModelGetProfiler(compiled, C.byref(profiler)), "the profiler")
        if not profiler.value:
            raise RuntimeError("LiteRT: the compiled model has no profiler (the option was not read)")
        signature = _P()
        _check(lib.LiteRtGetModelSignature(handle, 0, C.byref(signature)), "signature 0")
        counts = [C.c_size_t(), C.c_size_t()]
        _check(lib.LiteRtGetNumSignatureInputs(signature, C.byref(counts[0])), "inputs")
        _check(lib.LiteRtGetNumSignatureOutputs(signature, C.byref(counts[1])), "outputs")
        if counts[0].value != 1:
            raise RuntimeError(f"LiteRT: the model takes {counts[0].value} inputs; the agent feeds one")
        arrays = []
        for side, count in zip(("Input", "Output"), counts):
            array = (_P * count.value)()
            for i in range(count.value):
                tensor, kind, requirements, size, buffer = _P(), _TensorType(), _P(), C.c_size_t(), _P()
                _check(getattr(lib, f"LiteRtGetSignature{side}TensorByIndex")(signature, i, C.byref(tensor)), side)
                _check(lib.LiteRtGetRankedTensorType(tensor, C.byref(kind)), side)
                _check(getattr(lib, f"LiteRtGetCompiledModel{side}BufferRequirements")(compiled, 0, i,
                                                                                     C.byref(requirements)), side)
                _check(lib.LiteRtGetTensorBufferRequirementsBufferSize(requirements, C.byref(size)), side)
                _check(lib.LiteRtCreateManagedTensorBufferFromRequirements(env, C.byref(kind), requirements,
                                                                           C.byref(buffer)), side)
                buffers.append(buffer)
                array[i] = buffer
                if side == "Input":
                    data = np.ascontiguousarray(prepared).tobytes()
                    if len(data) > size.value:
                        raise RuntimeError(f"LiteRT: input of {len(data)} bytes for a {size.value}-byte buffer")
                    host = _P()
                    _check(lib.LiteRtLockTensorBuffer(buffer, C.byref(host), LOCK_WRITE), "locking the input")
                    C.memmove(host, data, len(data))
                    lib.LiteRtUnlockTensorBuffer(buffer)
            arrays.append(array)

        def run() -> float:
            start = time.perf_counter_ns()
            _check(lib.LiteRtRunCompiledModel(compiled, 0, counts[0].value, arrays[0], counts[1].value, arrays[1]),
                   "running the model")
            return (time.perf_counter_ns() - start) / 1e3

        for _ in range(warmup):
            run()
        _check(lib.LiteRtStartProfiler(profiler), "starting the profiler")  # which also empties it
        walls = [run() for _ in range(runs)]
        _check(lib.LiteRtStopProfiler(profiler), "stopping the profiler")
        count = C.c_int()
        _check(lib.LiteRtGetNumProfilerEvents(profiler, C.byref(count)), "counting events")
        events = (_Event * max(count.value, 1))()
        _check(lib.LiteRtGetProfilerEvents(profiler, count.value, events), "reading events")
        found = _ops(events[:count.value], runs, float(np.median(walls)))
        text = _P()
        if summary and lib.LiteRtGetProfileSummary(profiler, compiled, C.byref(text)) == 0 and text.value:
            found["summary"] = C.string_at(text.value).decode(errors="replace")
            libc.free(text)
        return found
    finally:
        for buffer in buffers:
            lib.LiteRtDestroyTensorBuffer(buffer)
        for destroy, handle_ in (("LiteRtDestroyCompiledModel", compiled), ("LiteRtDestroyOptions", options),
                                 ("LiteRtDestroyModel", handle), ("LiteRtDestroyEnvironment", env)):
            if handle_.value:
                getattr(lib, destroy)(handle_)


def _ops(events: list, runs: int, profiled_run_us: float) -> dict:
    """Per-op means from the events of `runs` runs. XNNPACK numbers its operators from 0 in each
    partition of the model, so a repeated (index, name) within one run is the next partition's."""
    ops: dict[tuple[str, str], float] = defaultdict(float)
    seen: dict[tuple, int] = {}
    started = 0
    for event in events:
        tag = event.tag.decode(errors="replace") if event.tag else "?"
        if tag == RUN_STARTS:
            started, seen = started + 1, {}
        if event.event_type == DELEGATE_PROFILED_OPERATOR:
            key = (event.metadata1, tag)
            seen[key] = seen.get(key, -1) + 1
            ops[(f"{tag} #{event.metadata1}" + (f".{seen[key]}" if seen[key] else ""), tag)] += event.elapsed_us
        elif event.event_type in (OPERATOR, DELEGATE_OPERATOR) and "Delegate" not in tag:
            ops[(f"{tag} #{event.metadata1} (not delegated)", tag)] += event.elapsed_us
    if started != runs:
        raise RuntimeError(f"LiteRT: the profiler recorded {started} runs of {runs}")
    return {"runs": runs, "profiled_run_us": profiled_run_us,
            "ops": [{"name": name, "op": op, "us": us / runs} for (name, op), us in ops.items()]}
