"""Which judged rows an ingest writes: one shuffle de-duplicates, spreads and orders them.

Every judged row goes through ONE shuffle into `tasks` partitions (a table needs at
least `min_row_groups` of them) and one sort within each. That single pass does:

- de-duplication: a clean row is kept if it is the first of its `data.rules.dedup_key`,
  a reject if it is the first of its raw values; "first" is input order (source
  file, then position), so re-runs agree. `_copies` counts each group's rows, so
  the counts still see every input row;
- a row order by a hash of the group, so that row groups mix classes where raw
  data arrives grouped by label (Petastorm reads whole row groups);
- a layout that depends only on the rows: the same input gives the same files,
  rows and order, so a seeded training run repeats across ingests.

Groups the tables already hold (a de-duplicating append) are marked `_seen`
rather than dropped, for the same reason as `_copies`.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline.ingest.sources import col

ORDER_SALT = "row-order"
_OK, _RAW, _HASH = "_ok", "_graw", "_ghash"


def _key_groups(key: list[str]) -> list[str]:
    return [f"_g{i}" for i in range(len(key))]


def _group_columns(key: list[str]) -> list[str]:
    """The columns `with_groups` adds, which together name a row's dedup group."""
    return [_OK, *_key_groups(key), _RAW]


def with_groups(judged: DataFrame, key: list[str]) -> DataFrame:
    """`judged` plus its dedup group: whether it passed, and its key (clean) or raw values."""
    ok = col("_rule").isNull()
    keys = [F.when(ok, col(k)).alias(g) for k, g in zip(key, _key_groups(key), strict=True)]
    return judged.select("*", ok.alias(_OK), *keys, F.when(~ok, col("_raw")).alias(_RAW))


def seen_groups(
    judged: DataFrame, key: list[str], clean: DataFrame | None, rejects: DataFrame | None
) -> DataFrame | None:
    """The groups the tables already hold: keys of `clean`, raw values of `rejects`."""
    types = [judged.schema[k].dataType for k in key]
    groups = _key_groups(key)
    parts = []
    if clean is not None:
        keys = [col(k).alias(g) for k, g in zip(key, groups, strict=True)]
        parts.append(clean.select(F.lit(True).alias(_OK), *keys, F.lit(None).cast("string")))
    if rejects is not None:
        nulls = [F.lit(None).cast(t).alias(g) for t, g in zip(types, groups, strict=True)]
        parts.append(rejects.select(F.lit(False).alias(_OK), *nulls, col("raw")))
    if not parts:
        return None
    named = [p.toDF(*_group_columns(key)) for p in parts]
    return reduce(DataFrame.unionByName, named).distinct()


def mark_seen(grouped: DataFrame, seen: DataFrame | None, key: list[str]) -> DataFrame:
    """`_seen`: whether the row's group is in `seen` (a null key never matches, as in Delta)."""
    if seen is None:
        return grouped.withColumn("_seen", F.lit(False))
    names = _group_columns(key)
    marks = seen.select(*[col(c).alias(f"_s{c}") for c in names], F.lit(True).alias("_seen"))
    # Null-safe on the group columns (a clean row's raw group is null), but a null key
    # value itself never matches: such a row is new.
    cond = reduce(
        Column.__and__,
        [grouped[c].eqNullSafe(marks[f"_s{c}"]) for c in names]
        + [grouped[g].isNotNull() | ~grouped[_OK] for g in _key_groups(key)],
    )
    joined = grouped.join(marks, cond, "left")
    return joined.select(*grouped.columns, F.coalesce(col("_seen"), F.lit(False)).alias("_seen"))


def first_of_each(grouped: DataFrame, key: list[str], tasks: int) -> DataFrame:
    """The first row of each group (`_copies`: the group's size), in `tasks` partitions,
    each ordered by a hash of the group. Without a key every row is kept."""
    names = _group_columns(key)
    if not key:
        spread = grouped.repartition(tasks, col("_split_key"))
        order = F.xxhash64(col("_split_key"), F.lit(ORDER_SALT))
        return spread.sortWithinPartitions(order).drop(*names).withColumn("_copies", F.lit(1))
    hashed = grouped.withColumn(_HASH, F.xxhash64(*[col(c) for c in names], F.lit(ORDER_SALT)))
    # Partitioned by the group, the window below needs no second shuffle; its sort by
    # (hash, group, input order) is also the row order written.
    spread = hashed.repartition(tasks, *[col(c) for c in names])
    window = Window.partitionBy(_HASH, *names).orderBy("_source_file", "_row_id")
    whole = window.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    ranked = spread.select(
        "*",
        F.row_number().over(window).alias("_nth"),
        F.count(F.lit(1)).over(whole).alias("_copies"),
    )
    return ranked.where(col("_nth") == 1).drop("_nth", _HASH, *names)
