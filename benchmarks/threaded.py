"""
Benchmark of the threaded service: netservices `threaded` under twistd,
side by side with a socketserver.ThreadingTCPServer (one thread per
connection) running the same handlers on the same line protocol.

    python benchmarks/threaded.py             # 3 repetitions, about a minute
    python benchmarks/threaded.py --reps 5

Run it from the repository root with the development virtualenv's Python.
Cells, for each server, in each repetition (every server started afresh):

  idle   --idle connections (default 1,000) opened and each answered once;
         the server's RSS growth divided by the connections.
  sleep  --clients clients (default 100), one request in flight each,
         sending `sleep 0.05` until --requests have been answered (default
         4,000): throughput and latency percentiles, from
         `netservices threaded --concurrency --count`.  The pool has as
         many threads as there are clients, so all of them are busy.
         While it runs, the service's own 10 ms timer measures the
         reactor's lag (`stats reset` before, `stats` after): its p99 and
         maximum are reported.  The thread-per-connection server has no
         reactor: nothing to measure there.
  sha256 the same clients hashing 256 KiB each (CPU-bound work that
         releases the GIL), --requests / 2 of them; throughput, p99 and lag.

With taskset, servers run on CPU 1 and clients on CPU 0.  CPU seconds used by
the server and the client in each load cell are printed.  Every step has a
timeout, so a run is bounded.  Medians over the repetitions, [min-max]
ranges, and ratios (netservices / thread-per-connection) are printed as a
Markdown table.  Only 127.0.0.1 is used.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import HOST, cpuSeconds, findScript, progress, ratioOf

STEP_TIMEOUT = 60.0


# -- the reference server ---------------------------------------------------


def runReference() -> None:
    """
    A socketserver.ThreadingTCPServer serving the threaded line protocol with
    the same built-in handlers, one thread per connection, one request at a
    time per connection; prints its port on stdout.
    """
    from netservices.threaded.handlers import echo, resolve, sha256, sleep
    from netservices.threaded.pool import HandlerError
    from netservices.threaded.wire import ERROR, OK, Reply, WireError, formatReply, parseRequest

    table = {"echo": echo, "sleep": sleep, "sha256": sha256, "resolve": resolve}

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                try:
                    request = parseRequest(line.rstrip(b"\n"))
                except WireError as e:
                    self.wfile.write(formatReply(Reply(e.id, ERROR, f"bad-request {e}")))
                    continue
                function = table.get(request.handler)
                if function is None:
                    reply = Reply(request.id, ERROR, f"unknown-handler {request.handler}")
                else:
                    try:
                        reply = Reply(request.id, OK, str(function(*request.args)))
                    except (HandlerError, TypeError) as e:
                        reply = Reply(request.id, ERROR, f"bad-arguments {e}")
                self.wfile.write(formatReply(reply))

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 4096

    with Server((HOST, 0), Handler) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


# -- measuring --------------------------------------------------------------


def rssKiB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def pinned(cpu: int) -> list[str]:
    return common.taskset(cpu) if common.pinnable(cpu) else []


class Running:
    """
    A server process, stopped (by its own PID) when done.
    """

    def __init__(self, name: str, argv: list[str], logPath: Path | None) -> None:
        self.name = name
        self.logPath = logPath
        out = open(logPath, "wb") if logPath else subprocess.PIPE
        self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
        self.port = self._port()

    def _port(self) -> int:
        deadline = time.monotonic() + 30
        if self.logPath is None:
            line = self.process.stdout.readline()
            if not line:
                raise SystemExit(f"{self.name} did not start")
            return int(line)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.logPath.read_text()[-2000:]}")
            for line in self.logPath.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if str(event.get("log_format", "")).startswith("listening on"):
                    return int(event["address"].rsplit(":", 1)[1])
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"{self.name} did not listen within 30 s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        common.stopProcess(self.process, grace=15, killWait=None)


def client(args: list[str], timeout: float = STEP_TIMEOUT) -> tuple[dict | str, float]:
    """
    Run `netservices threaded ...` pinned to the client CPU.

    @return: its output (parsed JSON if it is), and the CPU seconds it used.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [*pinned(0), findScript("netservices"), "threaded", *args],
        capture_output=True,
        timeout=timeout,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode not in (0, 1):
        raise SystemExit(f"client failed: {done.stderr.decode().strip()}")
    text = done.stdout.decode()
    try:
        return json.loads(text), used
    except ValueError:
        return text.strip(), used


