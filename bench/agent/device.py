"""What the agent reads of the machine: its memory (VmRSS, VmHWM), its fingerprint, and the board's
CPU frequencies, temperatures and throttling."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def status_mb(key: str) -> float | None:
    """A /proc/self/status memory line (VmRSS, VmHWM) in MB, or None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """VmHWM (Linux); elsewhere ru_maxrss (kB on Linux, bytes on macOS)."""
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def device_fingerprint() -> dict:
    info = {"machine": platform.machine(), "system": platform.system(), "processor": platform.processor(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        info["governor"] = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        info["governor"] = None
    return info


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def board_state() -> dict:
    """CPU frequencies (MHz), thermal zone temperatures (°C) and, on a Raspberry Pi, `vcgencmd
    get_throttled`; empty where the system exposes none of them."""
    state: dict = {}
    freqs = [(_read(p / "scaling_cur_freq"), _read(p / "cpuinfo_max_freq"), _read(p / "cpuinfo_min_freq"))
             for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))]
    freqs = [tuple(int(v) / 1000 for v in f) for f in freqs if all(v and v.isdigit() for v in f)]
    if freqs:
        state["cpu_mhz"] = {"cur": [f[0] for f in freqs], "max": max(f[1] for f in freqs), "min": min(f[2] for f in freqs)}
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        value, kind = _read(zone / "temp"), _read(zone / "type")
        if value and value.lstrip("-").isdigit():
            temps[kind or zone.name] = int(value) / 1000
    if temps:
        state["temperature_c"] = temps
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
        state["throttled_flags"] = int(out.strip().split("=")[1], 16)
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        pass
    return state


def thermal_summary(before: dict, after: dict) -> dict:
    """Whether the board was throttling: Raspberry Pi flags now set (under-voltage, frequency capped,
    throttled, soft temperature limit), or the CPU frequency fell by more than 5 % while timing."""
    reasons = []
    flags = after.get("throttled_flags", 0) & 0xF
    if flags:
        reasons.append(f"vcgencmd get_throttled = {hex(flags)}")
    f0, f1 = before.get("cpu_mhz", {}).get("cur"), after.get("cpu_mhz", {}).get("cur")
    if f0 and f1 and sum(f1) < 0.95 * sum(f0):
        reasons.append(f"CPU frequency fell from {sum(f0) / len(f0):.0f} to {sum(f1) / len(f1):.0f} MHz")
    return {"before": before, "after": after, "throttled": bool(reasons), "why": "; ".join(reasons)}

