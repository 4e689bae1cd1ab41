"""One writer per run directory: an flock on `.edgekd.lock`, with the holder's pid and command in it.

A second writer is refused at once (exit 3) with the holder named. The kernel releases the lock of a
process that dies, so a lock file left by a dead process is taken over with a warning. Readers that
must not see a directory rewritten under them (a sweep's students, reading the shared teacher) hold
the lock shared.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgekd.errors import EdgekdError

log = logging.getLogger(__name__)


class RunLocked(EdgekdError):
    """Another edgekd process is writing this run directory."""

    exit_code = 3


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(text: str) -> dict:
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}


@contextmanager
def run_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold the lock at `path` (exclusive, or shared with other readers) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            info = _holder(fh.read())
            holder = (f"pid {info.get('pid')} ({info.get('command', '?')}, since {info.get('since', '?')})"
                      if info else "another process")
            raise RunLocked(f"{path.parent} is being written by {holder}; wait for it to finish, or write to "
                            "another directory with --out") from None
        fh.seek(0)
        previous = _holder(fh.read())
        if previous.get("pid") and previous.get("pid") != os.getpid() and not _alive(previous["pid"]) and not shared:
            log.warning("%s: taking over the lock of pid %s (%s), which is no longer running", path.parent,
                        previous["pid"], previous.get("command", "?"))
        if not shared:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)[:300],
                                 "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
            fh.flush()
        try:
            yield
        finally:
            if not shared:
                fh.seek(0)
                fh.truncate()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
