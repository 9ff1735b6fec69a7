"""
Chat benchmarks: the netservices IRC server (`twistd netservices chat`)
measured side by side with stock Twisted Words and, when installed, the
Debian packages of ngIRCd and InspIRCd.

    python benchmarks/chat.py              # 3 repetitions, about 13 minutes
    python benchmarks/chat.py --quick      # smoke run, 1 repetition, short cells
    python benchmarks/chat.py --repeat 5 --only ours,ngircd --json out.json
    python benchmarks/chat.py --cluster    # the cluster cells alone, about 5 minutes

Run it from the repository root with the development virtualenv active.  It
compiles the load generator benchmarks/chatload.c with `gcc -O2 -Wall` into
benchmarks/build/ (git-ignored) on first use, starts every server afresh for
each repetition (and once more for the idle cell), pins the server to CPU 0
and the generator to CPU 1 with taskset, and prints Markdown tables: medians
with [min-max] over the repetitions, the CPU used by the server and the
generator, errors, and the targets of the performance issue as ratios (shown,
never asserted).  Progress goes to stderr; the tables and the raw results are
also saved in benchmarks/build/.  Only 127.0.0.1 is used; every generator run
has a hard deadline.

Cells (a message completes when all N-1 other members received it; latency
is send -> last receipt): fan-out N=50 S=50 W=1, N=50 S=1 W=16, N=500 S=500
W=1, N=500 S=1 W=1 (N members of #bench, S senders each keeping up to W
messages in flight); private messages, 50 pairs, W=1 (round trips); idle,
5,000 registered clients (server VmRSS before the first connect and 1 s after
the last 001).  Lines are 100-byte PRIVMSGs.  The C servers' flood limits are
raised (configs written to a temporary directory) so that the figures
compare throughput; ours runs with --flood-rate 0; Twisted Words has no
flood control.

Cluster cells (issue #11): the two N=500 fan-out cells again on clusters of
1, 2 and 4 nodes (`--cluster redis://127.0.0.1:PORT/0 --node-name nK`, the
single node's options, one --data-dir shared by the nodes) with a
redis-server of their own (a temporary directory, `--save ''
--appendonly yes --appendfsync everysec`, a free loopback port), started
afresh for each repetition; the generator connects client i to node i mod K,
once every node has logged that every node joined.  The nodes and Redis
share the server's CPUs (with 2 CPUs: all of them on CPU 0, the generator
alone on CPU 1); the CPU figures are theirs summed.  `--cluster` runs these
cells and the single node's alone; `--only` takes `cluster` as a server.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import common
from common import (
    BUILD,
    GENERATOR_BOUND_PERCENT,
    HERE,
    HOST,
    BenchBase,
    BenchError,
    CellError,
    ReportBase,
    ServerProcess,
    cpuPercents,
    cpuSeconds,
    fmt,
    fmtStats,
    progress,
    ratioOf,
    stats,
)

SOURCE = HERE / "chatload.c"
GENERATOR = BUILD / "chatload"
WORDS_TAC = HERE / "twisted_words.tac"
SERVER_CPU, GENERATOR_CPU = 0, 1
# A cell during which the rest of the machine (other tenants; loopback softirq
# time also lands here, 10-35 % in the C servers' busiest cells) used more than
# this much of a core is measured again, up to common.MAX_ATTEMPTS times.
NOISY_OTHER_PERCENT = 40.0
NOFILE = 20000  # soft RLIMIT_NOFILE wanted for the servers and the generator
LINE = 100  # bytes per PRIVMSG line sent, CRLF included
NICK_PREFIX = "cb"  # nicks cb0, cb1, ...; the Twisted Words tac knows cb0..cb19999
PROBE_NICK = "cbprobe"
REG_LIMIT = 40.0  # seconds allowed for registering and joining in one cell
C_KEYS = ("ngircd", "inspircd")
CLUSTER_SIZES = (1, 2, 4)
JOIN_LIMIT = 60.0  # seconds for every node of a cluster to log every node's joining
# Redis as the cluster's docs ask: persistence by append-only file.
REDIS_OPTIONS = ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
# What in a node's log shows trouble (Twisted's log levels, tracebacks).
LOG_TROUBLE = ("#warn]", "#error]", "#critical]", "Traceback", "Unhandled")


# ------------------------------------------------------------------ cells


@dataclass(frozen=True)
class Cell:
    key: str
    mode: str  # fanout or pm
    clients: int  # fanout: members; pm: pairs
    senders: int
    window: int
    title: str
    # Stock Twisted Words needs ~1.6 s per round of 500 messages to 500
    # members: shorter warm-ups and windows see no message complete.
    minWarmup: float = 0.0
    minDuration: float = 0.0

    @property
    def connections(self) -> int:
        return self.clients if self.mode == "fanout" else 2 * self.clients


FANOUT_CELLS = [
    Cell("fan-50x50", "fanout", 50, 50, 1, "fanout N=50 S=50 W=1"),
    Cell("fan-50x1w16", "fanout", 50, 1, 16, "fanout N=50 S=1 W=16"),
    Cell("fan-500x500", "fanout", 500, 500, 1, "fanout N=500 S=500 W=1", 2.0, 3.0),
    Cell("fan-500x1", "fanout", 500, 1, 1, "fanout N=500 S=1 W=1"),
]
PM_CELL = Cell("pm-50", "pm", 50, 50, 1, "pm pairs=50 W=1")
LOAD_CELLS = FANOUT_CELLS + [PM_CELL]
CLUSTER_CELLS = [cell for cell in FANOUT_CELLS if cell.clients == 500]


# ---------------------------------------------------------------- servers


@dataclass
class ServerSpec:
    key: str  # ours, cluster1 (2, 4), twisted, ngircd, inspircd
    label: str
    batch: int  # registrations in flight
    password: str | None = None
    version: str = ""
    skip: str | None = None  # reason when not run
    binary: str = ""  # the C servers' executable; a cluster's redis-server
    nodes: int = 0  # a cluster of ours with this many nodes; 0: not a cluster

    @property
    def group(self) -> str:
        """What --only calls it."""
        return "cluster" if self.nodes else self.key

    def command(self, port: int, workdir: Path, twistd: str,
                node: tuple[str, str] | None = None) -> tuple[list[str], dict]:
        """The server's argv and environment; node: (Redis URL, node name) in a cluster."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.key == "ours" or self.nodes:
            data = workdir / f"{self.key}-data"  # shared by the nodes of a cluster
            data.mkdir(exist_ok=True)
            cluster = ["--cluster", node[0], "--node-name", node[1]] if node else []
            return ([twistd, "-n", "--pidfile=", "netservices", "chat",
                     "--listen", f"tcp:{port}:interface={HOST}", "--data-dir", str(data),
                     "--max-connections", "0", "--max-per-peer", "0", "--flood-rate", "0",
                     "--sendq", "4194304"] + cluster, env)
        if self.key == "twisted":
            env["CHATBENCH_PORT"] = str(port)
            return [twistd, "-n", "--pidfile=", "-y", str(WORDS_TAC)], env
        if self.key == "ngircd":
            conf = workdir / f"ngircd-{port}.conf"
            conf.write_text(NGIRCD_CONF.format(port=port, dir=workdir))
            return [self.binary, "-n", "-f", str(conf)], env
        if self.key == "inspircd":
            motd = workdir / "inspircd.motd"
            motd.write_text("chat benchmark\n")
            conf = workdir / f"inspircd-{port}.conf"
            conf.write_text(INSPIRCD_CONF.format(port=port, dir=workdir, softlimit=NOFILE - 1000))
            return [self.binary, "--nofork", "--runasroot", f"--config={conf}"], env
        raise AssertionError(self.key)


