"""`edgekd pack`: one zip to copy to a device: exported files + sidecars + data/eval.npz + the agent as one
file (agent.pyz). On the device: `unzip BUNDLE.zip agent.pyz && python3 agent.pyz BUNDLE.zip -o results.json`,
then `edgekd report RUN_DIR --add results.json`.
"""
from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

from edgekd.bench.agent import pyz
from edgekd.bench.agent.bundle import BUNDLE_MANIFEST
from edgekd.errors import UsageError
from edgekd.export.formats import FORMATS, format_of
from edgekd.fileio import atomic_path, sha256_file
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.manifest import RunRecords
from edgekd.pipeline.stages.bench import exported_files


def pack(layout: RunLayout, out: Path, formats: tuple[str, ...] = ()) -> list[str]:
    """Write the bundle atomically (only `formats` when given); return the names it holds."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"--formats: unknown {', '.join(map(repr, unknown))}; valid: {', '.join(FORMATS)}")
    files = [f for f in exported_files(layout) if not formats or format_of(f) in formats]
    if not files:
        raise UsageError(f"{layout.home}: no exported file of format {', '.join(formats)}; the run exported "
                         f"{', '.join(sorted({format_of(f) for f in exported_files(layout)}))}")
    members = [(f, layout.rel(f)) for f in files]
    members += [(layout.sidecar(f), layout.rel(layout.sidecar(f))) for f in files if layout.sidecar(f).exists()]
    members.append((layout.eval_set, layout.manifest_rel(layout.eval_set)))
    RunRecords(layout).verify()
    with tempfile.TemporaryDirectory(prefix="edgekd-pack-") as tmp:
        members.append((pyz.build(Path(tmp) / "agent.pyz"), "agent.pyz"))
        return _write(members, out)


def _write(members: list[tuple[Path, str]], out: Path) -> list[str]:
    """The zip of (file, name in the bundle) members and their bundle.json; the names it holds."""
    # the sizes let the agent refuse an oversized or swapped member before it decompresses a byte
    listing = {"schema": "edgekd.bundle/1",
               "files": {name: {"sha256": sha256_file(path), "size": path.stat().st_size} for path, name in members}}
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, name in members:
            archive.write(path, name)
        archive.writestr(BUNDLE_MANIFEST, json.dumps(listing, indent=2))
    return [name for _, name in members] + [BUNDLE_MANIFEST]
