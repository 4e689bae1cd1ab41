"""The agent's limits: the byte ceiling on what a bundle, a model or an eval set may hold, and one
deadline for a whole measurement."""
from __future__ import annotations

import re
import time

from edgekd.errors import AgentError

# The most a bundle may unpack in all, and the most one model file or eval set may hold (decompressed):
# far above any edge model or eval set, far below what kills a 1-4 GB board (`--max-bytes` changes it).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


def mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB ({n:,} bytes)"


def parse_size(text: str) -> int:
    """A byte count for --max-bytes: 536870912, 512M, 512MiB, 2G (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"--max-bytes {text!r}: expected a positive size such as 536870912, 512M or 2G")
    return int(m.group(1)) * 1024 ** " kmg".index(m.group(2).lower() or " ")


class Deadline:
    """One time limit for a whole measurement (every process, call and retry of one target), not per call."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def left(self, limit: float | None = None) -> float | None:
        """Seconds left, at most `limit` (None: no limit at all); AgentError (exit 1) once it has passed."""
        if self.end is None:
            return limit
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left if limit is None else min(left, limit)

    def expired(self) -> AgentError:
        return AgentError(f"over the time limit: timeout_s = {self.seconds:g} s covers the whole measurement of a "
                          "target (every process and the retry); raise timeout_s in the targets file", 1)