def stats(port: int) -> dict[str, float]:
    reply, _ = client([f"{HOST}:{port}", "stats", "--json"])
    return {k: float(v) for k, v in (w.split("=") for w in reply["text"].split())}


def idleCell(server: Running, count: int) -> float:
    """
    @return: the server's RSS growth per idle connection, in KiB.
    """
    before = rssKiB(server.pid)
    sockets = []
    try:
        for i in range(count):
            s = socket.create_connection((HOST, server.port), timeout=30)
            s.sendall(f"{i} echo x\n".encode())
            sockets.append(s)
        for s in sockets:
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(100)
                if not chunk:
                    raise SystemExit(f"{server.name} closed an idle connection")
                reply += chunk
        time.sleep(0.5)
        after = rssKiB(server.pid)
    finally:
        for s in sockets:
            s.close()
    return (after - before) / count


def loadCell(server: Running, handlerArgs: list[str], clients: int, requests: int, lag: bool) -> dict:
    if lag:
        client([f"{HOST}:{server.port}", "stats", "reset"])
    cpuBefore = cpuSeconds(server.pid)
    summary, clientCPU = client(
        [f"{HOST}:{server.port}", *handlerArgs, "--concurrency", str(clients),
         "--count", str(requests), "--json", "--timeout", "30"]
    )
    result = {
        "per_second": summary["per_second"],
        "p50": summary["latency_ms"]["p50"],
        "p99": summary["latency_ms"]["p99"],
        "ok": summary["replies"]["OK"],
        "requests": summary["requests"],
        "server_cpu": cpuSeconds(server.pid) - cpuBefore,
        "client_cpu": clientCPU,
        "seconds": summary["seconds"],
    }
    if lag:
        after = stats(server.port)
        result.update(lag_p99=after["lag_p99_ms"], lag_max=after["lag_max_ms"], lag_samples=after["lag_samples"])
    return result


# -- the run ----------------------------------------------------------------


def startServers(args, workDir: Path, rep: int) -> list[Running]:
    twistd = findScript("twistd")
    threaded = Running(
        "netservices threaded",
        [*pinned(1), twistd, "-n", "--pidfile=", "--logger=netservices.logs.jsonLines",
         "netservices", "threaded", "--port", "0", "--threads", str(args.clients),
         "--queue", str(args.clients * 10), "--max-connections", "0", "--max-per-peer", "0"],
        workDir / f"threaded-{rep}.log",
    )
    reference = Running(
        "ThreadingTCPServer",
        [*pinned(1), sys.executable, str(Path(__file__).resolve()), "--reference-server"],
        None,
    )
    return [threaded, reference]


def fmt(triple, digits=0) -> str:
    if triple is None:
        return "n/a"
    m, lo, hi = triple
    return f"**{m:,.{digits}f}** [{lo:,.{digits}f}–{hi:,.{digits}f}]"


def ratio(a, b, digits=2) -> str:
    r = ratioOf(a, b)
    return "n/a" if r is None else f"{r:.{digits}f}×"


