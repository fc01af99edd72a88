"""B6's measured process: one training worker's reader + train steps, then its peak RSS.

    python -m pipeline.bench.rss_worker JOB.json RESULT.json

A fresh interpreter per measurement, so the peak belongs to this worker alone.
It opens its Petastorm shard of the whole table (rank `rank` of `size`, exactly
as a training rank does), runs `steps` training steps fed by `train_batches`,
and writes its peak resident set size to RESULT.json.

The peak is the kernel's high-water mark of this process image (VmHWM in
/proc/self/status). getrusage's ru_maxrss would not do: Linux carries it over
exec from the forked parent, so every worker would report the bench driver's size.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def peak_rss_mib() -> float:
    """High-water RSS of this process image (Linux); ru_maxrss elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes / KiB


def _rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def measure(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from pipeline.bench.ranks import train_step
    from pipeline.contract.preprocess import Preprocessor
    from pipeline.contract.specs import build_network
    from pipeline.train.data import ReaderSpec, train_batches

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    pre = Preprocessor.from_json(job["preprocessor"])
    model = build_network(job["family"], job["model_config"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    after_imports = _rss_mib()
    started = time.perf_counter()
    steps = 0
    for x, y in train_batches(
        ReaderSpec(**job["reader"]),
        pre,
        rank=job["rank"],
        size=job["size"],
        seed=7,
        batch_size=job["batch_size"],
        steps=job["steps"],
        buffer_rows=job["buffer_rows"],
    ):
        train_step(model, optimizer, torch.from_numpy(x), torch.from_numpy(y))
        steps += 1
    peak = peak_rss_mib()
    return {
        "peak_rss_mib": peak,
        "rss_after_imports_mib": after_imports,
        "steps": steps,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str]) -> int:
    job_file, result_file = argv
    result = measure(json.loads(Path(job_file).read_text()))
    Path(result_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
