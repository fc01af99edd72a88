"""An ingest's counts: input rows by verdict, new clean rows by split, new rejects by rule.

They are counted while the clean table is written (`ObservedCounts`, Spark's
`observe`), so the raw data is read and judged once and no Spark job only counts.
Where the write did not stream the rows through the observed plan in one pass (an
insert-only MERGE may materialise its source first), the observation stays empty and
`count_written` counts them with one aggregation instead.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F

from pipeline.ingest.sources import col
from pipeline.ingest.splits import SPLITS

_logger = logging.getLogger(__name__)

# Spark reports an observation from its listener bus, just after the action returns.
_REPORT_WAIT_S = 5.0


@dataclass(frozen=True)
class IngestCounts:
    ok_in: int  # input rows that passed the rules, duplicates included
    rejected_in: int  # input rows that failed one, duplicates included
    splits: dict[str, int] = field(default_factory=dict)  # new clean rows by split
    rules: dict[str, int] = field(default_factory=dict)  # new rejects by rule

    @property
    def rows_in(self) -> int:
        return self.ok_in + self.rejected_in


def count_written(written: DataFrame) -> IngestCounts:
    """One aggregation over the de-duplicated rows ("_copies": the input rows each kept row
    stands for; "_seen": the tables already hold its group)."""
    ok = col("_rule").isNull().alias("ok")
    groups = written.groupBy(ok, col("_seen").alias("seen"), "split", "_rule").agg(
        F.sum("_copies").alias("copies"), F.count(F.lit(1)).alias("rows")
    )
    verdict: Counter[bool] = Counter()
    splits: Counter[str] = Counter()
    by_rule: Counter[str] = Counter()
    for r in groups.collect():
        verdict[bool(r["ok"])] += int(r["copies"])
        if not r["seen"]:
            if r["ok"]:
                splits[str(r["split"])] += int(r["rows"])
            else:
                by_rule[str(r["_rule"])] += int(r["rows"])
    return IngestCounts(verdict[True], verdict[False], dict(splits), dict(by_rule))


class ObservedCounts:
    """`IngestCounts` gathered by whichever Spark action first runs `self.df` to the end."""

    def __init__(self, written: DataFrame, rules: tuple[str, ...]) -> None:
        self._rules = rules
        self._observation = Observation()
        ok, new = col("_rule").isNull(), ~col("_seen")

        def rows(condition: Column, name: str) -> Column:
            return F.count(F.when(condition, F.lit(1))).alias(name)

        metrics = [
            F.coalesce(F.sum(F.when(ok, col("_copies"))), F.lit(0)).alias("ok_in"),
            F.coalesce(F.sum(F.when(~ok, col("_copies"))), F.lit(0)).alias("rejected_in"),
            *[rows(ok & new & (col("split") == s), f"split{i}") for i, s in enumerate(SPLITS)],
            *[rows(~ok & new & (col("_rule") == r), f"rule{i}") for i, r in enumerate(rules)],
            # a `_rule` this list does not name: the counts would be wrong, so not used
            rows(~ok & ~col("_rule").isin(*rules), "unnamed") if rules else rows(~ok, "unnamed"),
        ]
        self.df = written.observe(self._observation, *metrics)

    def result(self) -> IngestCounts | None:
        """The counts, or None when no action ran `df` through (see the module's note)."""
        jo: Any = getattr(self._observation, "_jo", None)
        if jo is None:
            return None
        future = jo.future()
        deadline = time.monotonic() + _REPORT_WAIT_S
        while not future.isCompleted() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not future.isCompleted():
            _logger.info("no write ran the observed rows through; counting them separately")
            return None
        m = self._observation.get
        if int(m["unnamed"]):
            _logger.warning("%d rejects carry a rule the counts do not name", m["unnamed"])
            return None
        return IngestCounts(
            ok_in=int(m["ok_in"]),
            rejected_in=int(m["rejected_in"]),
            splits={s: int(m[f"split{i}"]) for i, s in enumerate(SPLITS) if m[f"split{i}"]},
            rules={r: int(m[f"rule{i}"]) for i, r in enumerate(self._rules) if m[f"rule{i}"]},
        )
