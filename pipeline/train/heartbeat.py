"""A rank's heartbeat: where it is in training, and whether its process still runs.

Each rank keeps a small memory-mapped file `<run folder>/heartbeat/rank-<r>`:
its pid, the epoch, step and phase it last reached (with the time), and an
"alive" time that a daemon thread refreshes every half second. Writing costs
a struct pack into shared memory, so the loop can beat every step.

The two times tell two faults apart. A process that is stopped (SIGSTOP) or
hung with the interpreter locked stops both; a rank that is only waiting for a
peer in a collective keeps its alive time fresh while its step time ages
(Horovod waits for collectives with the GIL released). The watchdog
(`pipeline.train.watchdog`) reads this file; so do tests, to find a rank's pid.

Only the standard library is imported: the watchdog process loads this module
and must start in milliseconds.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# pid, rank, epoch, step, phase, step time, alive time
_LAYOUT = struct.Struct("<qqqqqdd")
PHASES = ("starting", "training", "validating", "checkpointing", "finished")


def heartbeat_path(run_folder: str | Path, rank: int) -> Path:
    return Path(run_folder) / "heartbeat" / f"rank-{rank}"


@dataclass(frozen=True)
class Beat:
    pid: int
    rank: int
    epoch: int  # 0-based
    step: int  # 0-based, within the phase
    phase: str
    step_time: float  # time.time() when the rank last reached (epoch, step)
    alive_time: float  # time.time() of the alive thread's last tick

    def where(self) -> str:
        if self.phase in ("training", "validating"):
            return f"epoch {self.epoch + 1} {self.phase} step {self.step + 1}"
        return f"epoch {self.epoch + 1} {self.phase}"


def read_beat(path: str | Path) -> Beat | None:
    """The last beat written to `path`, or None before the rank wrote one."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if len(data) < _LAYOUT.size:
        return None
    pid, rank, epoch, step, phase, step_time, alive_time = _LAYOUT.unpack(data[: _LAYOUT.size])
    if pid == 0:
        return None
    return Beat(pid, rank, epoch, step, PHASES[phase], step_time, alive_time)


class Heartbeat:
    """The writing side, owned by one rank process."""

    def __init__(self, path: Path, rank: int, interval_s: float = 0.5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(b"\0" * _LAYOUT.size)
        os.replace(tmp, path)  # a reader never sees a half-created file
        self.path = path
        self._file = open(path, "r+b")  # noqa: SIM115 (closed in close())
        self._map = mmap.mmap(self._file.fileno(), _LAYOUT.size)
        self._pid, self._rank = os.getpid(), rank
        self._where = (0, 0, 0, time.time())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._write(time.time())
        self._thread = threading.Thread(
            target=self._tick, args=(interval_s,), name="heartbeat", daemon=True
        )
        self._thread.start()

    def beat(self, epoch: int, step: int, phase: str) -> None:
        now = time.time()
        with self._lock:
            self._where = (epoch, step, PHASES.index(phase), now)
            self._write(now)

    def _write(self, alive: float) -> None:
        epoch, step, phase, step_time = self._where
        self._map[:] = _LAYOUT.pack(self._pid, self._rank, epoch, step, phase, step_time, alive)

    def _tick(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            with self._lock:
                self._write(time.time())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._map.close()
        self._file.close()
