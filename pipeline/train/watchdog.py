"""A rank's watchdog: a separate process that ends its rank when the rank stops making progress.

Horovod's launcher waits for every rank process to exit, so one stopped rank
(SIGSTOP, a hung driver call) would hold the whole job forever even after the
other ranks fail on Gloo's timeout. The watchdog is a child process of the
rank, so a signal that stops the rank does not stop it. It reads the rank's
heartbeat (`pipeline.train.heartbeat`) twice a second and SIGKILLs the rank when

- its process has not run for `stall_timeout_s` (the alive time is stale): the
  rank is stopped or hung; or
- it has not reached a new step for `stall_timeout_s + grace`: it waits for
  something that never comes. The grace lets a stopped peer's own watchdog act
  first, so the report names the rank at fault, not the ones waiting for it.

Before killing, it writes a JSON report next to the heartbeat, which the
driver turns into the attempt's error message. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.train.heartbeat import Beat, read_beat

POLL_S = 0.5


def grace_s(stall_timeout_s: float) -> float:
    """How much longer than a stopped rank a waiting rank is given."""
    return max(5.0, stall_timeout_s / 2)


def report_path(heartbeat: Path) -> Path:
    return heartbeat.with_name(heartbeat.name + ".stalled.json")


@dataclass(frozen=True)
class StallReport:
    """Why a watchdog ended its rank; read back by the driver."""

    rank: int
    pid: int
    host: str
    where: str
    reason: str  # "stopped responding" or "made no progress"
    seconds: float
    process_state: str

    def message(self) -> str:
        return (
            f"rank {self.rank} (pid {self.pid} on {self.host}) {self.reason} for "
            f"{self.seconds:.0f}s; its last step was {self.where} (process state: "
            f"{self.process_state})"
        )


def read_reports(folder: Path) -> list[StallReport]:
    reports = []
    for path in sorted(folder.glob("*.stalled.json")):
        try:
            reports.append(StallReport(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return reports


def process_state(pid: int) -> str:
    """Linux's one-letter state of `pid` (T = stopped), spelled out; "unknown" elsewhere."""
    names = {"R": "running", "S": "sleeping", "D": "disk wait", "T": "stopped", "t": "traced"}
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "unknown"
    letter = stat.rsplit(")", 1)[-1].split()[0]
    return names.get(letter, letter)


def check(beat: Beat, now: float, stall_timeout_s: float) -> tuple[str, float] | None:
    """(reason, seconds) when the rank must be ended, else None."""
    alive_age, step_age = now - beat.alive_time, now - beat.step_time
    if alive_age > stall_timeout_s:
        return "stopped responding", alive_age
    if step_age > stall_timeout_s + grace_s(stall_timeout_s):
        return "made no progress", step_age
    return None


def watch(heartbeat: Path, parent: int, stall_timeout_s: float) -> int:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:  # the rank exited: nothing left to watch
            return 0
        beat = read_beat(heartbeat)
        if beat is None or beat.phase == "finished":
            continue
        verdict = check(beat, time.time(), stall_timeout_s)
        if verdict is None:
            continue
        reason, seconds = verdict
        report = StallReport(
            rank=beat.rank,
            pid=parent,
            host=socket.gethostname(),
            where=beat.where(),
            reason=reason,
            seconds=round(seconds, 1),
            process_state=process_state(parent),
        )
        report_path(heartbeat).write_text(json.dumps(asdict(report)))
        sys.stderr.write(
            f"watchdog: {report.message()}; train.stall_timeout_s={stall_timeout_s:g}: killing it\n"
        )
        sys.stderr.flush()
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent, signal.SIGKILL)
        return 0


def start_watchdog(heartbeat: Path, stall_timeout_s: float) -> subprocess.Popen[bytes]:
    """Watch the calling process (a rank) from a child process."""
    root = str(Path(__file__).resolve().parents[2])  # so `-m pipeline...` imports this checkout
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    argv = [
        sys.executable, "-m", "pipeline.train.watchdog",
        "--heartbeat", str(heartbeat),
        "--parent", str(os.getpid()),
        "--stall-timeout-s", str(stall_timeout_s),
    ]  # fmt: skip
    return subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": path}, stdin=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heartbeat", required=True, type=Path)
    parser.add_argument("--parent", required=True, type=int)
    parser.add_argument("--stall-timeout-s", required=True, type=float)
    args = parser.parse_args(argv)
    return watch(args.heartbeat, args.parent, args.stall_timeout_s)


if __name__ == "__main__":
    sys.exit(main())
