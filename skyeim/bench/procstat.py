"""What the benchmark reads from /proc (Linux): CPU time and RSS of a process,
the machine's CPU, the process listening on a port, and what the machine is."""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from typing import Callable

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK     # utime, stime


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except OSError:
        return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat", "rb") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)      # idle + iowait
    total = sum(parts[:8])                                     # guest time is inside user
    return (total - idle) / CLK_TCK, total / CLK_TCK


class CpuWindow:
    """CPU use of some processes and of the machine between start() and stop().

    ``percent[name]`` is the share of one core (100 = one core busy);
    ``machine_percent`` is the share of all cores (100 = every core busy).
    ``discover`` (optional) returns the processes of the system as they are at
    stop(): one that was not there at start() was born within the window (e.g. a
    PostgreSQL backend for a new pooled connection), and all its CPU time counts."""

    def __init__(self, pids: dict[str, int], discover: Callable[[], dict[str, int]] | None = None):
        self.pids = dict(pids)
        self.discover = discover
        self.percent: dict[str, float | None] = {}
        self.machine_percent: float | None = None
        self.seconds = 0.0

    def start(self) -> "CpuWindow":
        self._t0 = time.monotonic()
        self._cpu0 = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self._m0 = machine_cpu()
        return self

    def stop(self) -> "CpuWindow":
        wall = max(1e-6, time.monotonic() - self._t0)
        self.seconds = wall
        if self.discover is not None:
            known = set(self.pids.values())
            for name, pid in self.discover().items():
                if pid not in known and name not in self.pids:
                    self.pids[name] = pid
                    self._cpu0[name] = 0.0
        for name, pid in self.pids.items():
            c0, c1 = self._cpu0.get(name), cpu_seconds(pid)
            self.percent[name] = None if c0 is None or c1 is None else round(100 * (c1 - c0) / wall, 1)
        m1 = machine_cpu()
        dt = m1[1] - self._m0[1]
        self.machine_percent = round(100 * (m1[0] - self._m0[0]) / dt, 1) if dt > 0 else None
        return self


def find_listening_pid(port: int) -> int | None:
    """The process that has a TCP socket listening on ``port`` (as root, any process)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return int(pid)
        except OSError:
            continue
    return None


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed) towards ``wanted``; the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft, hard
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))   # root may
            return wanted, wanted
        except (ValueError, OSError):
            pass
    new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def machine_info() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
