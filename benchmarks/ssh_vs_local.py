"""Does the ssh target measure what the local target measures? On this machine, through a real sshd.

    python benchmarks/ssh_vs_local.py runs/mnist5k [--ssh-first]

Starts an sshd on 127.0.0.1 with a key made here, copies the run directory, runs
`edgekd bench COPY --targets T --target local --target loopback` (one call; the two targets share
this CPU, so they run one after the other), and prints per file the accuracy on both and whether the
ssh p50 lies inside the local per-process p50 range.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this repository's tests/, for its sshd helper

from edgekd.pipeline.cli import main as edgekd  # noqa: E402
from edgekd.pipeline.reporting.gate import latency_regression  # noqa: E402
from tests.conftest import start_sshd  # noqa: E402


def main() -> int:
    run_dir = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        host = start_sshd(Path(tmp) / "sshd")
        try:
            copy = Path(tmp) / "run"
            shutil.copytree(run_dir, copy)
            (Path(tmp) / "t.toml").write_text(
                f'[targets.loopback]\nkind = "ssh"\nhost = "{host.host}"\nport = {host.port}\npython = "{sys.executable}"\n'
                f"ssh_options = {json.dumps(list(host.options))}\n")
            order = ["loopback", "local"] if "--ssh-first" in sys.argv else ["local", "loopback"]
            code = edgekd(["-q", "bench", str(copy), "--targets", str(Path(tmp) / "t.toml"),
                           *[a for t in order for a in ("--target", t)]])
            report = json.loads((copy / "report.json").read_text())
        finally:
            host.process.kill()
    rows = {(r["target"], r["artifact"]): r for r in report["results"]}
    inside, same, verdicts = 0, 0, {}
    files = sorted({a for t, a in rows if t == "loopback"})
    for name in files:
        local, ssh = rows[("local", name)], rows[("loopback", name)]
        lo, hi = local["latency_ms"]["p50_ci95"]
        ok = lo <= ssh["latency_ms"]["p50"] <= hi
        inside += ok
        status, point, *_ = latency_regression(ssh["latency_ms"]["process_p50"], local["latency_ms"]["process_p50"], 0.10)
        verdicts[status] = verdicts.get(status, 0) + 1
        same += local["accuracy"] == ssh["accuracy"]
        print(f"{name:30s} accuracy local {local['accuracy']:.4f} ssh {ssh['accuracy']:.4f}   p50 ssh "
              f"{1e3 * ssh['latency_ms']['p50']:8.1f} µs, local {1e3 * local['latency_ms']['p50']:8.1f} µs "
              f"(process range {1e3 * lo:.1f}-{1e3 * hi:.1f}) {'inside' if ok else 'OUTSIDE'}; ssh vs local "
              f"{100 * point:+.1f} % -> gate {status}")
    print(f"edgekd bench exit {code}; {same}/{len(files)} accuracies equal; {inside}/{len(files)} ssh p50s inside the "
          f"local per-process range; the gate's regression rule at 10 %: {verdicts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
