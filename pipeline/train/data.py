"""The data path of a rank: Petastorm reads its shard of a pinned Delta version.

Petastorm gets the exact Parquet files of the version (never the table
directory, which also holds files of other versions) and shards them by row
group: rank r reads the row groups that fall to shard r. Shards differ in size,
yet every rank must run the same number of steps or Horovod's collectives
stall; so each epoch every rank takes exactly `steps_per_epoch` batches,
reading its shard again as often as needed.

The repetition is ours, one single-pass reader after another, not Petastorm's
`num_epochs=None`: Petastorm 0.12's ventilator thread reshuffles the row-group
order on every poll while its queue is full at the start of a pass, so from the
second pass on the order depended on thread timing and runs did not repeat
(uber/petastorm issue #798).

Rows are filtered (split, usable label) and turned into arrays on whole row
groups at once with numpy; there is no per-row Python.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.contract.encoding import as_strings
from pipeline.contract.preprocess import Preprocessor
from pipeline.errors import TrainingError
from pipeline.objectstore import filesystem_for, petastorm_filesystem

_logger = logging.getLogger(__name__)

SPLIT = "split"
Batch = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class ReaderSpec:
    """What every rank needs to open its shard of one table version."""

    files: list[str]  # URIs of the version's Parquet files
    columns: list[str]  # the only columns read: features, label, split
    row_groups: int  # in all files; Petastorm shards by row group
    pool: str = "dummy"  # 'dummy' reads in the calling thread: deterministic order
    pool_workers: int = 1


def file_uris(paths: list[str]) -> list[str]:
    """Petastorm wants URLs of one scheme; Delta lists local files as plain paths. Sorted:
    shards are cut from this order, and the log's listing order is not a contract."""
    return sorted(p if "://" in p else "file://" + os.path.abspath(p) for p in paths)


def count_row_groups(uris: list[str]) -> int:
    """Row groups in all files, from the Parquet footers (a few bytes per file)."""
    total = 0
    for uri in uris:
        fs, path = filesystem_for(uri)
        with fs.open_input_file(path) as handle:
            total += pq.ParquetFile(handle).metadata.num_row_groups
    return total


def too_few_row_groups(row_groups: int, ranks: int) -> TrainingError:
    return TrainingError(
        f"the table version has {row_groups} Parquet row group(s) but train.workers={ranks}: "
        "Petastorm shards by row group, so some rank would get no data. Re-ingest with more "
        f"row groups (lake.min_row_groups >= {ranks}, or a smaller lake.row_group_rows), or "
        "lower train.workers"
    )


def steps_per_epoch(usable_train_rows: int, batch_size: int, world_size: int) -> int:
    """Steps each rank runs per epoch: one pass over the train rows across all ranks."""
    return max(1, math.ceil(usable_train_rows / (batch_size * world_size)))


def epoch_seed(seed: int, epoch: int) -> int:
    """A different, reproducible shuffle every epoch (numpy seeds must fit in 32 bits)."""
    return (seed * 1_000_003 + epoch) % (2**32)


def open_reader(
    spec: ReaderSpec, *, rank: int, size: int, seed: int, num_epochs: int | None
) -> Any:
    """A Petastorm batch reader over this rank's shard, shuffled by `seed`."""
    from petastorm import make_batch_reader
    from petastorm.errors import NoDataAvailableError

    # Petastorm drives pyarrow's legacy dataset API, which warns on every use.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"petastorm\..*")
    try:
        return make_batch_reader(
            spec.files,
            schema_fields=spec.columns,
            reader_pool_type=spec.pool,
            workers_count=spec.pool_workers,
            seed=seed,
            shuffle_rows=True,
            shuffle_row_groups=True,
            num_epochs=num_epochs,
            cur_shard=rank,
            shard_count=size,
            # S3 through pyarrow's own client: Petastorm's s3:// route would need s3fs
            filesystem=petastorm_filesystem(spec.files[0]) if spec.files else None,
        )
    except NoDataAvailableError as exc:
        raise too_few_row_groups(spec.row_groups, size) from exc


