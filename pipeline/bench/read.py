"""B2: the Petastorm reader over the Delta files, yielding torch batches, vs a pyarrow.dataset scan.

Both sides read the same files and columns and turn the train rows into the
same model inputs (`select_rows`) cut into torch batches of the same size;
ours is the training ranks' own data path (`train_batches`: Petastorm, shuffle
buffer), the peer a plain sequential scan with no shuffling: the read limit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pyarrow.dataset as pads
import torch

from pipeline.bench.figures import Figure, Pair
from pipeline.bench.table import BenchTable
from pipeline.bench.timing import alternate, timed
from pipeline.config import Config
from pipeline.train.data import Batch, epoch_seed, select_rows, train_batches

_logger = logging.getLogger(__name__)


def petastorm_batches(table: BenchTable, cfg: Config, seed: int) -> Iterator[Batch]:
    """One epoch of one rank (of one) as the training loop gets it."""
    return train_batches(
        table.reader(cfg),
        table.pre,
        rank=0,
        size=1,
        seed=seed,
        batch_size=cfg.train.batch_size,
        steps=table.train_steps(cfg.train.batch_size, 1),
        buffer_rows=cfg.train.shuffle_buffer_rows,
    )


def arrow_batches(table: BenchTable, batch_size: int) -> Iterator[Batch]:
    """The same train rows from a sequential pyarrow.dataset scan, unshuffled."""
    dataset = pads.dataset(table.paths, format="parquet")
    for record_batch in dataset.to_batches(columns=table.columns):
        columns = {n: record_batch.column(n).to_numpy(zero_copy_only=False) for n in table.columns}
        x, y = select_rows(table.pre, columns, "train")
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]


def drain(batches: Iterator[Batch]) -> int:
    """Rows in all batches, each turned into torch tensors as a rank does."""
    rows = 0
    for x, y in batches:
        features, _targets = torch.from_numpy(x), torch.from_numpy(y)
        rows += features.shape[0]
    return rows


def bench_read(cfg: Config, table: BenchTable) -> Figure:
    batch = cfg.train.batch_size
    epochs = iter(range(1_000_000))

    def ours() -> float:
        rows, seconds = timed(
            lambda: drain(petastorm_batches(table, cfg, epoch_seed(7, next(epochs))))
        )
        return rows / seconds

    def peer() -> float:
        rows, seconds = timed(lambda: drain(arrow_batches(table, batch)))
        return rows / seconds

    mine, theirs = alternate(cfg.bench.rounds, ours, peer, "B2")
    scanned, scan_s = timed(lambda: _scan_only(table))
    return Figure(
        key="B2",
        name="Petastorm reader -> torch batches",
        main=Pair(
            value=max(mine),
            peer=max(theirs),
            units="samples/s",
            peer_name="pyarrow.dataset scan + same preprocessing",
        ),
        also={
            "vs raw scan": Pair(
                value=max(mine),
                peer=scanned / scan_s,
                units="samples/s",
                peer_name="pyarrow.dataset scan alone (all rows, no preprocessing)",
            )
        },
        rows=table.rows,
        workers=1,
        batch_size=batch,
        measured=(
            "train samples/s of one rank's epoch from pipeline.train.data.train_batches "
            "(Petastorm make_batch_reader over the snapshot's file list, shuffle buffer, numpy "
            "preprocessing) vs pyarrow.dataset.to_batches over the same files and columns with "
            "the same preprocessing, unshuffled; both end in torch.from_numpy batches"
        ),
        details={
            "train_rows_per_epoch": table.counts.usable["train"],
            "files": len(table.uris),
            "row_groups": table.row_groups,
            "ours_all_rounds": mine,
            "peer_all_rounds": theirs,
        },
    )


def _scan_only(table: BenchTable) -> int:
    """All rows of the same columns, no preprocessing: what the disk and decoder allow."""
    dataset = pads.dataset(table.paths, format="parquet")
    return sum(b.num_rows for b in dataset.to_batches(columns=table.columns))