def machine() -> str:
    info = common.machineInfo()
    return (
        f"{info['cpu']}, {os.cpu_count()} CPUs, Linux {info['kernel']}, Python"
        f" {info['python']}, Twisted {info['twisted']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--sleep", default="0.05")
    parser.add_argument("--reference-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference_server:
        runReference()
        return 0
    if not (1 <= args.reps <= 10 and 1 <= args.clients <= 1000 and 1 <= args.requests <= 100000
            and 1 <= args.idle <= 5000):
        parser.error("--reps 1-10, --clients 1-1000, --requests 1-100000, --idle 1-5000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, args.idle + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    started = datetime.datetime.now(datetime.timezone.utc)
    cpuStart = resource.getrusage(resource.RUSAGE_CHILDREN)
    workDir = Path(tempfile.mkdtemp(prefix="threaded-bench-"))
    results: dict[str, list[dict]] = {"netservices threaded": [], "ThreadingTCPServer": []}
    hashSize = 256 * 1024
    try:
        for rep in range(1, args.reps + 1):
            servers = startServers(args, workDir, rep)
            try:
                for server in servers:
                    isTwisted = server.name == "netservices threaded"
                    row: dict = {}
                    progress(f"rep {rep}: {server.name}: {args.idle} idle connections", clock=True)
                    row["idle_kib"] = idleCell(server, args.idle)
                    progress(f"rep {rep}: {server.name}: {args.clients} clients x sleep {args.sleep}", clock=True)
                    row["sleep"] = loadCell(server, ["sleep", args.sleep], args.clients, args.requests, isTwisted)
                    progress(f"rep {rep}: {server.name}: {args.clients} clients x sha256 of 256 KiB", clock=True)
                    row["sha256"] = loadCell(
                        server, ["sha256", "x", str(hashSize)], args.clients, args.requests // 2, isTwisted
                    )
                    results[server.name].append(row)
                    progress(f"rep {rep}: {server.name}: {json.dumps(row)}", clock=True)
            finally:
                for server in servers:
                    server.stop()
    finally:
        shutil.rmtree(workDir, ignore_errors=True)
    cpuEnd = resource.getrusage(resource.RUSAGE_CHILDREN)
    ended = datetime.datetime.now(datetime.timezone.utc)

    def series(name, *path):
        values = []
        for row in results[name]:
            value = row
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        return common.stats([v for v in values if v is not None])

    T, R = "netservices threaded", "ThreadingTCPServer"
    rows = [
        ("idle: RSS per connection (KiB)", ("idle_kib",), 1, "≥10× smaller"),
        (f"sleep {args.sleep}: requests/s", ("sleep", "per_second"), 0, "within 10%"),
        (f"sleep {args.sleep}: p50 latency (ms)", ("sleep", "p50"), 1, ""),
        (f"sleep {args.sleep}: p99 latency (ms)", ("sleep", "p99"), 1, ""),
        (f"sleep {args.sleep}: reactor lag p99 (ms)", ("sleep", "lag_p99"), 2, "< 10 ms"),
        (f"sleep {args.sleep}: reactor lag max (ms)", ("sleep", "lag_max"), 2, ""),
        (f"sleep {args.sleep}: server CPU (s)", ("sleep", "server_cpu"), 2, ""),
        (f"sleep {args.sleep}: client CPU (s)", ("sleep", "client_cpu"), 2, ""),
        ("sha256 256 KiB: requests/s", ("sha256", "per_second"), 0, ""),
        ("sha256 256 KiB: p99 latency (ms)", ("sha256", "p99"), 1, ""),
        ("sha256 256 KiB: reactor lag p99 (ms)", ("sha256", "lag_p99"), 2, ""),
        ("sha256 256 KiB: reactor lag max (ms)", ("sha256", "lag_max"), 2, ""),
        ("sha256 256 KiB: server CPU (s)", ("sha256", "server_cpu"), 2, ""),
    ]
    print(f"threaded benchmark, {started:%Y-%m-%d %H:%M} UTC, {args.reps} repetitions,"
          f" {(ended - started).total_seconds():.0f} s")
    print(f"machine: {machine()}")
    print(f"cells: {args.idle} idle connections; {args.clients} clients (one request in flight"
          f" each), {args.requests} requests of `sleep {args.sleep}`, {args.requests // 2} of"
          f" `sha256` over 256 KiB; netservices threaded with --threads {args.clients}"
          f"{'; servers on CPU 1, clients on CPU 0' if pinned(1) else ''}")
    print()
    print(f"| cell | {T} | {R} | ratio | target |")
    print("|---|---|---|---|---|")
    for label, path, digits, target in rows:
        t, r = series(T, *path), series(R, *path)
        print(f"| {label} | {fmt(t, digits)} | {fmt(r, digits)} | {ratio(t, r) if r else 'n/a'} | {target} |")
    failed = [
        (name, cell, row[cell]["requests"] - row[cell]["ok"])
        for name in results for row in results[name] for cell in ("sleep", "sha256")
        if row[cell]["ok"] != row[cell]["requests"]
    ]
    print()
    print(f"replies not OK: {failed or 'none'}")
    used = (cpuEnd.ru_utime + cpuEnd.ru_stime) - (cpuStart.ru_utime + cpuStart.ru_stime)
    print(f"CPU used by the servers and clients of the whole run: {used:.1f} s")
    return 0


if __name__ == "__main__":
    common.runMain(main, "threaded.py")
