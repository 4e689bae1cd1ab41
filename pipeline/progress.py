"""Training progress: the loop reports through this small interface; the CLI supplies a rich bar on a
terminal and periodic lines elsewhere (a CI log, a file)."""
from __future__ import annotations

import time
from typing import Callable, Protocol


class TrainProgress(Protocol):
    def epoch_start(self, epoch: int, epochs: int, n_samples: int) -> None: ...
    def advance(self, n_samples: int, loss: float | None) -> None: ...
    def epoch_end(self, stats: dict) -> None: ...
    def close(self) -> None: ...


class SilentProgress:
    """Reports nothing: the default for library use and tests."""

    def epoch_start(self, epoch: int, epochs: int, n_samples: int) -> None:
        pass

    def advance(self, n_samples: int, loss: float | None) -> None:
        pass

    def epoch_end(self, stats: dict) -> None:
        pass

    def close(self) -> None:
        pass


class RichProgress:
    """One rich progress bar per training stage: epoch, samples, samples/s, loss, val accuracy."""

    def __init__(self, label: str, console=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._label = label
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]:>8} samples/s  loss {task.fields[loss]}  "
                                        "val {task.fields[val]}"),
                             TimeElapsedColumn(), console=console, transient=False)
        self._task = None
        self._loss, self._val = "-", "-"
        self._bar.start()

    def epoch_start(self, epoch: int, epochs: int, n_samples: int) -> None:
        desc = f"{self._label} {epoch}/{epochs}"
        if self._task is None:
            self._task = self._bar.add_task(desc, total=n_samples, rate="-", loss=self._loss, val=self._val)
        else:
            self._bar.reset(self._task, total=n_samples, description=desc)

    def advance(self, n_samples: int, loss: float | None) -> None:
        if loss is not None:
            self._loss = f"{loss:.4f}"
        task = self._bar.tasks[self._task]
        rate = f"{task.speed:,.0f}" if task.speed else "-"
        self._bar.update(self._task, advance=n_samples, loss=self._loss, rate=rate)

    def epoch_end(self, stats: dict) -> None:
        self._val = f"{stats['val_accuracy']:.2%}"
        self._bar.update(self._task, val=self._val, rate=f"{stats['samples_per_s']:,.0f}")

    def close(self) -> None:
        self._bar.stop()


class LineProgress:
    """Progress as whole lines, for logs without a terminal: no bar, no carriage returns, no truncation.
    A line at most every `every_s` seconds, and the last epoch's when training ends (also by early
    stopping): epoch, samples/s, loss, val accuracy, elapsed, ETA."""

    def __init__(self, label: str, write: Callable[[str], None], every_s: float = 10.0, clock=time.monotonic):
        self._label, self._write, self._every, self._clock = label, write, every_s, clock
        self._start = self._last = clock()
        self._loss, self._pending = "-", None
        self._first = self._epoch = self._epochs = 0

    def epoch_start(self, epoch: int, epochs: int, n_samples: int) -> None:
        self._first = self._first or epoch  # after a resume, the first epoch this process trains
        self._epoch, self._epochs = epoch, epochs

    def advance(self, n_samples: int, loss: float | None) -> None:
        if loss is not None:
            self._loss = f"{loss:.4f}"

    def epoch_end(self, stats: dict) -> None:
        now = self._clock()
        elapsed = now - self._start
        eta = elapsed / (self._epoch - self._first + 1) * (self._epochs - self._epoch)
        self._pending = (f"{self._label} epoch {self._epoch}/{self._epochs}: {stats['samples_per_s']:,.0f} samples/s, "
                         f"loss {self._loss}, val {stats['val_accuracy']:.2%}, {elapsed:.0f} s elapsed, ETA {eta:.0f} s")
        if now - self._last >= self._every or self._epoch == self._epochs:
            self._flush(now)

    def _flush(self, now: float) -> None:
        self._write(self._pending)
        self._pending, self._last = None, now

    def close(self) -> None:
        if self._pending:
            self._flush(self._clock())
