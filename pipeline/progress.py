"""Training progress: the loop reports through this small interface; the CLI supplies a rich one."""
from __future__ import annotations

from typing import Protocol


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
