"""The agent as one file, agent.pyz: a zipapp of this package (with the C++ source of its torch-free
ExecuTorch runner) and the three modules of edgekd it imports (edgekd/__init__.py, errors.py, fileio.py),
run as `python3 agent.pyz MODEL|BUNDLE ...`; its workers start the same file again (processes.agent_command).

    python -m edgekd.bench.agent.pyz dist/agent.pyz        # `make agent`; `edgekd pack` builds its own

The bytes depend on the sources alone: names sorted, every timestamp 1980-01-01, one file mode, and
stored, not deflated (zlib's output differs between its versions; the bundle that carries the file
compresses it anyway), so a bundle's bundle.json lists the same sha256 for the same agent everywhere.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import edgekd
from edgekd.fileio import atomic_path

SHEBANG = b"#!/usr/bin/env python3\n"
PACKAGE = Path(__file__).resolve().parent  # edgekd.bench.agent


def members() -> dict[str, Path]:
    """Archive name -> source file: everything the agent imports, and the package's __main__.py at
    the root, which is what `python3 agent.pyz` runs."""
    edgekd_dir = Path(edgekd.__file__).resolve().parent
    files = {f"edgekd/{name}": edgekd_dir / name for name in ("__init__.py", "errors.py", "fileio.py")}
    files["edgekd/bench/__init__.py"] = PACKAGE.parent / "__init__.py"
    files.update({f"edgekd/bench/agent/{p.relative_to(PACKAGE).as_posix()}": p
                  for pattern in ("*.py", "*.cpp") for p in PACKAGE.rglob(pattern)})
    files["__main__.py"] = PACKAGE / "__main__.py"
    return files


def build(path: Path) -> Path:
    """Write agent.pyz to `path` (atomically, executable) and return `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(SHEBANG)
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as archive:
                for name, source in sorted(members().items()):
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o644 << 16
                    archive.writestr(info, source.read_bytes())
        tmp.chmod(0o755)
    return path


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "agent.pyz")))
