"""Bundles (`edgekd pack`): a zip of model files, sidecars, data/eval.npz and the agent, listed in its
bundle.json. Only exactly what the listing names is unpacked, each file checked against its size
and sha256, and every model in it is measured."""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from edgekd.bench.agent.jobs import measure_files
from edgekd.bench.agent.limits import DEFAULT_MAX_BYTES, mib
from edgekd.bench.agent.processes import temp_dir
from edgekd.bench.agent.runtimes import suffixes
from edgekd.bench.agent.worker import Timing
from edgekd.errors import AgentError

BUNDLE_MANIFEST = "bundle.json"
# {"schema": "edgekd.bundle/1", "files": {name: {"sha256": hex, "size": bytes}}}; bundles packed before
# sizes were recorded map name -> sha256 and are still accepted (the ceiling alone bounds their files).
MAX_MANIFEST_BYTES = 1 << 20


def _unique_keys(pairs: list) -> dict:
    """json object_pairs_hook: a name listed twice would let the second entry silently win."""
    seen = [k for k, _ in pairs]
    twice = sorted({k for k in seen if seen.count(k) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} listed twice")
    return dict(pairs)


def _listed_entry(name: str, value) -> tuple[str, int | None]:
    """(sha256, size or None) of one bundle.json entry, in either form."""
    sha, size = (value, None) if isinstance(value, str) else (value.get("sha256"), value.get("size")) \
        if isinstance(value, dict) else (None, None)
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"{name}: expected a sha256 (64 hex digits), got {value!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"{name}: expected a size in bytes, got {size!r}")
    return sha, size


def read_listing(archive: zipfile.ZipFile, bundle: Path) -> dict[str, tuple[str, int | None]]:
    """name -> (sha256, size or None) from the bundle's bundle.json."""
    fix = "make the bundle with `edgekd pack`"
    infos = [i for i in archive.infolist() if i.filename == BUNDLE_MANIFEST]
    if len(infos) > 1:
        raise AgentError(f"{bundle}: {BUNDLE_MANIFEST} appears {len(infos)} times in the zip; {fix}")
    if not infos or infos[0].file_size > MAX_MANIFEST_BYTES:
        why = "missing" if not infos else f"{mib(infos[0].file_size)}, over {mib(MAX_MANIFEST_BYTES)}"
        raise AgentError(f"{bundle}: no valid {BUNDLE_MANIFEST} inside ({why}); {fix}")
    try:
        files = json.loads(archive.read(infos[0]), object_pairs_hook=_unique_keys)["files"]
        return {name: _listed_entry(name, value) for name, value in files.items()}
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        raise AgentError(f"{bundle}: no valid {BUNDLE_MANIFEST} inside ({exc}); {fix}") from None


def _name_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return f"{name}: a symbolic link; bundles hold plain files only"
    if name.startswith("/") or ".." in PurePosixPath(name).parts or "\\" in name:
        return f"{name}: a path outside the bundle's directory"
    if PurePosixPath(name).as_posix() != name:
        return f"{name}: not a plain relative path (as `edgekd pack` writes them, e.g. export/student.tflite)"
    return None


def _clashes(names: set[str]) -> list[str]:
    """A name that is a file and also the folder of another name (`export` and `export/a.tflite`)."""
    return [f"{folder}: both a file and the folder of {name}" for name in sorted(names)
            for folder in ("/".join(PurePosixPath(name).parts[:k]) for k in range(1, len(PurePosixPath(name).parts)))
            if folder in names]


def _check_members(archive: zipfile.ZipFile, listed: dict, max_bytes: int) -> tuple[dict, list[str]]:
    """(name -> ZipInfo of the files to extract, problems), from the zip's directory alone: nothing is
    decompressed before every name and size is known to be what bundle.json says and under the ceiling."""
    problems, members, seen = [], {}, {}
    for info in archive.infolist():
        seen[info.filename] = seen.get(info.filename, 0) + 1
    problems += [f"{name}: appears {n} times in the zip; a bundle holds each name once" for name, n in seen.items() if n > 1]
    for info in archive.infolist():
        name = info.filename
        if info.is_dir() or name == BUNDLE_MANIFEST or seen[name] > 1:
            continue
        problem = _name_problem(info)
        if problem is None and name not in listed:
            problem = f"{name}: not listed in {BUNDLE_MANIFEST} (an extra file)"
        if problem is None and listed[name][1] is not None and info.file_size != listed[name][1]:
            problem = f"{name}: {info.file_size:,} bytes in the zip but {listed[name][1]:,} in {BUNDLE_MANIFEST}"
        if problem is None and info.file_size > max_bytes:
            problem = f"{name}: {mib(info.file_size)}, over the agent's ceiling of {mib(max_bytes)} (--max-bytes)"
        if problem:
            problems.append(problem)
        else:
            members[name] = info
    problems += _clashes(set(listed) | {i.filename for i in archive.infolist() if not i.is_dir()})
    problems += [f"{name}: listed in {BUNDLE_MANIFEST} but missing" for name in listed
                 if name not in members and not any(p.startswith(name + ":") for p in problems)]
    total = sum(info.file_size for info in members.values())
    if total > max_bytes:
        problems.append(f"the files take {mib(total)} unpacked, over the agent's ceiling of {mib(max_bytes)} "
                        "(raise --max-bytes if the device has room)")
    return members, problems


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, sha: str, into: Path) -> str | None:
    """Stream one member to disk, hashing as it goes (never more than a chunk in memory); a problem or None."""
    target, digest, size = into / info.filename, hashlib.sha256(), 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                size += len(chunk)
                if size > info.file_size:  # zipfile stops there itself; a second guard costs nothing
                    raise ValueError(f"more than the {info.file_size:,} bytes its header declares")
                digest.update(chunk)
                dst.write(chunk)
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        if target.is_file():  # a partial file never stays behind
            target.unlink()
        return f"{info.filename}: cannot be unpacked ({exc})"
    if digest.hexdigest() != sha:
        target.unlink()
        return f"{info.filename}: altered (sha256 differs from {BUNDLE_MANIFEST})"
    return None


def _unpack(archive: zipfile.ZipFile, bundle: Path, into: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Extract exactly the files the bundle's manifest lists, each checked against its size and sha256;
    refuse (every problem at once) a missing, extra, duplicate, oversized or altered file, a link, a
    name leaving the directory, or a file that is also a folder. Sizes are checked before reading."""
    listed = read_listing(archive, bundle)
    members, problems = _check_members(archive, listed, max_bytes)
    if not problems:
        problems = [p for name, info in members.items() if (p := _extract(archive, info, listed[name][0], into))]
    if problems:
        raise AgentError(f"{bundle}: refused, {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def measure_bundle(bundle: Path, threads: int, processes: int, timing: Timing, target: str, progress=None,
                   max_bytes: int = DEFAULT_MAX_BYTES, profile: bool = False) -> dict:
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AgentError(f"{bundle}: not a readable zip bundle ({exc})") from exc
    with temp_dir() as tmp, archive:
        root = Path(tmp)
        _unpack(archive, bundle, root, max_bytes)
        eval_path = next(root.rglob("eval.npz"), None)
        known = suffixes()
        models = sorted(p for p in root.rglob("*") if p.suffix in known)
        return measure_files(models, eval_path, threads, processes, timing, target, progress, max_bytes, profile)