# ngIRCd: penalties off (MaxPenaltyTime 0), no connection/join limits, pings
# every 10 minutes, no DNS/ident lookups; runs as nobody after binding.
NGIRCD_CONF = """\
[Global]
\tName = bench.local
\tInfo = chat benchmark
\tAdminInfo1 = chat benchmark
\tAdminInfo2 = localhost
\tAdminEMail = bench@localhost
\tListen = 127.0.0.1
\tPorts = {port}
\tMotdPhrase = "chat benchmark"
\tPidFile = {dir}/ngircd-{port}.pid
\tServerUID = nobody
\tServerGID = nogroup
[Limits]
\tMaxConnections = 0
\tMaxConnectionsIP = 0
\tMaxJoins = 0
\tMaxPenaltyTime = 0
\tPingTimeout = 600
\tPongTimeout = 600
[Options]
\tDNS = no
\tIdent = no
\tPAM = no
"""

# InspIRCd 3: one connect class with flood limits out of the way (threshold,
# commandrate, fakelag), large send/receive queues, no connection limits, no
# host resolution or ident; core modules only.
INSPIRCD_CONF = """\
<server name="bench.local" description="chat benchmark" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="bench" allow="*" timeout="60" pingfreq="600"
         threshold="1000000" commandrate="1000000000" fakelag="off"
         hardsendq="64M" softsendq="1M" recvq="1M"
         localmax="100000" globalmax="100000" limit="100000"
         resolvehostnames="no" useident="no">
<performance softlimit="{softlimit}" somaxconn="4096" netbuffersize="65536" quietbursts="yes">
<files motd="{dir}/inspircd.motd">
<pid file="{dir}/inspircd-{port}.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{dir}/inspircd-{port}.log">
<dns server="127.0.0.1" timeout="1">
<options syntaxhints="no">
"""


def packageVersion(name: str) -> str:
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def findBinary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/local/sbin") / name) if p.exists()),
        None)


def serverSpecs(twistd: str) -> list[ServerSpec]:
    import twisted

    ours = ServerSpec("ours", "netservices chat", 50)
    try:
        import netservices

        ours.version = getattr(netservices, "__version__", "")
    except ImportError:
        pass
    try:
        done = subprocess.run([twistd, "netservices", "chat", "--help"], capture_output=True,
                              text=True, timeout=120, cwd=tempfile.gettempdir())
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
            ours.skip = (f"`twistd netservices chat --help` exited {done.returncode}, "
                         "so the chat service is missing or broken"
                         + (f" ({last[0][:150]})" if last else ""))
    except (OSError, subprocess.TimeoutExpired) as e:
        ours.skip = f"`twistd netservices chat --help` failed: {e}"
    twisted_ = ServerSpec("twisted", "Twisted Words (stock)", 50, password="p",
                          version=twisted.__version__)
    specs = [ours] + clusterSpecs(ours) + [twisted_]
    # ngIRCd's listen backlog is 10: more connects in flight overflow it (the
    # kernel drops the final ACKs) and registration stalls.
    ng = ServerSpec("ngircd", "ngIRCd", 10)
    # InspIRCd registers clients on a 1-second timer: many in flight at once.
    insp = ServerSpec("inspircd", "InspIRCd", 1000)
    for spec, package in ((ng, "ngircd"), (insp, "inspircd")):
        binary = findBinary(package)
        if binary is None:
            spec.skip = (f"not installed (Debian package `{package}`: "
                         f"`apt-get install {package}`; its service need not run)")
        else:
            spec.binary = binary
            spec.version = packageVersion(package)
        specs.append(spec)
    return specs


def clusterSpecs(ours: ServerSpec) -> list[ServerSpec]:
    """Clusters of ours with 1, 2, 4 nodes, each with a redis-server of its own."""
    redis = findBinary("redis-server")
    skip = ours.skip
    if skip is None and redis is None:
        skip = "redis-server not installed (Debian package `redis-server`)"
    if skip is None and importlib.util.find_spec("hiredis") is None:
        skip = "hiredis (needed by --cluster) is not importable"
    version = ""
    if redis is not None:
        try:
            done = subprocess.run([redis, "--version"], capture_output=True, text=True,
                                  timeout=10)
            version = next((w[2:] for w in done.stdout.split() if w.startswith("v=")), "")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return [ServerSpec(f"cluster{k}", f"cluster of {k} node{'s' if k > 1 else ''}", ours.batch,
                       version=f"{ours.version}, Redis {version}".strip(", "), skip=skip,
                       binary=redis or "", nodes=k)
            for k in CLUSTER_SIZES]


