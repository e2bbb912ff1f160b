#!/usr/bin/env python3
"""Facts about the machine and tools of a benchmark run, plus the fdatasync reference for B3.

    machine.py --dir SCRATCH --iterations N    prints one JSON object

The fdatasync probe appends 256 bytes and calls fdatasync N times in a file under SCRATCH (the
disk the benchmark clusters write to): one writer's ceiling of durable appends per second, the
reference against which Raft's batching is judged.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import time


def first_line(cmd):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def mem_total_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def fdatasync_probe(directory, iterations):
    path = os.path.join(directory, "fdatasync-probe")
    record = b"x" * 256
    latencies = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(iterations):
            started = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1e3  # noqa: E731
    return {
        "iterations": iterations,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "per_second": iterations / sum(latencies),
    }


def git(*args):
    return first_line(["git", *args])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    facts = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "mem_total_mib": mem_total_mib(),
        "load_average_at_start": os.getloadavg(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                              capture_output=True, text=True).stdout.strip()),
        "tools": {
            "rustc": first_line(["rustc", "--version"]),
            "wrk": first_line(["wrk", "-v"]),
            "oha": first_line([os.environ.get("BENCH_OHA") or "oha", "--version"]) if os.environ.get("BENCH_OHA") else None,
            "nginx": first_line(["nginx", "-v"]),
            "haproxy": first_line(["haproxy", "-v"]),
            "hyperfine": first_line(["hyperfine", "--version"]),
        },
        "fdatasync": fdatasync_probe(args.dir, args.iterations),
    }
    print(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
