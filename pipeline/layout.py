"""Where everything in a run directory lives. No other module spells a run-directory path.

    runs/<name>/
      config.toml manifest.json metrics.json        the run's config, stage records, model metrics
      teacher.pt baseline.pt student.pt              checkpoints (torch.load(weights_only=True))
      data/eval.npz data/calibration.npz             the test split as runtimes see it; int8 calibration
      export/<model><suffix> (+ .json sidecars)      e.g. export/student.int8.tflite
      qat/<model>.pt                                 quantization-aware trained copies (export.int8_method)
      bench/<target>.json                            one agent result file per target
      report.json report.md report.html plots/
      students/<variant>/                            further students of the same teacher (sweeps):
        student.pt baseline.pt export/ bench/ report.*   the same names, their own files

A variant shares the root's teacher, data and calibration set (recorded in the root's manifest); its
own stages are recorded in its own manifest.json, and it has its own lock, so students train in parallel.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from edgekd.errors import UsageError

MODELS = ("teacher", "baseline", "student")
_VARIANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


@dataclass(frozen=True)
class RunLayout:
    root: Path
    variant: str = ""

    def __post_init__(self):
        if self.variant and not _VARIANT.match(self.variant):
            raise UsageError(f"variant name {self.variant!r}: use letters, digits and . _ = + - only")

    def for_variant(self, variant: str) -> "RunLayout":
        return replace(self, variant=variant)

    @property
    def home(self) -> Path:
        """The directory of this variant's own files (the root for the default student)."""
        return self.root / "students" / self.variant if self.variant else self.root

    # -- the run as a whole

    @property
    def root_manifest(self) -> Path:
        """Records of the shared stages (teacher, calibration set) and of the data."""
        return self.root / "manifest.json"

    @property
    def root_lock(self) -> Path:
        return self.root / ".edgekd.lock"

    @property
    def eval_set(self) -> Path:
        return self.root / "data" / "eval.npz"

    @property
    def calibration(self) -> Path:
        return self.root / "data" / "calibration.npz"

    @property
    def sweep(self) -> Path:
        """edgekd sweep's summary of the run's student variants."""
        return self.root / "sweep.json"

    def fold(self, k: int) -> "RunLayout":
        """edgekd cv: fold k is a whole run of its own under folds/<k>/."""
        return RunLayout(self.root / "folds" / str(k))

    @property
    def cv(self) -> Path:
        return self.root / "cv.json"

    @property
    def cv_table(self) -> Path:
        return self.root / "cv.md"

    def variants(self) -> list[str]:
        folder = self.root / "students"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    # -- this variant's files
    @property
    def manifest(self) -> Path:
        """Records of this variant's own stages (the root's manifest for the default student)."""
        return self.home / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.home / ".edgekd.lock"

    @property
    def config(self) -> Path:
        """The resolved config of this variant (the root's for the default student)."""
        return self.home / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.home / "metrics.json"

    def checkpoint(self, model: str) -> Path:
        if model not in MODELS:
            raise UsageError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
        return (self.root if model == "teacher" else self.home) / f"{model}.pt"

    @property
    def export_dir(self) -> Path:
        return self.home / "export"

    def export_file(self, model: str, fmt: str) -> Path:
        from edgekd.export.formats import FORMATS

        return self.export_dir / f"{model}{FORMATS[fmt].suffix}"

    @property
    def int8_candidates(self) -> Path:
        """Scratch for int8 files being compared (removed once one is kept)."""
        return self.home / ".int8"

    def int8_candidate(self, model_file: Path, method: str) -> Path:
        """Where an int8 file made by `method` ("qat", "mixed") is written while it is compared with the others."""
        return self.int8_candidates / method / model_file.name

    def qat_model(self, model: str) -> Path:
        """The trained quantization-aware copy of a model, reused by its int8 formats and later runs."""
        return self.home / "qat" / f"{model}.pt"

    @staticmethod
    def sidecar(model_file: Path) -> Path:
        return model_file.with_name(model_file.name + ".json")

    @property
    def bench_dir(self) -> Path:
        return self.home / "bench"

    def bench_file(self, target: str) -> Path:
        return self.bench_dir / f"{target}.json"

    @property
    def report_json(self) -> Path:
        return self.home / "report.json"

    @property
    def report_md(self) -> Path:
        return self.home / "report.md"

    @property
    def report_html(self) -> Path:
        return self.home / "report.html"

    @property
    def plots(self) -> Path:
        return self.home / "plots"

    @property
    def search(self) -> Path:
        """edgekd search's candidates, fidelities and answer."""
        return self.root / "search.json"

    @property
    def search_plot(self) -> Path:
        return self.plots / "search.png"

    @property
    def sweep_plot(self) -> Path:
        """Drawn by edgekd sweep; the report embeds it."""
        return self.plots / "sweep.png"

    def resume_file(self, stage: str) -> Path:
        return self.home / ".resume" / f"{stage}.pt"

    # -- names as recorded in the manifest and reports
    def rel(self, path: Path) -> str:
        """`path` as reports name files: relative to this variant's home (e.g. export/student.onnx), or
        to the root for the files a variant shares (teacher.pt)."""
        return (path.relative_to(self.home) if path.is_relative_to(self.home) else path.relative_to(self.root)).as_posix()

    def manifest_rel(self, path: Path) -> str:
        """`path` relative to the run root, as the root manifest records artifacts."""
        return path.relative_to(self.root).as_posix()
