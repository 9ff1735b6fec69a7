"""
What the benchmark drivers of this directory share: finding twistd, building
and running the C load generators (echoload.c, chatload.c: their shared C is
loadgen.h), starting and stopping server processes, CPU figures from /proc,
pinning with taskset, retrying cells measured while the machine was busy,
medians with [min-max] ranges, and the Markdown around the tables.

The drivers are run as scripts (`python benchmarks/run.py`), so this
directory is the first entry of sys.path and they import this module as
`common`, as workers.py imports `run`.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"  # generators, tables and raw results (git-ignored)
HOST = "127.0.0.1"
MAX_ATTEMPTS = 3  # per cell, while the rest of the machine is busy
GENERATOR_BOUND_PERCENT = 90.0  # a generator core this busy may be the limit
BUSY_WARNING_PERCENT = 10.0  # warn when the machine is this busy before a run
NOT_PINNED_NOTE = ("server and generator were not pinned to separate CPUs "
                   "(taskset missing or fewer than 2 usable CPUs): numbers are less reliable.")


class BenchError(Exception):
    """A problem that ends the run with one line on stderr."""


class CellError(Exception):
    """A problem with one server or cell; recorded, the run goes on."""


def progress(message: str, clock: bool = False) -> None:
    """One line of progress on stderr, with the time of day if C{clock}."""
    if clock:
        message = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(message, file=sys.stderr, flush=True)


def runMain(main: Callable[[], int | None], name: str) -> None:
    """Run a driver's main(): a BenchError or CellError ends it with one line."""
    try:
        sys.exit(main())
    except (BenchError, CellError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)


def requireLinux() -> None:
    if not Path("/proc/stat").exists():
        raise BenchError("needs Linux (/proc)")


def requireModules(*names: str) -> None:
    """Each module importable by this Python (the venv's)."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise BenchError(f"{name} is not importable by {sys.executable} (activate the venv)")


# ------------------------------------------------------------- programs


def findScript(name: str) -> str:
    """The script C{name} next to this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found next to this Python or on PATH (activate the venv)")
    return found


def findTwistd() -> str:
    return findScript("twistd")


def prepare(source: Path, *modules: str) -> str:
    """
    Check that this is Linux and that C{modules} are importable, build the
    load generator C{source}; the path of twistd.
    """
    requireLinux()
    requireModules(*modules)
    twistd = findTwistd()
    buildGenerator(source)
    return twistd


def buildGenerator(source: Path) -> Path:
    """
    Compile the load generator C{source} (with loadgen.h next to it) into
    build/ unless the binary is newer than both; return the binary's path.
    """
    generator = BUILD / source.stem
    inputs = [source, source.with_name("loadgen.h")]
    if generator.exists() and generator.stat().st_mtime >= max(p.stat().st_mtime for p in inputs):
        return generator
    cc = os.environ.get("CC", "gcc" if shutil.which("gcc") else "cc")
    if shutil.which(cc) is None:
        raise BenchError(f"no C compiler: '{cc}' not found (install gcc, or set CC)")
    BUILD.mkdir(exist_ok=True)
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(generator), str(source)],
                          capture_output=True, text=True)
    if done.returncode:
        first = (done.stderr.strip().splitlines() or ["(no output)"])[0]
        raise BenchError(f"compiling {source.name} with {cc} failed: {first}")
    progress(f"built {generator.relative_to(Path.cwd()) if generator.is_relative_to(Path.cwd()) else generator}")
    return generator


def raiseFileLimit(wanted: int):
    """A preexec_fn raising the soft RLIMIT_NOFILE to C{wanted} (at most the hard limit)."""
    def preexec() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < limit:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

    return preexec


