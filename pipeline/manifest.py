"""manifest.json (schema edgekd.manifest/1): what each stage did, from what, and what it wrote.

A stage is fresh, and is skipped on re-run, when its recorded config hash and input hashes equal the
current ones and every output it recorded is still on disk with the recorded sha256.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from edgekd.fileio import sha256_file, sha256_json, write_json

log = logging.getLogger(__name__)

SCHEMA = "edgekd.manifest/1"
CHECKSUM = "checksum"  # sha256 of the rest of the manifest: a flipped byte must not pass as a record
_FIX = ("edgekd cannot trust what this run recorded; restore the file, or delete it and run `edgekd run CONFIG "
        "--out {run}` to rebuild the run (finished stages are then re-run)")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Manifest:
    def __init__(self, path: Path, data: dict | None = None):
        self.path = path
        self.data = data or {"schema": SCHEMA, "created": _now(), "stages": {}, "artifacts": {}}

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        """Read `path`; a missing manifest starts afresh (a new run). A damaged one is DataError (exit 2):
        starting afresh would drop every record a later command checks files against."""
        from edgekd.errors import DataError

        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc}). {_FIX.format(run=path.parent)}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise DataError(f"{path}: schema {found!r}, expected {SCHEMA!r}. {_FIX.format(run=path.parent)}")
        recorded = data.pop(CHECKSUM, None)
        if recorded is not None and recorded != sha256_json(data):
            raise DataError(f"{path}: changed since edgekd wrote it (its checksum no longer matches its content). "
                            f"{_FIX.format(run=path.parent)}")
        return cls(path, data)

    @property
    def stages(self) -> dict[str, dict]:
        return self.data["stages"]

    def why_stale(self, stage: str, config_hash: str, input_hashes: dict[str, str]) -> str | None:
        """None when `stage` can be skipped, else the reason it must run."""
        entry = self.stages.get(stage)
        if not entry or entry.get("status") != "done":
            return "not run yet" if not entry else f"last run {entry.get('status')}"  # failed or interrupted
        if entry["config_hash"] != config_hash:
            return "config changed"
        if entry["input_hashes"] != input_hashes:
            changed = sorted(k for k in set(entry["input_hashes"]) | set(input_hashes)
                             if entry["input_hashes"].get(k) != input_hashes.get(k))
            return f"input changed: {', '.join(changed)}"
        problems = self.changed_files(stage)
        return f"output {problems[0]}" if problems else None

    def changed_files(self, stage: str) -> list[str]:
        """The outputs `stage` recorded that are missing or differ from their recorded sha256."""
        problems = []
        for rel in self.stages.get(stage, {}).get("outputs", []):
            file = self.path.parent / rel
            if not file.exists():
                problems.append(f"{rel} missing")
            elif sha256_file(file) != self.data["artifacts"][rel]["sha256"]:
                problems.append(f"{rel} modified (sha256 differs from the one recorded when it was written)")
        return problems

    def start(self, stage: str) -> None:
        self.stages[stage] = {"status": "running", "started": _now()}
        self.save()

    def finish(self, stage: str, *, seconds: float, config_hash: str, input_hashes: dict[str, str],
               outputs: list[Path], metrics: dict) -> None:
        run_dir = self.path.parent
        rels = [p.relative_to(run_dir).as_posix() for p in outputs]
        for rel in [r for r, a in self.data["artifacts"].items() if a["stage"] == stage and r not in rels]:
            del self.data["artifacts"][rel]  # written by an earlier run of the stage, no longer one of its outputs
        for rel in rels:
            file = run_dir / rel
            self.data["artifacts"][rel] = {"sha256": sha256_file(file), "size_bytes": file.stat().st_size,
                                           "stage": stage}
        self.stages[stage] = {"status": "done", "seconds": round(seconds, 3), "config_hash": config_hash,
                              "input_hashes": input_hashes, "outputs": rels, "metrics": metrics,
                              "finished": _now()}
        self.save()

    def record_files(self, stage: str, files: list[Path]) -> None:
        """Record files written outside a stage run (results merged with --add, a report rewritten)
        with their sha256, so that every later reader can check them; a finished stage's outputs follow."""
        run_dir = self.path.parent
        rels = [p.relative_to(run_dir).as_posix() for p in files]
        for rel in rels:
            file = run_dir / rel
            self.data["artifacts"][rel] = {"sha256": sha256_file(file), "size_bytes": file.stat().st_size, "stage": stage}
        entry = self.stages.get(stage)
        if entry and entry.get("status") == "done":
            entry["outputs"] = sorted(set(entry["outputs"]) | set(rels))
        self.save()

    def fail(self, stage: str, error: str, status: str = "failed") -> None:
        self.stages[stage] = {"status": status, "error": error, "finished": _now()}
        self.save()

    def outputs_hash(self, stage: str) -> str | None:
        """One hash over what `stage` recorded writing, or None when it has not finished."""
        entry = self.stages.get(stage, {})
        if entry.get("status") != "done":
            return None
        return sha256_json([self.data["artifacts"][rel]["sha256"] for rel in entry["outputs"]])

    def save(self) -> None:
        self.data["updated"] = _now()
        self.data.pop(CHECKSUM, None)
        write_json(self.path, {**self.data, CHECKSUM: sha256_json(self.data)})


class RunRecords:
    """The manifests of a run as one variant sees them: shared stages (the teacher, the calibration set)
    and the data are recorded at the root, the variant's own stages in its directory."""

    def __init__(self, layout):
        self.layout = layout
        self.root = Manifest.load(layout.root_manifest)
        self.home = self.root if layout.home == layout.root else Manifest.load(layout.manifest)

    def of(self, stage: str) -> Manifest:
        from edgekd.pipeline.stages import BY_NAME

        return self.root if BY_NAME[stage].shared else self.home

    def stage(self, name: str) -> dict:
        return self.of(name).stages.get(name, {})

    def outputs(self, name: str) -> list[Path]:
        """The files stage `name` recorded writing, as paths."""
        manifest = self.of(name)
        return [manifest.path.parent / rel for rel in manifest.stages.get(name, {}).get("outputs", [])]

    def sha256(self, path: Path) -> str | None:
        """The recorded sha256 of `path`, whichever manifest recorded it."""
        for manifest in (self.home, self.root):
            if path.is_relative_to(manifest.path.parent):
                entry = manifest.data["artifacts"].get(path.relative_to(manifest.path.parent).as_posix())
                if entry:
                    return entry["sha256"]
        return None

    def tampered(self) -> list[str]:
        """Every recorded file of this run (and of the root it shares) that is missing or changed."""
        problems = []
        for manifest in {id(m): m for m in (self.root, self.home)}.values():
            for rel, entry in manifest.data.get("artifacts", {}).items():
                file = manifest.path.parent / rel
                if not file.exists() and entry["stage"] == "add":
                    continue  # results merged with --add and deleted since: the report just leaves them out
                if not file.exists():
                    problems.append(f"{self.layout.rel(file)} missing")
                elif sha256_file(file) != entry["sha256"]:
                    problems.append(f"{self.layout.rel(file)} changed since edgekd wrote it")
        return problems

    def verify(self) -> None:
        """DataError (exit 2) naming every file that is not what edgekd wrote, and the fix."""
        from edgekd.errors import DataError

        problems = self.tampered()
        if problems:
            raise DataError(f"{self.layout.home}: {len(problems)} file(s) are not what this run wrote:\n" +
                            "\n".join(f"  - {p}" for p in problems) + f"\n`edgekd run CONFIG --out {self.layout.root}` "
                            "re-creates them (and re-runs what depends on them)")