def clusterCpus(nodes: int) -> tuple[list[int], int]:
    """
    The CPUs of a cluster's nodes and of its redis-server: the CPUs usable
    here but the generator's, the server's first, taken in turn (shared
    when there are fewer than nodes + 1).
    """
    others = sorted(os.sched_getaffinity(0) - {GENERATOR_CPU}, key=lambda c: (c != SERVER_CPU, c))
    return [others[k % len(others)] for k in range(nodes)], others[nodes % len(others)]


def placement(spec: ServerSpec, pinned: bool) -> str:
    """Which CPUs the processes of spec got, in words."""
    if not pinned:
        return f"{spec.label}: not pinned"
    if not spec.nodes:
        return f"{spec.label} on CPU {SERVER_CPU}"
    nodes, redis = clusterCpus(spec.nodes)
    byCpu: dict[int, list[str]] = {}
    for k, cpu in enumerate(nodes):
        byCpu.setdefault(cpu, []).append(f"n{k + 1}")
    byCpu.setdefault(redis, []).append("redis-server")
    parts = [(f"{', '.join(names[:-1])} and {names[-1]} share" if len(names) > 1 else
              f"{names[0]} on") + f" CPU {cpu}" for cpu, names in byCpu.items()]
    return f"{spec.label}: " + ", ".join(parts)


def freePort() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def waitForPort(server: ServerProcess, port: int) -> None:
    """Until server (alive) accepts connections on port, at most 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not server.alive():
            raise CellError(f"exited with status {server.process.returncode}: {server.tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise CellError(f"not listening on {HOST}:{port} after 60 s: {server.tail()}")


class Instance:
    """
    What the cells use of a started server, one process or a cluster: its
    ports and PIDs (ports, pids), fresh nicks, waiting until it is idle.
    """

    nextNick = 0
    ports: list[int]
    pids: list[int]

    def nicks(self, count: int) -> int:
        """Reserve count fresh nicks on this instance; returns the first index."""
        first = self.nextNick
        self.nextNick += count
        return first

    def quiesce(self, limit: float = 10.0) -> float:
        """Wait until the server is idle (< 5 % CPU a process over 0.2 s), at most limit s."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            try:
                a = sum(map(cpuSeconds, self.pids))
                time.sleep(0.2)
                b = sum(map(cpuSeconds, self.pids))
            except OSError:
                break
            if b - a < 0.01 * len(self.pids):
                break
        return time.monotonic() - t0


class Running(ServerProcess, Instance):
    """
    One started server process, answering registrations; with node (Redis
    URL, node name), a node of a cluster, ready once ready() returned.
    """

    tailWidth = 200

    def __init__(self, spec: ServerSpec, pin: list[str], workdir: Path, twistd: str,
                 node: tuple[str, str] | None = None) -> None:
        self.spec = spec
        self.port = freePort()
        self.ports, self.probeNick = [self.port], PROBE_NICK
        argv, env = spec.command(self.port, workdir, twistd, node)
        name = node[1] if node else spec.key
        super().__init__(pin + argv, workdir / f"{name}-{self.port}.log", workdir, env=env,
                         files=NOFILE, newSession=True)
        self.pids = [self.pid]
        if node is None:
            self.ready()

    def ready(self, joined: list[str] = ()) -> None:
        """Until it listens, has logged that every node of joined joined, and registers a client."""
        try:
            waitForPort(self, self.port)
            self._waitForJoined(joined)
            self._probe()
        except BaseException:
            self.stop()
            raise

    def _waitForJoined(self, names: list[str]) -> None:
        deadline = time.monotonic() + JOIN_LIMIT
        while names:
            text = self.logPath.read_text(errors="replace")
            missing = [n for n in names if f"cluster: node {n} joined" not in text]
            if not missing:
                return
            if not self.alive():
                raise CellError(f"exited with status {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise CellError(f"{self.logPath.stem} did not log that {', '.join(missing)} "
                                f"joined within {JOIN_LIMIT:g} s: {self.tail()}")
            time.sleep(0.1)

    def _probe(self) -> float:
        """Register one client (001) and quit: the server works, and has served."""
        t0 = time.monotonic()
        deadline = t0 + 15
        lines = []
        try:
            with socket.create_connection((HOST, self.port), timeout=5) as s:
                hello = f"PASS {self.spec.password}\r\n" if self.spec.password else ""
                hello += f"NICK {self.probeNick}\r\nUSER {self.probeNick} 0 * :probe\r\n"
                s.sendall(hello.encode())
                buf = b""
                while time.monotonic() < deadline:
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                    *complete, buf = buf.split(b"\n")
                    for raw in complete:
                        line = raw.decode(errors="replace").rstrip("\r")
                        lines.append(line)
                        parts = line.split()
                        if parts and parts[0] == "PING":
                            s.sendall(f"PONG {' '.join(parts[1:])}\r\n".encode())
                        if len(parts) > 1 and parts[1] == "001":
                            elapsed = time.monotonic() - t0
                            s.sendall(b"QUIT :probe done\r\n")
                            time.sleep(0.2)
                            return elapsed
        except OSError as e:
            raise CellError(f"registration probe failed: {e}")
        raise CellError("registration probe: no 001 within 15 s; got: "
                        + " | ".join(lines[-3:])[:300])