def select_rows(
    pre: Preprocessor, columns: Mapping[str, Any], split: str | tuple[str, ...]
) -> Batch:
    """Model inputs and targets of the rows of `split` (one split, or several: train.fit_on)
    that the task trains and validates on (for anomaly detection: normal rows only)."""
    targets, keep = pre.label_targets(columns[pre.label.name])
    names = as_strings(columns[SPLIT])
    keep &= np.logical_or.reduce(
        [names == s for s in ((split,) if isinstance(split, str) else split)]
    )
    keep &= pre.task.trains_on(targets)
    picked = {name: np.asarray(columns[name])[keep] for name in pre.feature_names}
    return pre.transform(picked), targets[keep]


def _columns(chunk: Any) -> Mapping[str, Any]:
    return chunk._asdict()


def _passes(spec: ReaderSpec, *, rank: int, size: int, seed: int) -> Iterator[tuple[int, Any]]:
    """(pass number, row-group chunk) over this rank's shard, pass after pass, each pass
    shuffled by its own seed derived from `seed`."""
    for number in itertools.count():
        pass_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
        with open_reader(spec, rank=rank, size=size, seed=pass_seed, num_epochs=1) as reader:
            for chunk in reader:
                yield number, chunk


def train_batches(
    spec: ReaderSpec,
    pre: Preprocessor,
    *,
    rank: int,
    size: int,
    seed: int,
    batch_size: int,
    steps: int,
    buffer_rows: int,
    splits: tuple[str, ...] = ("train",),
) -> Iterator[Batch]:
    """Exactly `steps` full batches of the rows of `splits` (train.fit_on) from this rank's
    shard.

    Petastorm shuffles row-group order and rows within a row group, but tables
    are often written in label order (a folder per class), so one row group can
    hold a single class. Rows therefore pass through a shuffle buffer of up to
    `buffer_rows` rows that mixes many row groups; half of it is carried over
    to mix with the next fill, and an epoch's last fill holds just the rows it needs.
    """
    rng = np.random.default_rng([seed, rank])
    buffer_rows = max(buffer_rows, 2 * batch_size)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    held = emitted = 0
    rows_in_pass = {0: 0}
    for number, chunk in _passes(spec, rank=rank, size=size, seed=seed):
        if number not in rows_in_pass:
            if rows_in_pass[number - 1] == 0:
                raise TrainingError(
                    f"rank {rank}'s shard of the table holds no usable {'+'.join(splits)} "
                    "rows, so it can "
                    "never fill a batch. Re-ingest with smaller row groups "
                    "(lake.row_group_rows) so every shard mixes splits, or lower train.workers"
                )
            rows_in_pass[number] = 0
        x, y = select_rows(pre, _columns(chunk), splits)
        rows_in_pass[number] += len(x)
        xs.append(x)
        ys.append(y)
        held += len(x)
        needed = (steps - emitted) * batch_size
        if held < min(buffer_rows, needed):
            continue
        order = rng.permutation(held)
        x, y = np.concatenate(xs)[order], np.concatenate(ys)[order]
        carry = 0 if held >= needed else min(buffer_rows // 2, held - batch_size)
        count = min((held - carry) // batch_size, steps - emitted)
        for start in range(0, count * batch_size, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        emitted += count
        if emitted == steps:
            return
        xs, ys = [x[count * batch_size :]], [y[count * batch_size :]]
        held = len(xs[0])


def eval_batches(
    spec: ReaderSpec, pre: Preprocessor, *, rank: int, size: int, split: str, batch_size: int
) -> Iterator[Batch]:
    """One pass over the rows of `split` in this rank's shard, in batches of <= batch_size."""
    with open_reader(spec, rank=rank, size=size, seed=0, num_epochs=1) as reader:
        for chunk in reader:
            x, y = select_rows(pre, _columns(chunk), split)
            for start in range(0, len(x), batch_size):
                yield x[start : start + batch_size], y[start : start + batch_size]
