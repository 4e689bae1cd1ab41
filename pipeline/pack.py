"""`edgekd pack`: one zip to copy to a device: exported files + sidecars + data/eval.npz + the agent.

On the device: `python agent.py BUNDLE.zip -o results.json`, then `edgekd report RUN_DIR --add results.json`.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from edgekd.pipeline.bench_stage import AGENT, exported_files
from edgekd.fileio import atomic_path


def pack(run_dir: Path, out: Path) -> list[str]:
    """Write the bundle atomically; return the names it holds."""
    members = [(f, f.relative_to(run_dir).as_posix()) for f in exported_files(run_dir)]
    members += [(f.with_name(f.name + ".json"), f.relative_to(run_dir).as_posix() + ".json")
                for f, _ in list(members) if f.with_name(f.name + ".json").exists()]
    members += [(run_dir / "data" / "eval.npz", "data/eval.npz"), (AGENT, "agent.py")]
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, name in members:
            archive.write(path, name)
    return [name for _, name in members]