class Cluster(Instance):
    """
    A redis-server (a temporary directory, a free loopback port) and
    spec.nodes chat nodes using it, each pinned with its own taskset
    prefix; ready when every node has logged every node's joining and
    registered a client.  Stopped (by PID) nodes first, then Redis.
    """

    def __init__(self, spec: ServerSpec, nodePins: list[list[str]], redisPin: list[str],
                 workdir: Path, twistd: str) -> None:
        self.spec = spec
        self.dir = Path(tempfile.mkdtemp(prefix=f"{spec.key}-", dir=workdir))
        self.redisPort = freePort()
        self.nodes: list[Running] = []
        self.redis = ServerProcess(
            redisPin + [spec.binary, "--port", str(self.redisPort), "--bind", HOST,
                        "--dir", str(self.dir)] + REDIS_OPTIONS,
            self.dir / "redis.log", self.dir, newSession=True)
        try:
            waitForPort(self.redis, self.redisPort)
            url = f"redis://{HOST}:{self.redisPort}/0"
            names = [f"n{k + 1}" for k in range(spec.nodes)]
            for name, pin in zip(names, nodePins):
                self.nodes.append(Running(spec, pin, self.dir, twistd, (url, name)))
            for k, node in enumerate(self.nodes):
                node.probeNick = f"{PROBE_NICK}{k + 1}"
                node.ready(names)
        except BaseException:
            self.stop()
            raise
        self.ports = [node.port for node in self.nodes]
        self.pids = [node.pid for node in self.nodes] + [self.redis.pid]

    def alive(self) -> bool:
        return self.redis.alive() and all(node.alive() for node in self.nodes)

    @property
    def process(self):
        """The first process that exited (for its status), else Redis."""
        return next((p.process for p in self.nodes + [self.redis] if not p.alive()),
                    self.redis.process)

    def tail(self) -> str:
        down = [p for p in self.nodes + [self.redis] if not p.alive()] or self.nodes
        return " || ".join(f"{p.logPath.stem}: {p.tail()}" for p in down)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    def trouble(self) -> list[str]:
        """The lines of the nodes' logs that show warnings, errors or tracebacks."""
        lines = []
        for node in self.nodes:
            try:
                text = node.logPath.read_text(errors="replace").splitlines()
            except OSError:
                continue
            lines += [f"{node.logPath.stem}: {line.strip()[:300]}" for line in text
                      if any(mark in line for mark in LOG_TROUBLE)]
        return lines


# ------------------------------------------------------------------- run


@dataclass
class Config:
    reps: int
    settle: float
    warmup: float
    duration: float
    idleClients: int
    retryBudget: int  # re-measurements of noisy cells allowed per run
    clusterOnly: bool = False  # --cluster: the cluster cells and the single node's alone


def errorCount(result: dict) -> int:
    return sum(int(result.get(k, 0)) for k in
               ("closed", "error_lines", "err_numerics", "misorder", "stray", "bad"))


class Bench(BenchBase):
    noisyPercent = NOISY_OTHER_PERCENT

    def __init__(self, config: Config, specs: list[ServerSpec], pinned: bool, workdir: Path,
                 twistd: str, rawPath: Path) -> None:
        super().__init__(config, pinned, SERVER_CPU, GENERATOR_CPU, workdir, rawPath)
        self.specs = specs
        self.twistd = twistd
        self.pinned = pinned
        self.logTrouble: list[str] = []  # the clusters' node log lines that show trouble

    def record(self, spec: ServerSpec, cell: str, rep: int, result: dict) -> None:
        row = dict(result, server=spec.key, label=spec.label, cell=cell, rep=rep)
        if "srv_pct" not in row:
            row.update(cpuPercents(result))
        row["errors"] = errorCount(result)
        self.save(row)

    def fail(self, spec: ServerSpec, cell: str, rep: int, message: str) -> None:
        self.failures.append(f"rep {rep + 1}, {spec.label}, {cell}: {message}")
        progress(f"    {cell}: FAILED: {message}")

    def start(self, spec: ServerSpec) -> Running | Cluster:
        if spec.nodes:
            nodes, redis = clusterCpus(spec.nodes) if self.pinned else ([None] * spec.nodes, None)
            pin = common.taskset if self.pinned else (lambda cpu: [])
            self.running = Cluster(spec, [pin(cpu) for cpu in nodes], pin(redis), self.workdir,
                                   self.twistd)
        else:
            self.running = Running(spec, self.serverPin, self.workdir, self.twistd)
        return self.running

    def cells(self, spec: ServerSpec) -> list[Cell]:
        """The load cells of spec in this run."""
        return CLUSTER_CELLS if spec.nodes or self.config.clusterOnly else LOAD_CELLS

    def generate(self, args: list[str], limit: float) -> dict:
        """Run chatload (at most limit s); its result, ok or not."""
        return common.runLoadGenerator(GENERATOR, args + ["-T", f"{limit:.0f}"],
                                       self.generatorPin, limit, NOFILE)

    def runCell(self, spec: ServerSpec, running: Running | Cluster, cell: Cell) -> dict:
        """One generator run of cell; the result, with CPU percentages added."""
        c = self.config
        warmup, duration = max(c.warmup, cell.minWarmup), max(c.duration, cell.minDuration)
        first = running.nicks(cell.connections)
        args = ["-m", cell.mode, "-h", HOST, "-P", ",".join(map(str, running.ports)),
                "-c", str(cell.clients),
                "-S", str(cell.senders), "-W", str(cell.window), "-s", str(LINE),
                "-e", str(c.settle), "-w", str(warmup), "-d", str(duration),
                "-b", str(spec.batch), "-R", str(REG_LIMIT), "-x", NICK_PREFIX,
                "-o", str(first), "-p", ",".join(map(str, running.pids))]
        if spec.password:
            args += ["-a", spec.password]
        limit = REG_LIMIT + c.settle + warmup + duration + 15
        result = self.generate(args, limit)
        result.update(cpuPercents(result))
        if result.get("msgs") and "srv_cpu_s" in result:
            result["srv_us_per_msg"] = 1e6 * result["srv_cpu_s"] / result["msgs"]
        if spec.nodes and result.get("srv_cpu_each_s"):  # Redis is the last PID
            result["redis_pct"] = 100 * result["srv_cpu_each_s"][-1] / result["wall_s"]
        return result

    def attempt(self, spec: ServerSpec, running: Running | Cluster, cell: Cell,
                rep: int) -> dict | None:
        """One run of cell on a quiet server; None (the failure recorded) if impossible."""
        if not running.alive():
            return None
        running.quiesce()
        try:
            return self.runCell(spec, running, cell)
        except CellError as e:
            self.fail(spec, cell.title, rep, str(e))
            return None

    def runLoad(self, spec: ServerSpec, rep: int) -> None:
        failures = len(self.failures)
        running = self.start(spec)
        try:
            for cell in self.cells(spec):
                best = self.quietest(functools.partial(self.attempt, spec, running, cell, rep),
                                     f"{cell.title}: ")
                if not running.alive():
                    self.fail(spec, cell.title, rep,
                              f"server exited ({running.process.returncode}): {running.tail()}")
                    break
                if best is None:
                    continue
                if best.get("registered"):
                    self.record(spec, cell.key, rep, best)
                if best.get("ok"):
                    progress(f"    {cell.title}: {summary(cell, self.results[-1])}")
                else:
                    self.fail(spec, cell.title, rep,
                              best.get("first_error") or best.get("error") or "failed")
        finally:
            # Before the stop: a stopping node's peers may warn that it stopped heartbeating.
            trouble = running.trouble() if spec.nodes else []
            self.stop()
            if spec.nodes:
                self.keepLogs(spec, running, rep, failures, trouble)

    def keepLogs(self, spec: ServerSpec, cluster: Cluster, rep: int, failures: int,
                 trouble: list[str]) -> None:
        """Note the node log lines that show trouble; with any, or failures, keep the logs."""
        self.logTrouble += [f"rep {rep + 1}, {spec.label}, {line}" for line in trouble]
        if trouble or len(self.failures) > failures:
            kept = BUILD / f"{Path(self.raw.name).stem}-{spec.key}-rep{rep + 1}"
            kept.mkdir(exist_ok=True)
            for log in cluster.dir.glob("*.log"):
                shutil.copy(log, kept)
            progress(f"    node logs kept in {kept}")

    def runIdle(self, spec: ServerSpec, rep: int) -> None:
        count = self.config.idleClients
        running = self.start(spec)
        try:
            running.quiesce()
            args = ["-m", "idle", "-h", HOST, "-P", str(running.port), "-c", str(count),
                    "-b", str(spec.batch), "-R", "90", "-x", NICK_PREFIX,
                    "-o", str(running.nicks(count)), "-p", str(running.pid)]
            if spec.password:
                args += ["-a", spec.password]
            try:
                result = self.generate(args, 120)
            except CellError as e:
                self.fail(spec, "idle", rep, str(e))
                return
            if result.get("registered"):
                self.record(spec, "idle", rep, result)
                progress(f"    idle N={count}: {summary(None, self.results[-1])}")
            if not result.get("ok"):
                self.fail(spec, "idle", rep,
                          result.get("first_error") or result.get("error") or "failed")
        finally:
            self.stop()

    def run(self) -> None:
        self.checkMachine()
        active = [s for s in self.specs if s.skip is None]
        for rep in range(self.config.reps):
            for kind in ("load",) if self.config.clusterOnly else ("load", "idle"):
                for spec in common.rotated(active, rep):
                    if kind == "idle" and spec.nodes:
                        continue
                    progress(f"rep {rep + 1}/{self.config.reps} {kind}: {spec.label}")
                    try:
                        if kind == "load":
                            self.runLoad(spec, rep)
                        else:
                            self.runIdle(spec, rep)
                    except CellError as e:
                        self.fail(spec, kind, rep, f"server: {e}")


