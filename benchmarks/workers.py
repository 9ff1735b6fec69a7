"""
Throughput of tcp-echo and udp-echo served in-process (no --workers) and by
1 and 2 worker processes (--workers N: the workers share the listening
socket, see netservices/_common/workers.py), side by side.

    python benchmarks/workers.py              # 3 repetitions, ~1 minute
    python benchmarks/workers.py --reps 1 --duration 1

Run it from the repository root with the development virtualenv's Python.
It uses the load generator of run.py (benchmarks/echoload.c, compiled on
first use) and its server handling; nothing is pinned to a CPU (the point
is to use several), so the generator competes with the workers: on a
2-core machine, 2 workers and the generator share 2 cores.  Cells: TCP
ping-pong (--connections connections, 1 KiB, one message in flight each)
and UDP ping-pong (as many sockets, 1 KiB).  Medians over the repetitions
and [min-max] ranges are printed as a Markdown table, with the ratio to the
in-process server.  Only 127.0.0.1 is used.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import common
import run  # benchmarks/run.py: the echo servers and echoload
from common import HOST, buildGenerator, findTwistd, progress, stats

#: Worker counts measured; 0 is the in-process server.
WORKER_COUNTS = [0, 1, 2]


def echoServer(twistd: str, proto: str, workers: int) -> run.Server:
    """
    @return: tcp-echo or udp-echo on an ephemeral port with C{workers}.
    """
    listening = r"listening on (?:tcp|udp) 127\.0\.0\.1:(\d+)"
    args = [twistd, "-n", "--pidfile=", "netservices", f"{proto}-echo",
            "--listen", f"{proto}:0:interface={HOST}"]
    if proto == "udp":
        args += ["--rate", "1e9", "--burst", "1e9", "--global-rate", "0"]
    else:
        args += ["--max-per-peer", "0", "--max-connections", "0"]
    if workers:
        args += ["--workers", str(workers)]
    label = f"{proto}-echo, " + (f"{workers} worker{'s' if workers > 1 else ''}" if workers else "in-process")
    return run.Server("netservices", label, proto, args, ready=re.compile(listening))


def measure(running: run.Running, proto: str, connections: int, warmup: float,
            duration: float) -> float:
    """
    @return: requests (TCP) or datagrams (UDP) per second.
    """
    mode = "pingpong" if proto == "tcp" else "udp"
    args = ["-m", mode, "-h", HOST, "-P", str(running.port), "-c", str(connections),
            "-s", "1024", "-w", str(warmup), "-d", str(duration), "-t", "100",
            "-T", str(warmup + duration + 20)]
    result = run.runGenerator(args, [], warmup + duration + 20, 256)
    return result["rps"] if proto == "tcp" else result["dps"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument("--connections", type=int, default=20,
                        help="connections or sockets of the load (default 20)")
    args = parser.parse_args(argv)
    buildGenerator(run.SOURCE)
    twistd = findTwistd()
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="netservices-workers-") as workdir:
        for rep in range(args.reps):
            for proto in ("tcp", "udp"):
                for workers in WORKER_COUNTS:
                    server = echoServer(twistd, proto, workers)
                    running = run.Running(server, [], Path(workdir), 1024)
                    try:
                        if workers:
                            # The parent listens before its workers do.
                            time.sleep(1.5)
                        rate = measure(running, proto, args.connections, args.warmup,
                                       args.duration)
                    finally:
                        running.stop()
                    results.setdefault((proto, workers), []).append(rate)
                    progress(f"rep {rep + 1}: {server.label}: {rate:,.0f}/s")
    print(f"| server ({os.cpu_count()} CPUs, {args.connections} connections, 1 KiB,"
          f" {args.reps} reps) | per second, median [min-max] | vs in-process |")
    print("|---|---|---|")
    for proto in ("tcp", "udp"):
        base = stats(results[(proto, 0)])[0]
        for workers in WORKER_COUNTS:
            median, low, high = stats(results[(proto, workers)])
            label = echoServer("twistd", proto, workers).label
            print(f"| {label} | {median:,.0f} [{low:,.0f}-{high:,.0f}] | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    common.runMain(main, "workers.py")