def runLoadGenerator(generator: Path, args: list[str], pin: list[str], limit: float,
                     files: int) -> dict:
    """Run a load generator (at most C{limit} + 15 s); its JSON line, ok or not."""
    try:
        done = subprocess.run(
            pin + [str(generator)] + args,
            capture_output=True,
            text=True,
            timeout=limit + 15,
            preexec_fn=raiseFileLimit(files),
        )
    except subprocess.TimeoutExpired:
        raise CellError("load generator did not finish in time")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise CellError(f"load generator printed nothing (status {done.returncode}) "
                        f"{done.stderr.strip()[:200]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------ processes


def stopProcess(process: subprocess.Popen, grace: float = 10, killWait: float | None = 5) -> None:
    """SIGTERM to the process we started (by its PID); SIGKILL after C{grace} s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(killWait)


class ServerProcess:
    """A server started with its output in a log file; stopped by its PID."""

    tailWidth: int | None = None  # characters kept of each line of tail()

    def __init__(self, argv: list[str], logPath: Path, cwd: Path, env: dict | None = None,
                 files: int = 1024, newSession: bool = False) -> None:
        self.logPath = logPath
        self.log = open(logPath, "wb")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(os.environ, PYTHONUNBUFFERED="1") if env is None else env,
            preexec_fn=raiseFileLimit(files),
            start_new_session=newSession,
        )
        self.pid = self.process.pid

    def tail(self, lines: int = 3) -> str:
        """The last lines of the log, for error messages."""
        try:
            text = self.logPath.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        if self.tailWidth is not None:
            text = [line.strip()[:self.tailWidth] for line in text]
        return " | ".join(text[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stopProcess(self.process)
        self.log.close()


# ------------------------------------------------------------------ CPU


def cpuSeconds(pid: int) -> float:
    """User + system CPU seconds of process C{pid} so far (OSError once it is gone)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpuPercents(result: dict) -> dict:
    """
    % of one core used during a generator's window by the server, the
    generator and everything else on the machine; {} without a window.
    """
    wall = result.get("wall_s")
    if not wall:
        return {}
    server = result.get("srv_cpu_s", 0.0)
    generator = result.get("gen_cpu_s", 0.0)
    # Busy = wall - idle per CPU: with NO_HZ the idle time is exact, while the
    # busy columns of /proc/stat are sampled by ticks and undercount.
    busy = sum(max(0.0, wall - idle) for idle in result.get("cpu_idle_s", []))
    return {
        "srv_pct": 100 * server / wall,
        "gen_pct": 100 * generator / wall,
        "other_pct": max(0.0, 100 * (busy - server - generator) / wall),
    }


def _cpuLines() -> list[str]:
    return [line for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("cpu") and line[3:4].isdigit()]


def idleSeconds() -> float:
    """Idle + iowait seconds of all CPUs so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    return sum((int(f[4]) + int(f[5])) / ticks for f in map(str.split, _cpuLines()))


def machineBusy(seconds: float) -> float:
    """Percent of one core busy over C{seconds} (everything on the machine)."""
    ncpu = len(_cpuLines())
    t0, i0 = time.monotonic(), idleSeconds()
    time.sleep(seconds)
    t1, i1 = time.monotonic(), idleSeconds()
    return max(0.0, 100 * (ncpu * (t1 - t0) - (i1 - i0)) / (t1 - t0))


def pinnable(*cpus: int) -> bool:
    """taskset exists and every CPU of C{cpus} is ours to use."""
    return shutil.which("taskset") is not None and set(cpus) <= os.sched_getaffinity(0)


def taskset(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)]


def pinning(serverCpu: int, generatorCpu: int, notes: list[str]) -> bool:
    """Whether server and generator can be pinned apart; a note if not."""
    pinned = pinnable(serverCpu, generatorCpu)
    if not pinned:
        notes.append(NOT_PINNED_NOTE)
    return pinned


def pinningSentence(pinned: bool, serverCpu: int, generatorCpu: int) -> str:
    if pinned:
        return f"Server pinned to CPU {serverCpu}, load generator to CPU {generatorCpu} (`taskset`). "
    return "Not pinned (taskset missing or fewer than 2 CPUs). "


def cpuModel() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machineInfo() -> dict:
    """CPU model, kernel, Python, Twisted and `ulimit -n` of this machine."""
    import twisted

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "cpu": cpuModel(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "nofile": f"{soft}/{hard}",
    }


# ------------------------------------------------------------------ run


def rotated(items: list, rep: int) -> list:
    """C{items}, a different one first in each repetition."""
    return items[rep % len(items):] + items[:rep % len(items)]


class BenchBase:
    """
    The state of one run: pinning, the raw results (also written as JSON
    lines to rawPath), failures, the server running now, the retries of
    noisy cells.  A context manager: on exit the server is stopped.
    """

    noisyPercent = 10.0  # "other" CPU above which a cell is measured again

    def __init__(self, config, pinned: bool, serverCpu: int, generatorCpu: int,
                 workdir: Path, rawPath: Path) -> None:
        self.config = config
        self.serverPin = taskset(serverCpu) if pinned else []
        self.generatorPin = taskset(generatorCpu) if pinned else []
        self.workdir = workdir
        self.raw = open(rawPath, "w")
        self.results: list[dict] = []
        self.failures: list[str] = []
        self.retries = 0
        self.running: ServerProcess | None = None
        self.busyBefore = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.raw.close()

    def save(self, row: dict) -> None:
        self.results.append(row)
        self.raw.write(json.dumps(row) + "\n")
        self.raw.flush()

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def checkMachine(self) -> None:
        """Measure how busy the machine is before the run; warn if it is."""
        self.busyBefore = machineBusy(1.0)
        if self.busyBefore > BUSY_WARNING_PERCENT:
            progress(f"warning: the machine is already {self.busyBefore:.0f} % busy "
                     "(of one core): expect noisy numbers")

    def quietest(self, measure: Callable[[], dict | None], what: str = "",
                 pause: float = 0.0) -> dict | None:
        """
        Call C{measure} (a result with CPU percentages, or None to give up)
        again while the rest of the machine used more than noisyPercent of
        a core, up to MAX_ATTEMPTS times and within the run's retry budget;
        the quietest result.  A result that is not ok is returned at once.
        """
        best = None
        for attempt in range(MAX_ATTEMPTS):
            result = measure()
            if result is None:
                break
            result["attempts"] = attempt + 1
            if not result.get("ok"):
                return result  # a failed run is reported, not retried
            if best is None or result["other_pct"] < best["other_pct"]:
                best = result
            if (result["other_pct"] <= self.noisyPercent
                    or self.retries >= self.config.retryBudget or attempt + 1 == MAX_ATTEMPTS):
                break
            self.retries += 1
            progress(f"    {what}other CPU {result['other_pct']:.0f}% > {self.noisyPercent:.0f}%: "
                     "measuring again")
            time.sleep(pause)
        return best

    def retrySentence(self) -> str:
        return (f"was measured again (up to {MAX_ATTEMPTS} times, {self.config.retryBudget} "
                f"re-measurements per run) and the quietest run kept ({self.retries} "
                f"re-measured). Before the run the machine was {self.busyBefore:.0f} % busy "
                "(of one core, over 1 s).")


def outputPaths(name: str) -> tuple[datetime.datetime, Path, Path]:
    """The run's start (UTC) and build/NAME-STAMP.md and .jsonl."""
    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = f"{started:%Y%m%d-%H%M%S}"
    BUILD.mkdir(exist_ok=True)
    return started, BUILD / f"{name}-{stamp}.md", BUILD / f"{name}-{stamp}.jsonl"


def publish(text: str, mdPath: Path, rawPath: Path, extra: str = "") -> None:
    """Save the tables, print them, say where they are."""
    mdPath.write_text(text)
    print(text)
    progress(f"saved {mdPath} and {rawPath.name}{extra}")


# --------------------------------------------------------------- options


def addTimingArguments(parser) -> None:
    parser.add_argument("--duration", type=float, help="measured seconds per cell (default 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 1)")


def timing(args) -> dict:
    """reps, warmup and duration: the options, else 3, 1 s, 3 s (--quick: 1, 0.3 s, 1 s)."""
    quick = args.quick
    return {
        "reps": args.reps or (1 if quick else 3),
        "warmup": args.warmup if args.warmup is not None else (0.3 if quick else 1.0),
        "duration": args.duration or (1.0 if quick else 3.0),
    }


def checkRange(parser, value, low: int, high: int, option: str) -> None:
    if value is not None and not low <= value <= high:
        parser.error(f"{option} must be {low}-{high}")


def checkSeconds(parser, args, names: tuple[str, ...] = ("duration", "warmup")) -> None:
    """Each of C{names} 0-60 seconds, and --duration positive."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 60:
            parser.error(f"--{name} must be 0-60 seconds")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")


def parseOnly(parser, value: str | None, keys) -> set[str] | None:
    """--only a,b: the set of server keys, each one of C{keys}."""
    if not value:
        return value
    chosen = {k.strip() for k in value.split(",") if k.strip()}
    unknown = chosen - set(keys)
    if unknown:
        parser.error(f"--only: unknown server(s) {', '.join(sorted(unknown))}")
    return chosen


# ---------------------------------------------------------------- report


def stats(values: list[float]) -> tuple[float, float, float] | None:
    """(median, min, max), or None without values."""
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def fmtStats(s, digits: int = 0) -> str:
    """median [min–max], or the median alone when the range rounds to one value."""
    if s is None:
        return "–"
    med, lo, hi = s
    if round(lo, digits) == round(hi, digits):
        return fmt(med, digits)
    return f"{fmt(med, digits)} [{fmt(lo, digits)}–{fmt(hi, digits)}]"


def ratioOf(value, reference) -> float | None:
    """Ratio of two medians (stats tuples); None when either is missing or zero."""
    if value is None or reference is None or not reference[0]:
        return None
    return value[0] / reference[0]


class ReportBase:
    """Medians of the recorded results, per server and cell."""

    def __init__(self, results: list[dict]) -> None:
        self.results = results

    def name(self, server) -> str:
        """What the results' "server" field holds for C{server}."""
        return server

    def rows(self, server, cell: str) -> list[dict]:
        name = self.name(server)
        return [r for r in self.results if r["server"] == name and r["cell"] == cell]

    def stat(self, server, cell: str, field: str):
        if server is None:
            return None
        return stats([r[field] for r in self.rows(server, cell) if field in r])

    def cpu(self, server, cell: str) -> str:
        parts = []
        for field in ("srv_pct", "gen_pct", "other_pct"):
            s = self.stat(server, cell, field)
            parts.append("–" if s is None else f"{s[0]:.0f}")
        return " / ".join(parts)

    def bound(self, server, cell: str) -> str:
        """A dagger when the generator's core was (nearly) saturated."""
        s = self.stat(server, cell, "gen_pct")
        return " †" if s is not None and s[0] >= GENERATOR_BOUND_PERCENT else ""


def footer(notes: list[str], elapsed: float) -> list[str]:
    return [f"- {note}" for note in notes] + [f"- Run time: {elapsed / 60:.1f} min ({elapsed:.0f} s)."]
