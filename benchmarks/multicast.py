"""
Benchmark of multicast reception: `netservices mcast recv` (the same
sockets and protocol path as the multicast node) against iperf 2 (Debian
`iperf`) in the same namespace LAN, at 1 KiB datagrams.

    python benchmarks/multicast.py                   # about 40 s
    python benchmarks/multicast.py --rates 2000,8000 --seconds 2

Run it as root from the repository root with the development virtualenv's
Python.  It builds its own 3-host LAN of network namespaces (unique name,
removed at the end: nothing leaves it) and, for each rate of --rates (in
datagrams per second), runs:

  netservices  `netservices mcast send --rate R --size 1024` on host 1,
               `netservices mcast recv --json` on host 2;
  iperf        `iperf -c GROUP -u -b Rpps -l 1024` on host 1,
               `iperf -s -u -B GROUP%eth0` on host 2.

For each cell: datagrams sent and received, loss, and the receiver's CPU
time per datagram received (utime + stime from /proc/PID/stat, which
includes start-up: a Python receiver pays ~0.3 s of imports, so its CPU per
datagram is also shown after subtracting the CPU of an idle run of the
same length).  The summary names the highest rate with at most one datagram lost (iperf
2.1.8 reported one lost datagram even at low rates).  Every
process has a timeout; each is stopped by its own PID.  Nothing is
asserted; numbers vary between runs on shared machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common
from common import BUILD, cpuSeconds, findScript

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netservices.testing import NetworkLab  # noqa: E402

SIZE = 1024


class Sampled:
    """
    A process whose CPU is sampled until it ends.
    """

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.cpu = 0.0

    def sample(self) -> None:
        try:
            self.cpu = cpuSeconds(self.process.pid)
        except (OSError, IndexError):
            pass

    def _reap(self, flags: int) -> bool:
        """
        Reap the process with C{wait4}, taking its exact CPU from rusage.
        """
        pid, status, usage = os.wait4(self.process.pid, flags)
        if not pid:
            return False
        self.cpu = usage.ru_utime + usage.ru_stime
        self.process.returncode = os.waitstatus_to_exitcode(status)
        return True

    def wait(self, timeout: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._reap(os.WNOHANG):
                break
            time.sleep(0.05)
        else:
            self.stop()
        out, err = self.process.stdout.read(), self.process.stderr.read()
        return out.decode(), err.decode()

    def stop(self) -> None:
        if self.process.returncode is not None:
            return
        self.process.terminate()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._reap(os.WNOHANG):
                return
            time.sleep(0.05)
        self.process.kill()
        self._reap(0)


def netservicesCell(lab: NetworkLab, rate: int, seconds: float) -> dict:
    group = "239.77.0.1:5201"
    receiver = Sampled([*lab.prefix(2), findScript("netservices"), "mcast", "recv",
                        "--group", group, "--json", "--duration", str(seconds + 8)])
    waitForLine(receiver, '"joined"')
    count = int(rate * seconds)
    sender = subprocess.run(
        [*lab.prefix(1), findScript("netservices"), "mcast", "send", "--group", group,
         "--rate", str(rate), "--size", str(SIZE), "--count", str(count),
         "--duration", str(seconds + 5), "--json"],
        capture_output=True, timeout=seconds + 30,
    )
    sent = json.loads(sender.stdout.decode().splitlines()[-1])["count"]
    out, _ = receiver.wait(seconds + 15)
    summary = json.loads(out.splitlines()[-1])
    received = sum(s["received"] for s in summary["streams"])
    return {"tool": "netservices", "rate": rate, "sent": sent, "received": received,
            "cpu": receiver.cpu}


def waitForLine(sampled: Sampled, marker: str, timeout: float = 10) -> None:
    """
    Read the process's output until C{marker}; put the rest back.
    """
    deadline = time.monotonic() + timeout
    line = ""
    while marker not in line and time.monotonic() < deadline:
        line = sampled.process.stdout.readline().decode()
        if not line:
            raise RuntimeError("receiver ended early: " + sampled.process.stderr.read().decode())
    if marker not in line:
        raise RuntimeError(f"no {marker} in time")


def iperfCell(lab: NetworkLab, rate: int, seconds: float) -> dict:
    group = "239.77.0.2"
    server = Sampled([*lab.prefix(2), "iperf", "-s", "-u", "-B", f"{group}%eth0", "-p", "5202",
                      "-l", str(SIZE)])
    # iperf prints its banner once the socket is bound and joined.
    waitForLine(server, "Server listening")
    client = subprocess.run(
        [*lab.prefix(1), "iperf", "-c", group, "-u", "-p", "5202", "-T", "1", "-l", str(SIZE),
         "-b", f"{rate}pps", "-t", str(seconds)],
        capture_output=True, timeout=seconds + 30,
    )
    # The server reports when the client's last datagram arrives; wait
    # for that report, bounded, then stop it by PID.
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        server.sample()
        line = server.process.stdout.readline().decode()
        text += line
        if re.search(r"\d+/\d+ \(", line):
            break
    server.stop()
    match = re.search(r"(\d+)/\s*(\d+) \(", text)
    lost, total = (int(match.group(1)), int(match.group(2))) if match else (None, None)
    sentMatch = re.findall(r"Sent (\d+) datagrams", client.stdout.decode())
    sent = int(sentMatch[-1]) if sentMatch else total
    return {"tool": "iperf", "rate": rate, "sent": sent,
            "received": None if total is None else total - lost, "cpu": server.cpu}


def idleCPU(lab: NetworkLab, seconds: float) -> float:
    """
    @return: the CPU of a netservices receiver that gets nothing for
        C{seconds}: start-up and timers.
    """
    receiver = Sampled([*lab.prefix(2), findScript("netservices"), "mcast", "recv",
                        "--group", "239.77.0.3", "--duration", str(seconds), "--json"])
    receiver.wait(seconds + 15)
    return receiver.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="2000,5000,10000,20000,40000")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iperf"):
        raise SystemExit("needs root, iproute2 and iperf (Debian: apt-get install iperf)")
    rates = [int(r) for r in args.rates.split(",")]
    lab = NetworkLab(3, subnet="10.77.0", name=f"mb{os.getpid()}x", multicastRoutes=True)
    started = time.monotonic()
    rows = []
    try:
        lab.create()
        idle = idleCPU(lab, args.seconds + 1)
        for rate in rates:
            for cell in (netservicesCell, iperfCell):
                row = cell(lab, rate, args.seconds)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        lab.remove()
    lines = [
        f"### Multicast receive, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} CPUs, Linux {platform.release()}, Python"
        f" {platform.python_version()}; 1 KiB datagrams, {args.seconds:g} s per cell, host 1 ->"
        f" host 2 over a namespace bridge; run took {time.monotonic() - started:.0f} s."
        f" Idle netservices receiver CPU (start-up and timers): {idle * 1000:.0f} ms.",
        "",
        "| rate (datagrams/s) | tool | sent | received | loss % | receiver CPU µs/datagram | same, minus idle |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r["received"]:
            lines.append(f"| {r['rate']:,} | {r['tool']} | {r['sent']} | {r['received']} | - | - | - |")
            continue
        loss = 100 * (r["sent"] - r["received"]) / r["sent"] if r["sent"] else 0
        per = r["cpu"] / r["received"] * 1e6
        net = max(0.0, r["cpu"] - (idle if r["tool"] == "netservices" else 0)) / r["received"] * 1e6
        lines.append(
            f"| {r['rate']:,} | {r['tool']} | {r['sent']:,} | {r['received']:,} | {loss:.2f} |"
            f" {per:.1f} | {net:.1f} |"
        )
    for tool in ("netservices", "iperf"):
        clean = [r["rate"] for r in rows if r["tool"] == tool and r["received"] and r["sent"] - r["received"] <= 1]
        lines.append(
            f"\n{tool}: at most 1 datagram lost up to {max(clean):,} datagrams/s"
            if clean else f"\n{tool}: more than 1 datagram lost at every rate"
        )
    text = "\n".join(lines)
    print(text)
    BUILD.mkdir(exist_ok=True)
    (BUILD / f"multicast-{datetime.datetime.utcnow():%Y%m%d-%H%M%S}.md").write_text(text + "\n")


if __name__ == "__main__":
    common.runMain(main, "multicast.py")
