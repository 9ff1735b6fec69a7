"""
Echo benchmarks: netservices tcp-echo and udp-echo (under twistd) measured side
by side with stock Twisted, asyncio and (when importable) uvloop servers.

    python benchmarks/run.py            # full run: 3 repetitions, ~5-8 minutes
    python benchmarks/run.py --quick    # smoke run, under a minute
    python benchmarks/run.py --reps 5 --duration 5

Run it from the repository root with the development virtualenv active (the
servers are started with this Python and the twistd next to it).  It compiles
the load generator benchmarks/echoload.c (with loadgen.h) with `gcc -O2 -Wall`
into benchmarks/build/ (git-ignored) on first use, starts every server afresh
for each repetition, pins the server to CPU 1 and the generator to CPU 0 with
taskset, and prints a Markdown table (medians, [min-max] ranges, ratios to
stock Twisted, the CPU time each side used, the targets of the performance
issue next to what was measured).  Progress goes to stderr; the table and the
raw JSON lines are also saved in benchmarks/build/.  Nothing is asserted: the
targets are shown, not enforced.  Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import re
import resource
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import common
from common import (
    BUILD,
    GENERATOR_BOUND_PERCENT,
    HERE,
    HOST,
    BenchBase,
    CellError,
    ReportBase,
    ServerProcess,
    cpuPercents,
    fmt,
    fmtStats,
    progress,
    ratioOf,
    stats,
)

SOURCE = HERE / "echoload.c"
GENERATOR = BUILD / "echoload"
SERVER_CPU, GENERATOR_CPU = 1, 0
NOISY_OTHER_PERCENT = 10.0  # a cell is measured again while "other" CPU is above this

# ----------------------------------------------------------------- servers


@dataclass
class Server:
    key: str  # reference key: netservices, twisted, asyncio, uvloop
    label: str
    proto: str  # tcp or udp
    argv: list[str]
    idleArgv: list[str] = field(default_factory=list)  # extra for the idle cell
    ready: re.Pattern = re.compile(r"^PORT (\d+)$", re.M)


def servers(python: str, twistd: str, withUvloop: bool) -> list[Server]:
    listening = re.compile(r"listening on (?:tcp|udp) 127\.0\.0\.1:(\d+)")
    ref = [python, str(HERE / "servers.py")]
    result = [
        Server(
            "netservices",
            "netservices tcp-echo",
            "tcp",
            [twistd, "-n", "--pidfile=", "netservices", "tcp-echo",
             "--listen", f"tcp:0:interface={HOST}"],
            idleArgv=["--max-connections", "0", "--max-per-peer", "0"],
            ready=listening,
        ),
        Server("twisted", "Twisted wire.Echo (epoll)", "tcp", ref + ["twisted-tcp"]),
        Server("asyncio", "asyncio Protocol", "tcp", ref + ["asyncio-tcp"]),
        Server(
            "netservices",
            "netservices udp-echo",
            "udp",
            [twistd, "-n", "--pidfile=", "netservices", "udp-echo",
             "--listen", f"udp:0:interface={HOST}",
             "--rate", "1e9", "--burst", "1e9", "--global-rate", "0"],
            ready=listening,
        ),
        Server("twisted", "Twisted DatagramProtocol", "udp", ref + ["twisted-udp"]),
        Server("asyncio", "asyncio DatagramProtocol", "udp", ref + ["asyncio-udp"]),
    ]
    if withUvloop:
        result += [
            Server("uvloop", "uvloop Protocol", "tcp", ref + ["uvloop-tcp"]),
            Server("uvloop", "uvloop DatagramProtocol", "udp", ref + ["uvloop-udp"]),
        ]
    return result


class Running(ServerProcess):
    """One started server process, checked with one echo."""

    def __init__(self, server: Server, pin: list[str], workdir: Path, files: int,
                 extra: list[str] = ()) -> None:
        self.server = server
        logPath = workdir / f"{server.key}-{server.proto}-{time.monotonic_ns()}.log"
        super().__init__(pin + server.argv + list(extra), logPath, workdir, files=files)
        self.port = self._waitForPort()
        self._probe()

    def _waitForPort(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = self.server.ready.search(self.logPath.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise CellError(f"exited with status {self.process.returncode}: {self.tail()}")
            time.sleep(0.05)
        self.stop()
        raise CellError(f"did not report a port within 30 s: {self.tail()}")

    def _probe(self) -> None:
        payload = os.urandom(100)
        try:
            if self.server.proto == "tcp":
                with socket.create_connection((HOST, self.port), timeout=5) as s:
                    s.sendall(payload)
                    got = b""
                    while len(got) < len(payload):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(0.5)
                    s.connect((HOST, self.port))
                    got = b""
                    for _ in range(10):
                        s.send(payload)
                        try:
                            got = s.recv(4096)
                            break
                        except socket.timeout:
                            continue
        except OSError as e:
            self.stop()
            raise CellError(f"probe failed: {e}")
        if got != payload:
            self.stop()
            raise CellError("probe: the echo differs from what was sent")
        time.sleep(0.3)  # let the server see the probe's close


# ------------------------------------------------------------------- cells


@dataclass
class Cell:
    key: str
    proto: str
    mode: str
    size: int
    conns: int
    title: str
    extra: list[str] = field(default_factory=list)


TCP_CELLS = [
    Cell("pp1k", "tcp", "pingpong", 1024, 10, "TCP ping-pong, 10 connections, 1 KiB"),
    Cell("pp100k", "tcp", "pingpong", 102400, 10, "TCP ping-pong, 10 connections, 100 KiB"),
    Cell("stream", "tcp", "stream", 65536, 10,
         "TCP bulk stream, 10 connections, 64 KiB writes, <= 1 MiB in flight each",
         ["-i", str(1 << 20)]),
]
UDP_CELL = Cell("udp1k", "udp", "udp", 1024, 10,
                "UDP ping-pong, 10 sockets, 1 KiB, one datagram in flight each")


def runGenerator(args: list[str], pin: list[str], limit: float, files: int) -> dict:
    """Run echoload; its result (CellError unless ok)."""
    result = common.runLoadGenerator(GENERATOR, args, pin, limit, files)
    if not result.get("ok"):
        raise CellError(f"load generator: {result.get('error', 'failed')}")
    return result


def cpuFigures(result: dict) -> dict:
    """Server CPU per operation (or per MiB) and the CPU percentages."""
    server = result.get("srv_cpu_s", 0.0)
    operations = result.get("requests") or result.get("datagrams")
    perOp = {}
    if operations:
        perOp["srv_us_per_op"] = 1e6 * server / operations
    elif result.get("bytes"):
        perOp["srv_us_per_mib"] = 1e6 * server / (result["bytes"] / 1048576)
    return {**perOp, **cpuPercents(result)}


# -------------------------------------------------------------- the run


@dataclass
class Config:
    reps: int
    warmup: float
    duration: float
    idleConns: int
    udpTimeoutMs: float
    retryBudget: int


class Bench(BenchBase):
    noisyPercent = NOISY_OTHER_PERCENT

    def __init__(self, config: Config, servers: list[Server], pinned: bool,
                 workdir: Path, rawPath: Path) -> None:
        super().__init__(config, pinned, SERVER_CPU, GENERATOR_CPU, workdir, rawPath)
        self.servers = servers

    def record(self, server: Server, cell: str, rep: int, result: dict) -> None:
        self.save(dict(result, server=server.label, key=server.key, proto=server.proto,
                       cell=cell, rep=rep))

    def start(self, server: Server, files: int, extra: list[str] = ()) -> Running:
        self.running = Running(server, self.serverPin, self.workdir, files, extra)
        return self.running

    def measure(self, server: Server, running: Running, cell: Cell) -> dict:
        c = self.config
        args = ["-m", cell.mode, "-h", HOST, "-P", str(running.port), "-c", str(cell.conns),
                "-s", str(cell.size), "-w", str(c.warmup), "-d", str(c.duration),
                "-p", str(running.pid), "-t", str(c.udpTimeoutMs)] + cell.extra
        limit = c.warmup + c.duration + 20
        args += ["-T", str(limit)]

        def once() -> dict:
            result = runGenerator(args, self.generatorPin, limit, 256)
            result.update(cpuFigures(result))
            return result

        return self.quietest(once, pause=0.3)

    def runStreamCells(self, server: Server, rep: int) -> None:
        running = self.start(server, 1024)
        try:
            cells = TCP_CELLS if server.proto == "tcp" else [UDP_CELL]
            for cell in cells:
                try:
                    result = self.measure(server, running, cell)
                except CellError as e:
                    self.failures.append(f"rep {rep + 1}, {server.label}, {cell.key}: {e}")
                    progress(f"    {cell.key}: FAILED: {e}")
                    continue
                self.record(server, cell.key, rep, result)
                progress(f"    {cell.key}: {summary(cell.key, result)}")
                time.sleep(0.3)
        finally:
            self.stop()

    def runIdle(self, server: Server, rep: int, count: int) -> None:
        running = self.start(server, count + 256, server.idleArgv)
        try:
            args = ["-m", "idle", "-h", HOST, "-P", str(running.port), "-c", str(count),
                    "-p", str(running.pid), "-b", "50", "-T", "150"]
            try:
                result = runGenerator(args, self.generatorPin, 150, count + 256)
            except CellError as e:
                self.failures.append(f"rep {rep + 1}, {server.label}, idle: {e}")
                progress(f"    idle: FAILED: {e}")
                return
            result.update(cpuFigures(result))
            if result["established"] < count or result.get("error"):
                self.failures.append(
                    f"rep {rep + 1}, {server.label}, idle: {result['established']} of "
                    f"{count} connections ({result.get('error', '')})")
            self.record(server, "idle", rep, result)
            progress(f"    idle: {summary('idle', result)}")
        finally:
            self.stop()

    def run(self, idleCount: int) -> None:
        c = self.config
        self.checkMachine()
        tcp = [s for s in self.servers if s.proto == "tcp"]
        udp = [s for s in self.servers if s.proto == "udp"]
        for rep in range(c.reps):
            for group, kind in ((tcp, "tcp"), (udp, "udp"), (tcp, "idle")):
                for server in common.rotated(group, rep):
                    progress(f"rep {rep + 1}/{c.reps} {kind}: {server.label}")
                    try:
                        if kind == "idle":
                            self.runIdle(server, rep, idleCount)
                        else:
                            self.runStreamCells(server, rep)
                    except CellError as e:
                        self.failures.append(f"rep {rep + 1}, {server.label}: {e}")
                        progress(f"    FAILED: {e}")


def summary(cell: str, r: dict) -> str:
    cpu = f"cpu srv {r['srv_pct']:.0f}% gen {r['gen_pct']:.0f}% other {r['other_pct']:.0f}%"
    if cell.startswith("pp"):
        return f"{r['rps']:,.0f} req/s p50 {r['p50_us']:.0f} p99 {r['p99_us']:.0f} max {r['max_us']:.0f} us; {cpu}"
    if cell == "stream":
        return f"{r['mib_s']:,.0f} MiB/s; {cpu}"
    if cell.startswith("udp"):
        return f"{r['dps']:,.0f} dgram/s lost {r['lost']} bad {r['bad']}; {cpu}"
    return (f"{r['established']} conns, RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB, "
            f"{r.get('kib_per_conn', float('nan')):.2f} KiB/conn, connect {r['connect_s']:.1f} s")


# ---------------------------------------------------------------- report


def ratio(value, reference) -> str:
    r = ratioOf(value, reference)
    return "–" if r is None else f"**{r:.2f}×**"


class Report(ReportBase):
    def __init__(self, results: list[dict], servers: list[Server]) -> None:
        super().__init__(results)
        self.servers = servers

    def name(self, server: Server) -> str:
        return server.label

    def find(self, key: str, proto: str) -> Server | None:
        for s in self.servers:
            if s.key == key and s.proto == proto:
                return s
        return None

    def table(self, cell: Cell | str) -> list[str]:
        out = []
        if isinstance(cell, Cell) and cell.mode == "pingpong":
            ref = self.stat(self.find("twisted", "tcp"), cell.key, "rps")
            out += [f"**{cell.title}** (requests/s; latency per request in µs)", "",
                    "| server | req/s | × Twisted | p50 µs | p99 µs | max µs | server CPU µs/req | CPU % server / generator / other |",
                    "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for s in self.servers:
                if s.proto != "tcp":
                    continue
                rps = self.stat(s, cell.key, "rps")
                out.append(
                    f"| {s.label} | {fmtStats(rps)}{self.bound(s, cell.key)} | {ratio(rps, ref)} | "
                    f"{fmtStats(self.stat(s, cell.key, 'p50_us'))} | "
                    f"{fmtStats(self.stat(s, cell.key, 'p99_us'))} | "
                    f"{fmtStats(self.stat(s, cell.key, 'max_us'))} | "
                    f"{fmtStats(self.stat(s, cell.key, 'srv_us_per_op'), 1)} | {self.cpu(s, cell.key)} |")
        elif isinstance(cell, Cell) and cell.mode == "stream":
            ref = self.stat(self.find("twisted", "tcp"), cell.key, "mib_s")
            out += [f"**{cell.title}** (MiB/s echoed, one direction)", "",
                    "| server | MiB/s | × Twisted | server CPU µs/MiB | CPU % server / generator / other |",
                    "|---|---:|---:|---:|---:|"]
            for s in self.servers:
                if s.proto != "tcp":
                    continue
                v = self.stat(s, cell.key, "mib_s")
                out.append(f"| {s.label} | {fmtStats(v)}{self.bound(s, cell.key)} | {ratio(v, ref)} | "
                           f"{fmtStats(self.stat(s, cell.key, 'srv_us_per_mib'))} | {self.cpu(s, cell.key)} |")
        elif isinstance(cell, Cell) and cell.mode == "udp":
            ref = self.stat(self.find("twisted", "udp"), cell.key, "dps")
            out += [f"**{cell.title}** (datagrams/s; a datagram not answered within the "
                    "timeout counts as lost)", "",
                    "| server | datagrams/s | × Twisted | lost (sum) | bad (sum) | p50 µs | p99 µs | server CPU µs/datagram | CPU % server / generator / other |",
                    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for s in self.servers:
                if s.proto != "udp":
                    continue
                rows = self.rows(s, cell.key)
                v = self.stat(s, cell.key, "dps")
                lost = sum(r["lost"] for r in rows) if rows else None
                bad = sum(r["bad"] + r.get("refused", 0) for r in rows) if rows else None
                out.append(
                    f"| {s.label} | {fmtStats(v)}{self.bound(s, cell.key)} | {ratio(v, ref)} | "
                    f"{'–' if lost is None else lost} | {'–' if bad is None else bad} | "
                    f"{fmtStats(self.stat(s, cell.key, 'p50_us'))} | "
                    f"{fmtStats(self.stat(s, cell.key, 'p99_us'))} | "
                    f"{fmtStats(self.stat(s, cell.key, 'srv_us_per_op'), 1)} | {self.cpu(s, cell.key)} |")
        else:
            ref = self.stat(self.find("twisted", "tcp"), "idle", "kib_per_conn")
            counts = sorted({r["established"] for r in self.results if r["cell"] == "idle"})
            out += [f"**Idle connections** ({', '.join(fmt(c) for c in counts) or '–'} "
                    "held, each checked with a 1-byte echo before and after; server VmRSS)", "",
                    "| server | RSS before, MiB | RSS after, MiB | KiB per connection | × Twisted | connect time, s | answered after |",
                    "|---|---:|---:|---:|---:|---:|---:|"]
            for s in self.servers:
                if s.proto != "tcp":
                    continue
                rows = self.rows(s, "idle")
                before = stats([r["rss_before_kib"] / 1024 for r in rows])
                after = stats([r["rss_after_kib"] / 1024 for r in rows])
                per = self.stat(s, "idle", "kib_per_conn")
                answered = (f"{sum(r['answered'] for r in rows):,} / "
                            f"{sum(r['established'] for r in rows):,}") if rows else "–"
                out.append(
                    f"| {s.label} | {fmtStats(before, 1)} | {fmtStats(after, 1)} | "
                    f"{fmtStats(per, 2)} | {ratio(per, ref)} | "
                    f"{fmtStats(self.stat(s, 'idle', 'connect_s'), 1)} | {answered} |")
        return out + [""]

    def targets(self) -> list[str]:
        ns, tw, aio = (self.find(k, "tcp") for k in ("netservices", "twisted", "asyncio"))
        nsu, twu, aiou = (self.find(k, "udp") for k in ("netservices", "twisted", "asyncio"))
        lines = ["**Targets of the issue, next to what this run measured** (medians; "
                 "“ranges overlap” means the repetitions do not separate the two)", "",
                 "| target | measured | met? |", "|---|---|---|"]

        def compare(name: str, value, reference, factor: float = 1.0,
                    unit: str = "", lowerIsBetter: bool = False) -> None:
            if value is None or reference is None:
                lines.append(f"| {name} | not measured | – |")
                return
            v, r = value[0], reference[0] * factor
            ok = v <= r if lowerIsBetter else v >= r
            overlap = not (value[1] > reference[2] * factor or value[2] < reference[1] * factor)
            if unit == "×":
                shown = f"{value[0] / reference[0]:.2f}× (needs {factor:g}×)"
            else:
                shown = f"{fmt(v)} vs {fmt(reference[0])}{unit}"
            verdict = "yes" if ok else "**no**"
            if overlap:
                verdict += " (ranges overlap)"
            lines.append(f"| {name} | {shown} | {verdict} |")

        compare("tcp-echo 1 KiB req/s ≥ 1.6× stock Twisted",
                self.stat(ns, "pp1k", "rps"), self.stat(tw, "pp1k", "rps"), 1.6, "×")
        compare("tcp-echo 1 KiB req/s ≥ asyncio Protocol",
                self.stat(ns, "pp1k", "rps"), self.stat(aio, "pp1k", "rps"), 1.0, "×")
        compare("tcp-echo p99 ≤ stock Twisted, 1 KiB",
                self.stat(ns, "pp1k", "p99_us"), self.stat(tw, "pp1k", "p99_us"),
                unit=" µs", lowerIsBetter=True)
        compare("tcp-echo p99 ≤ stock Twisted, 100 KiB",
                self.stat(ns, "pp100k", "p99_us"), self.stat(tw, "pp100k", "p99_us"),
                unit=" µs", lowerIsBetter=True)
        maxima = [r["max_us"] for r in self.rows(ns, "pp100k")] if ns else []
        if maxima:
            worst = max(maxima)
            lines.append(f"| tcp-echo: no latency > 20 ms at 100 KiB | max {worst / 1000:.1f} ms "
                         f"(worst of {len(maxima)} runs; stock Twisted: "
                         f"{max([r['max_us'] for r in self.rows(tw, 'pp100k')] or [0]) / 1000:.1f} ms) | "
                         f"{'yes' if worst <= 20000 else '**no**'} |")
        else:
            lines.append("| tcp-echo: no latency > 20 ms at 100 KiB | not measured | – |")
        per = self.stat(ns, "idle", "kib_per_conn")
        if per:
            lines.append(f"| tcp-echo idle memory ≤ 1.5 KiB RSS per connection | "
                         f"{per[0]:.2f} KiB [{per[1]:.2f}–{per[2]:.2f}] | "
                         f"{'yes' if per[0] <= 1.5 else '**no**'}"
                         f"{' (range crosses 1.5)' if per[1] <= 1.5 < per[2] else ''} |")
        else:
            lines.append("| tcp-echo idle memory ≤ 1.5 KiB RSS per connection | not measured | – |")
        compare("udp-echo datagrams/s ≥ stock Twisted",
                self.stat(nsu, "udp1k", "dps"), self.stat(twu, "udp1k", "dps"), 1.0, "×")
        compare("udp-echo datagrams/s ≥ 2× asyncio datagram server",
                self.stat(nsu, "udp1k", "dps"), self.stat(aiou, "udp1k", "dps"), 2.0, "×")
        return lines + [""]


def machineInfo() -> dict:
    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = None
    return {"nproc": len(os.sched_getaffinity(0)), **common.machineInfo(), "uvloop": uv}


def render(bench: Bench, config: Config, info: dict, notes: list[str], started: datetime.datetime,
           elapsed: float, idleCount: int, pinned: bool, quick: bool) -> str:
    report = Report(bench.results, bench.servers)
    uv = f", uvloop {info['uvloop']}" if info["uvloop"] else ", uvloop not installed (skipped)"
    lines = [
        f"### Echo benchmarks, {started:%Y-%m-%d %H:%M} UTC{' (--quick: smoke run, not for comparison)' if quick else ''}",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, Twisted {info['twisted']}{uv}; `ulimit -n` {info['nofile']}.",
        "",
        f"Method: `python benchmarks/run.py{' --quick' if quick else ''}`; {config.reps} repetition(s), "
        "every server started afresh for each (in a rotating order); per cell "
        f"{config.warmup:g} s warm-up, then {config.duration:g} s measured. "
        + common.pinningSentence(pinned, SERVER_CPU, GENERATOR_CPU)
        + "Load generator: `benchmarks/echoload.c` (C, epoll, one thread, TCP_NODELAY, every "
        "echoed byte verified, every latency recorded). Values are median [min–max] over the "
        "repetitions; × = ratio of medians to stock Twisted in this run. CPU: % of one core "
        "used during the measured window by the server (/proc/PID/stat), the generator "
        "(rusage) and everything else on the machine (busy time from /proc/stat's idle counters minus both; medians). "
        f"A cell whose “other” exceeded {NOISY_OTHER_PERCENT:g} % " + bench.retrySentence()
        + " Each server is checked with one echo before its cells (as a served-before server; "
        "without it stock Twisted's idle RSS is ~0.7 KiB/connection higher, CPython's key-sharing instance dicts). "
        "Differences under ~20 % are within this machine's run-to-run noise.",
        "",
        "Servers: `twistd -n --pidfile= netservices tcp-echo --listen tcp:0:interface=127.0.0.1` "
        "(defaults: eager writes, TCP_NODELAY, connection limits; for the idle cell "
        "`--max-connections 0 --max-per-peer 0`, as the defaults allow 1,000 connections, "
        "10 per peer); `twistd -n --pidfile= netservices udp-echo --listen "
        "udp:0:interface=127.0.0.1 --rate 1e9 --burst 1e9 --global-rate 0` (**rate limits "
        "raised**: by default udp-echo answers 20 datagrams/s per source prefix); references "
        "from `benchmarks/servers.py`: Twisted `wire.Echo` on the default epoll reactor, a "
        "Twisted `DatagramProtocol` echo with `maxPacketSize=65535`, asyncio and uvloop "
        "`Protocol`/`DatagramProtocol` echoes.",
        "",
    ]
    lines += report.targets()
    for cell in TCP_CELLS:
        lines += report.table(cell)
    lines += report.table(UDP_CELL)
    lines += report.table("idle")
    notes = [f"† the load generator's core was ≥ {GENERATOR_BOUND_PERCENT:g} % busy: that server may "
             "be faster than shown (one C client core is the limit, not the server)."] + list(notes)
    notes += [f"failed: {f}" for f in bench.failures]
    lines += common.footer(notes, elapsed)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- setup


def idleCountFor(wanted: int, notes: list[str]) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = wanted
    if hard != resource.RLIM_INFINITY and hard - 256 < count:
        count = max(100, hard - 256)
        notes.append(f"idle cell: {wanted:,} connections impossible (hard `ulimit -n` is "
                     f"{hard}); used {count:,}.")
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        ports = high - low + 1
        if ports - 500 < count:
            count = ports - 500
            notes.append(f"idle cell: only {ports:,} ephemeral ports; used {count:,} connections.")
    except (OSError, ValueError):
        pass
    return count


def parseArgs(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Echo benchmarks: netservices tcp-echo/udp-echo against stock Twisted, "
                    "asyncio and uvloop (see the module docstring).")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repetition, short cells, 1,000 idle connections")
    common.addTimingArguments(parser)
    parser.add_argument("--idle-connections", type=int,
                        help="connections for the idle cell (default 10000)")
    parser.add_argument("--no-uvloop", action="store_true", help="skip uvloop even if installed")
    parser.add_argument("--only", help="comma-separated server keys to run: "
                        "netservices,twisted,asyncio,uvloop")
    args = parser.parse_args(argv)
    common.checkRange(parser, args.reps, 1, 50, "--reps")
    common.checkSeconds(parser, args)
    common.checkRange(parser, args.idle_connections, 1, 100000, "--idle-connections")
    args.only = common.parseOnly(parser, args.only, ("netservices", "twisted", "asyncio", "uvloop"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parseArgs(argv)
    quick = args.quick
    config = Config(
        **common.timing(args),
        idleConns=args.idle_connections or (1000 if quick else 10000),
        udpTimeoutMs=100.0,
        retryBudget=2 if quick else 24,
    )
    notes: list[str] = []
    twistd = common.prepare(SOURCE, "twisted", "netservices")
    withUvloop = False
    if not args.no_uvloop:
        withUvloop = importlib.util.find_spec("uvloop") is not None
        if not withUvloop:
            notes.append("uvloop is not installed for this Python: its servers were skipped.")
    pinned = common.pinning(SERVER_CPU, GENERATOR_CPU, notes)
    chosen = servers(sys.executable, twistd, withUvloop)
    if args.only:
        chosen = [s for s in chosen if s.key in args.only]
    idleCount = idleCountFor(config.idleConns, notes)
    info = machineInfo()
    started, mdPath, rawPath = common.outputPaths("results")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="echobench-") as tmp, \
            Bench(config, chosen, pinned, Path(tmp), rawPath) as bench:
        bench.run(idleCount)
    elapsed = time.monotonic() - t0
    text = render(bench, config, info, notes, started, elapsed, idleCount, pinned, quick)
    common.publish(text, mdPath, rawPath)
    return 0


if __name__ == "__main__":
    common.runMain(main, "run.py")
