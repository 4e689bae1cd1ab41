"""Training on several processes with PyTorch's own engine: torchrun starts the processes,
DistributedDataParallel averages the gradients, DistributedSampler shards every epoch.

    torchrun --nproc_per_node 2 -m edgekd.pipeline.cli run CONFIG      (or: edgekd run CONFIG --nproc 2)

Rank 0 leads: it runs the pipeline as a single process would, and it alone reads and writes the run
directory. Before each training stage it broadcasts what the followers need (the stage, its resume
key, the teacher's checkpoint bytes); the followers train their shard and write nothing. Nothing
assumes one host: the followers never read rank 0's files.
"""
from __future__ import annotations

import datetime as dt
import gc
import io
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from edgekd.errors import CheckFailed

log = logging.getLogger(__name__)

TRAINING_STAGES = ("teacher", "baseline", "student")


class Stopped(CheckFailed):
    """torchrun stopped this process (SIGTERM), because another training process failed or the job was cancelled."""


def _stopped(signum, frame) -> None:
    if sys.exc_info()[0] is not None:
        return  # already ending with an error (the lost peer, seen by gloo): let it be recorded, uninterrupted
    raise Stopped("this training process was stopped (SIGTERM: another training process failed, or the job was "
                  "cancelled); finished stages and epochs are kept: run the same command to resume")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Distributed:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device_name: str) -> "Distributed":
        """Join the process group torchrun describes in the environment: NCCL on CUDA, gloo on CPU."""
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local)
        # export and bench run on rank 0 alone meanwhile: the followers' next broadcast may wait that long
        torch_dist.init_process_group("nccl" if use_cuda else "gloo", timeout=dt.timedelta(hours=4))
        device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
        if threading.current_thread() is threading.main_thread():
            # torchrun ends the other processes with SIGTERM when one fails: end as a failure the manifest
            # records ("failed", with why), not as a process that vanished mid-stage ("running")
            signal.signal(signal.SIGTERM, _stopped)
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), local, device)

    def broadcast(self, obj=None):
        """`obj` from rank 0, on every rank."""
        box = [obj if self.leader else None]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        out = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def average_gradients(self, params) -> None:
        """For trainable modules outside DDP (a hint loss's regressors): the mean gradient of all ranks."""
        for p in params:
            if p.grad is not None:
                torch_dist.all_reduce(p.grad)
                p.grad /= self.world

    def close(self) -> None:
        if not torch_dist.is_initialized():
            return
        if sys.exc_info()[0] is None:  # a normal end, where every rank closes: leave together
            # a DDP reducer or a finished gloo work still holding the group, freed only while the interpreter
            # shuts down, can abort the process ("terminate called without an active exception")
            gc.collect()
            try:
                torch_dist.barrier()
            except RuntimeError:
                pass  # another rank is gone already
        torch_dist.destroy_process_group()


def model_bytes(path) -> bytes:
    return path.read_bytes()


def load_model_bytes(data: bytes):
    """A checkpoint broadcast by rank 0, rebuilt here without touching the disk."""
    from edgekd.pipeline.training.checkpoint import load_checkpoint

    return load_checkpoint(io.BytesIO(data))[0]