def summary(cell: Cell | None, r: dict) -> str:
    errors = f"errors {r['errors']}"
    if cell is None:
        return (f"{r['registered']} registered in {r['reg_s']:.2f} s, RSS {r['rss_before_kib']} -> "
                f"{r['rss_after_kib']} KiB, {r.get('kib_per_conn', float('nan')):.2f} KiB/conn; "
                f"{errors}")
    if "msgs_s" not in r:
        return errors
    cpu = f"cpu srv {r['srv_pct']:.0f}% gen {r['gen_pct']:.0f}% other {r['other_pct']:.0f}%"
    what = ("deliveries/s " + f"{r['deliveries_s']:,.0f}, msgs/s {r['msgs_s']:,.0f}"
            if cell.mode == "fanout" else f"round trips/s {r['msgs_s']:,.0f}")
    return (f"{what}, p50 {r.get('p50_ms', 0):.2f} p99 {r.get('p99_ms', 0):.2f} ms; {cpu}; "
            f"{errors}")


# ----------------------------------------------------------------- report


def msDigits(s) -> int:
    return 2 if s is not None and s[0] < 10 else (1 if s is not None and s[0] < 100 else 0)


class Report(ReportBase):
    def __init__(self, bench: Bench) -> None:
        super().__init__(bench.results)
        self.bench = bench
        self.specs = [s for s in bench.specs if s.skip is None]
        self.single = [s for s in self.specs if not s.nodes]  # the servers of the other tables
        self.byKey = {s.key: s for s in bench.specs}

    def label(self, key: str) -> str:
        return self.byKey[key].label if key in self.byKey else key

    def errors(self, key: str, cell: str) -> str:
        rows = self.rows(key, cell)
        if not rows:
            return "–"
        total = sum(r["errors"] for r in rows)
        return str(total) if total == 0 else f"**{total}**"

    def loadTable(self, cells: list[Cell], fanout: bool) -> list[str]:
        if fanout:
            out = ["**Fan-out in one channel** (100-byte PRIVMSG lines; a message completes when "
                   "all N-1 other members received it; latency = send → last receipt, ms)", "",
                   "| cell | server | deliveries/s | msgs/s | p50 ms | p99 ms | CPU % server / generator / other | errors |",
                   "|---|---|---:|---:|---:|---:|---:|---:|"]
        else:
            out = ["**Private messages** (one side of each pair sends, the other answers; "
                   "latency = round trip, ms)", "",
                   "| cell | server | round trips/s | p50 ms | p99 ms | CPU % server / generator / other | errors |",
                   "|---|---|---:|---:|---:|---:|---:|"]
        for cell in cells:
            for spec in self.single:
                k = spec.key
                p50, p99 = self.stat(k, cell.key, "p50_ms"), self.stat(k, cell.key, "p99_ms")
                rate = self.stat(k, cell.key, "msgs_s")
                lat = (f"{fmtStats(p50, msDigits(p50))} | {fmtStats(p99, msDigits(p99))}")
                if fanout:
                    dl = self.stat(k, cell.key, "deliveries_s")
                    out.append(f"| {cell.title} | {spec.label} | {fmtStats(dl)}{self.bound(k, cell.key)} | "
                               f"{fmtStats(rate)} | {lat} | {self.cpu(k, cell.key)} | "
                               f"{self.errors(k, cell.key)} |")
                else:
                    out.append(f"| {cell.title} | {spec.label} | {fmtStats(rate)}{self.bound(k, cell.key)} | "
                               f"{lat} | {self.cpu(k, cell.key)} | {self.errors(k, cell.key)} |")
        return out + [""]

    def idleTable(self) -> list[str]:
        counts = sorted({r["clients"] for r in self.results if r["cell"] == "idle"})
        out = [f"**Idle registered clients** ({', '.join(fmt(c) for c in counts) or '–'}; "
               "server VmRSS before the first connect and 1 s after the last 001)", "",
               "| server | registered | registrations in flight | registration s | RSS before MiB | RSS after MiB | KiB per client | errors |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for spec in self.single:
            rows = self.rows(spec.key, "idle")
            before = stats([r["rss_before_kib"] / 1024 for r in rows])
            after = stats([r["rss_after_kib"] / 1024 for r in rows])
            out.append(f"| {spec.label} | {fmtStats(self.stat(spec.key, 'idle', 'registered'))} | "
                       f"{spec.batch} | {fmtStats(self.stat(spec.key, 'idle', 'reg_s'), 2)} | "
                       f"{fmtStats(before, 1)} | {fmtStats(after, 1)} | "
                       f"{fmtStats(self.stat(spec.key, 'idle', 'kib_per_conn'), 2)} | "
                       f"{self.errors(spec.key, 'idle')} |")
        return out + [""]

    def clusterTable(self) -> list[str]:
        """The N=500 cells on the single node and on the clusters, with ratios."""
        clusters = [s for s in self.bench.specs if s.nodes]
        if not clusters:
            return []
        if clusters[0].skip:
            return [f"**Cluster**: not measured ({clusters[0].skip}).", ""]
        specs = [s for s in self.specs if s.key == "ours" or s.nodes]
        cpus = "; ".join(placement(s, self.bench.pinned) for s in specs)
        out = ["**Cluster: nodes acting as one server through Redis** (fan-out in one channel, "
               "N=500; the clients spread evenly over the nodes, client i on node i mod K; "
               "× = ratio of medians to the single node without --cluster of this run; "
               "CPU % server: the nodes and redis-server together, redis-server alone in "
               "parentheses; server CPU per message: theirs over the messages completed in the "
               "window, each delivered to 499 members, which the machine's other load changes "
               f"less than the rates. CPUs: {cpus}"
               + (f"; load generator on CPU {GENERATOR_CPU})" if self.bench.pinned else ")"), "",
               "| cell | server | deliveries/s | × single node | p50 ms | p99 ms | p99 × single node | server CPU µs/message | CPU % server (Redis) / generator / other | errors |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for cell in CLUSTER_CELLS:
            rate0, p99r = (self.stat("ours", cell.key, f) for f in ("deliveries_s", "p99_ms"))
            for spec in specs:
                k = spec.key
                rate, p50, p99, perMsg = (self.stat(k, cell.key, f) for f in
                                          ("deliveries_s", "p50_ms", "p99_ms", "srv_us_per_msg"))
                ratios = [ratioOf(rate, rate0), ratioOf(p99, p99r)]
                shown = ["–" if r is None else f"{r:.2f}×" for r in ratios]
                redis = self.stat(k, cell.key, "redis_pct")
                server, rest = self.cpu(k, cell.key).split(" / ", 1)
                cpu = f"{server} ({redis[0]:.0f}) / {rest}" if redis else f"{server} / {rest}"
                name = spec.label if spec.nodes else "single node (no --cluster)"
                out.append(f"| {cell.title} | {name} | {fmtStats(rate)}{self.bound(k, cell.key)} | "
                           f"{shown[0]} | {fmtStats(p50, msDigits(p50))} | "
                           f"{fmtStats(p99, msDigits(p99))} | {shown[1]} | {fmtStats(perMsg)} | "
                           f"{cpu} | "
                           f"{self.errors(k, cell.key)} |")
        trouble = self.bench.logTrouble
        out += ["", f"Node logs: {len(trouble)} line(s) with a warning, an error or a traceback"
                + (" (the first ones below)." if trouble else ".")]
        return out + [""]

    def fasterC(self, cell: str, field_: str, higher: bool = True):
        best = None
        for key in C_KEYS:
            s = self.stat(key, cell, field_)
            if s is None:
                continue
            if best is None or (s[0] > best[1][0] if higher else s[0] < best[1][0]):
                best = (key, s)
        return best

    def ratioTable(self) -> list[str]:
        ours = self.byKey.get("ours")
        if ours is None or ours.skip:
            why = ours.skip if ours is not None else "not selected with --only"
            return ["**Targets of the issue**: netservices chat was not measured "
                    f"({why}), so there are no ratios.", ""]

        def overlap(value, ref, factor: float) -> str:
            apart = value[1] > ref[2] * factor or value[2] < ref[1] * factor
            return "" if apart else " (ranges overlap)"

        rows: list[tuple[str, str, bool | None, str]] = []  # target, measured, met, note
        for cell in FANOUT_CELLS:
            v = self.stat("ours", cell.key, "deliveries_s")
            tw = self.stat("twisted", cell.key, "deliveries_s")
            if ratioOf(v, tw) is None:
                rows.append((f"{cell.title}: deliveries/s ≥ 5× stock Twisted Words",
                             "not measured" if v is None or tw is None else
                             f"{fmt(v[0])} vs {fmt(tw[0])}: no ratio", None, ""))
            else:
                rows.append((f"{cell.title}: deliveries/s ≥ 5× stock Twisted Words",
                             f"{v[0] / tw[0]:.2f}× ({fmt(v[0])} vs {fmt(tw[0])})",
                             v[0] >= 5 * tw[0], overlap(v, tw, 5)))
        for cell in FANOUT_CELLS:
            v = self.stat("ours", cell.key, "deliveries_s")
            fc = self.fasterC(cell.key, "deliveries_s")
            name = "deliveries/s ≥ 0.35× the faster C server"
            if ratioOf(v, fc[1] if fc else None) is None:
                rows.append((f"{cell.title}: {name}", "not measured", None, ""))
            else:
                rows.append((f"{cell.title}: {name}",
                             f"{v[0] / fc[1][0]:.2f}× ({fmt(v[0])} vs {self.label(fc[0])} "
                             f"{fmt(fc[1][0])})", v[0] >= 0.35 * fc[1][0],
                             overlap(v, fc[1], 0.35)))
        for cell in FANOUT_CELLS:
            if cell.clients != 500:
                continue
            name = f"{cell.title}: p99 latency ≤ the C servers'"
            v = self.stat("ours", cell.key, "p99_ms")
            cs = [(self.label(k), self.stat(k, cell.key, "p99_ms")) for k in C_KEYS]
            cs = [(label, s) for label, s in cs if s is not None]
            if v is None or not cs:
                rows.append((name, "not measured", None, ""))
                continue
            best = min(s[0] for _, s in cs)
            shown = ", ".join(f"{label} {s[0]:,.1f}" for label, s in cs)
            note = "" if v[0] <= best or v[0] > max(s[0] for _, s in cs) else \
                " (≤ one of them)"
            rows.append((name, f"{v[0]:,.1f} ms (C: {shown} ms)", v[0] <= best, note))
        per = self.stat("ours", "idle", "kib_per_conn")
        name = "idle: ≤ 3 KiB RSS per registered client"
        if per is None:
            rows.append((name, "not measured", None, ""))
        else:
            others = [f"{self.label(k)} {self.stat(k, 'idle', 'kib_per_conn')[0]:.2f}"
                      for k in ("twisted",) + C_KEYS if self.stat(k, "idle", "kib_per_conn")]
            count = max(r["clients"] for r in self.rows("ours", "idle"))
            rows.append((name, f"{fmtStats(per, 2)} KiB at {count:,} "
                               f"clients (others: {', '.join(others) or '–'})",
                         per[0] <= 3.0, " (range crosses 3)" if per[1] <= 3.0 < per[2] else ""))
        judged = [r for r in rows if r[2] is not None]
        met = sum(1 for r in judged if r[2])
        lines = [f"**Targets of the issue** (medians; {met} of {len(judged)} met; “ranges "
                 "overlap”: the [min–max] ranges over the repetitions do not separate the two; "
                 "reported, not asserted)", "",
                 "| target | measured | met? |", "|---|---|---|"]
        for target, measured, ok, note in rows:
            verdict = "–" if ok is None else ("met" if ok else "**not met**")
            lines.append(f"| {target} | {measured} | {verdict}{note} |")
        lines += ["", "**Ratios** (netservices chat ÷ the other, medians; for KiB/client lower is "
                  "better; best C server: the faster one, or the one with the lower p99 or KiB; targets: ≥ 5× Twisted Words and ≥ 0.35× the faster C server in fan-out "
                  "deliveries/s, ≤ 3 KiB per idle client)", "",
                  "| cell | metric | netservices chat | Twisted Words | × Twisted Words | best C server | × best C server |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        metrics = [(cell, "deliveries_s" if cell.mode == "fanout" else "msgs_s",
                    "deliveries/s" if cell.mode == "fanout" else "round trips/s", True, 0)
                   for cell in LOAD_CELLS]
        metrics += [(cell, "p99_ms", "p99 ms", False, 1) for cell in FANOUT_CELLS + [PM_CELL]]
        metrics.append((None, "kib_per_conn", "KiB per idle client", False, 2))
        for cell, fieldName, metric, higher, digits in metrics:
            key = cell.key if cell else "idle"
            v = self.stat("ours", key, fieldName)
            tw = self.stat("twisted", key, fieldName)
            fc = self.fasterC(key, fieldName, higher)
            rTw, rC = ratioOf(v, tw), ratioOf(v, fc[1] if fc else None)
            ratioTw = "–" if rTw is None else f"{rTw:.2f}×"
            ratioC = "–" if rC is None else f"{rC:.2f}×"
            cName = f"{self.label(fc[0])} {fmt(fc[1][0], digits)}" if fc else "–"
            lines.append(f"| {cell.title if cell else f'idle N={self.idleCounts()}'} | {metric} | "
                         f"{fmtStats(v, digits)} | {fmtStats(tw, digits)} | {ratioTw} | {cName} | "
                         f"{ratioC} |")
        return lines + [""]

    def idleCounts(self) -> str:
        counts = sorted({r["clients"] for r in self.results if r["cell"] == "idle"})
        return ", ".join(fmt(c) for c in counts) or "–"


def machineInfo() -> dict:
    try:
        somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    except OSError:
        somaxconn = "?"
    return {"nproc": os.cpu_count(), **common.machineInfo(), "somaxconn": somaxconn}


def render(bench: Bench, config: Config, info: dict, notes: list[str],
           started: datetime.datetime, elapsed: float, pinned: bool, quick: bool,
           command: str) -> str:
    report = Report(bench)
    versions = []
    for spec in bench.specs:
        version = f" {spec.version}" if spec.version else ""
        state = f"skipped: {spec.skip}" if spec.skip else "included"
        versions.append(f"{spec.label}{version} ({state})")
    lines = [
        f"### Chat benchmarks, {started:%Y-%m-%d %H:%M} UTC"
        + (" (--quick: smoke run, not for comparison)" if quick else ""),
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, Twisted {info['twisted']}; `ulimit -n` {info['nofile']} "
        f"(servers and generator raised to {NOFILE:,}); somaxconn {info['somaxconn']}.",
        "",
        "Servers: " + "; ".join(versions) + ".",
        "",
        f"Method: `{command}`; {config.reps} repetition(s), every server started afresh for "
        "each (rotating which goes first)"
        + ("" if config.clusterOnly else ", and again for the idle cell")
        + "; each start is checked with one registration. Per cell: register (and JOIN #bench), "
        f"{config.settle:g} s settle, {config.warmup:g} s warm-up, {config.duration:g} s "
        "measured, a hard deadline; the server is left to go idle between cells. "
        + common.pinningSentence(pinned, SERVER_CPU, GENERATOR_CPU)
        + "Load generator: `benchmarks/chatload.c` (C, epoll, one thread; 100-byte PRIVMSG "
        "lines; TCP_NODELAY, and TCP_QUICKACK after every read so that servers that leave "
        "Nagle on are not held by delayed ACKs; every receipt checked for order and loss, "
        "every latency recorded). Values are median [min–max] over the repetitions. CPU: % "
        "of one core during the measured window used by the server (/proc/PID/stat), the "
        "generator (rusage) and everything else (busy time from /proc/stat minus both; on "
        "this kernel much loopback softirq time lands there). Errors: ERROR lines, numerics "
        "4xx/5xx (not 422, no MOTD), connections closed by the server, messages lost or out "
        "of order, summed over the repetitions. A cell during which the rest of the machine used "
        f"more than {NOISY_OTHER_PERCENT:g} % of a core " + bench.retrySentence(),
        "",
        "Configuration: netservices chat `--max-connections 0 --max-per-peer 0 --flood-rate 0 "
        "--sendq 4194304` (flood control off)"
        + ("." if config.clusterOnly else "; stock Twisted Words from "
        "`benchmarks/twisted_words.tac` (InMemoryWordsRealm, IRCFactory, in-memory password "
        "checker with 20,000 users, group created up front; no flood control); ngIRCd "
        "**MaxPenaltyTime 0**, MaxConnections/MaxConnectionsIP/MaxJoins 0, ping/pong 600 s, "
        "DNS and Ident off, registrations in flight ≤ 10 (its listen backlog is 10); InspIRCd "
        "(core modules) connect class **threshold 1000000, commandrate 1000000000, fakelag "
        "off**, hardsendq 64M, recvq 1M, limits 100000, resolvehostnames no, somaxconn 4096 "
        "(it registers clients on a 1 s timer, so ≤ 1,000 registrations in flight)."),
        "",
    ]
    if any(s.nodes and not s.skip for s in bench.specs):
        lines += [
            "Clusters: for each repetition a redis-server of their own (a temporary directory, "
            f"a free port on {HOST}, `{' '.join(a or repr(a) for a in REDIS_OPTIONS)}`), then "
            f"the nodes, netservices chat with the options above and `--cluster "
            f"redis://{HOST}:PORT/0 --node-name nK`, each on its own port, sharing one "
            "--data-dir; the cells start once every node has logged that every node joined "
            "and each has registered a client. The generator connects client i to node i mod "
            "K; the server's CPU is that of the nodes and Redis together, pinned as said above "
            "the cluster table. The node logs are scanned for warnings, errors and tracebacks "
            "until the nodes are stopped (and copied to benchmarks/build/ when there are any, "
            "or when a cell failed).",
            "",
        ]
    if not config.clusterOnly:
        lines += report.ratioTable()
        lines += report.loadTable(FANOUT_CELLS, True)
        lines += report.loadTable([PM_CELL], False)
        lines += report.idleTable()
    lines += report.clusterTable()
    notes = [f"† the generator's core was ≥ {GENERATOR_BOUND_PERCENT:g} % busy: that server "
             "may be faster than shown."] + list(notes)
    notes += [f"failed: {f}" for f in bench.failures]
    notes += [f"node log, {line}" for line in bench.logTrouble[:10]]
    for r in bench.results:
        if r.get("first_error") and r["errors"]:
            notes.append(f"first error, rep {r['rep'] + 1}, {r['label']}, {r['cell']}: "
                         f"{r['first_error']}")
    lines += common.footer(notes, elapsed)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- setup


KEYS = ("ours", "cluster", "twisted", "ngircd", "inspircd")


def parseArgs(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Chat benchmarks: netservices chat against stock Twisted Words, ngIRCd "
                    "and InspIRCd (see the module docstring).")
    parser.add_argument("--repeat", "--reps", dest="reps", type=int,
                        help="repetitions, each on freshly started servers (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repetition, short cells, 1,000 idle clients")
    common.addTimingArguments(parser)
    parser.add_argument("--settle", type=float,
                        help="seconds between the last JOIN and the first message (default 1)")
    parser.add_argument("--idle-clients", type=int, help="clients in the idle cell (default 5000)")
    parser.add_argument("--only", help="comma-separated servers: " + ",".join(KEYS)
                        + " (cluster: clusters of 1, 2, 4 nodes through a Redis of their own)")
    parser.add_argument("--cluster", action="store_true",
                        help="the cluster cells alone: fan-out N=500 on the single node and on "
                             "clusters of 1, 2, 4 nodes (same as --only ours,cluster without "
                             "the other cells)")
    parser.add_argument("--json", metavar="FILE", help="also save the raw results here")
    args = parser.parse_args(argv)
    common.checkRange(parser, args.reps, 1, 20, "--repeat")
    common.checkSeconds(parser, args, ("duration", "warmup", "settle"))
    common.checkRange(parser, args.idle_clients, 1, 15000, "--idle-clients")
    args.only = common.parseOnly(parser, args.only, KEYS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parseArgs(argv)
    quick = args.quick
    config = Config(
        **common.timing(args),
        settle=args.settle if args.settle is not None else (0.3 if quick else 1.0),
        idleClients=args.idle_clients or (1000 if quick else 5000),
        retryBudget=3 if quick else 20,
        clusterOnly=args.cluster,
    )
    twistd = common.prepare(SOURCE, "twisted")
    notes: list[str] = []
    specs = serverSpecs(twistd)
    if args.cluster:
        specs = [s for s in specs if s.group in (args.only or {"ours", "cluster"})]
    elif args.only:
        specs = [s for s in specs if s.group in args.only]
    for spec in specs:
        if spec.skip:
            progress(f"skipping {spec.label}: {spec.skip}")
    if not any(s.skip is None for s in specs):
        raise BenchError("no server to measure")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < config.idleClients + 200:
        config.idleClients = max(100, hard - 200)
        notes.append(f"idle cell: hard `ulimit -n` is {hard}: used {config.idleClients:,} clients.")
    pinned = common.pinning(SERVER_CPU, GENERATOR_CPU, notes)
    info = machineInfo()
    started, mdPath, rawPath = common.outputPaths("chat")
    command = "python benchmarks/chat.py" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chatbench-") as tmp:
        os.chmod(tmp, 0o755)  # ngIRCd reads its files after dropping to nobody
        with Bench(config, specs, pinned, Path(tmp), twistd, rawPath) as bench:
            bench.run()
    elapsed = time.monotonic() - t0
    text = render(bench, config, info, notes, started, elapsed, pinned, quick, command)
    payload = {"started": started.isoformat(), "machine": info, "config": vars(config),
               "servers": [{"key": s.key, "label": s.label, "version": s.version,
                            "skip": s.skip, "registrations_in_flight": s.batch} for s in specs],
               "failures": bench.failures, "elapsed_s": elapsed, "results": bench.results}
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
    common.publish(text, mdPath, rawPath, f"; raw results in {args.json}" if args.json else "")
    return 0


if __name__ == "__main__":
    common.runMain(main, "chat.py")
