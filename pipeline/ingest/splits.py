"""Deterministic train/val/test assignment from a hash of each row's key.

A row's split depends only on its key (the `data.id` values, or all raw values
when there is no id) and the fractions, so it never changes across re-runs,
appends or cluster sizes. Spark's xxhash64 (seed 42) is part of Spark's
stable SQL function set; the key is hashed as one string, so column types do
not change the result.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline.config import SplitConfig
from pipeline.ingest.sql import Expr, ident, literal, text

SPLIT_BUCKETS = 10_000
SPLITS = ("train", "val", "test")
KEY_SEPARATOR = "\u001f"  # unit separator: cannot be confused with ordinary text
NULL_MARK = "\u0000"
# Part of the key of every cached copy that carries a computed split: change it with the rule.
RULE_VERSION = "xxhash64-seed42-v1"
# The same two characters in SQL text: Spark's parser reads \uXXXX escapes in literals.
_KEY_SEPARATOR_SQL, _NULL_MARK_SQL = "'\\u001f'", "'\\u0000'"


def split_key(columns: list[str]) -> Column:
    """One string per row from the key columns (by name); nulls are kept distinct from
    empty strings. Built as SQL text (see pipeline.ingest.sql): a key of every raw column
    would otherwise cost a few Py4J round trips per column."""
    parts = [f"coalesce(CAST({ident(c)} AS STRING), {_NULL_MARK_SQL})" for c in columns]
    return F.expr(f"concat_ws({_KEY_SEPARATOR_SQL}, {', '.join(parts)})")


def split_of(key: Column, fractions: SplitConfig) -> Column:
    bucket = F.pmod(F.xxhash64(key), F.lit(SPLIT_BUCKETS)) / F.lit(float(SPLIT_BUCKETS))
    return (
        F.when(bucket < F.lit(fractions.train), F.lit("train"))
        .when(bucket < F.lit(fractions.train + fractions.val), F.lit("val"))
        .otherwise(F.lit("test"))
    )


SOURCE_SPLIT = "_source_split"


# What a split column may hold (case and surrounding spaces ignored) and the split it means.
DECLARED = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def _declared(value: str) -> str:
    """SQL: the split a split column's value (SQL text) means, or null."""
    word = f"lower(trim(CAST({value} AS STRING)))"
    cases = " ".join(f"WHEN {literal(w)} THEN {literal(split)}" for w, split in DECLARED.items())
    return f"CASE {word} {cases} END"


def declared_split(column: str) -> Column:
    """A split column's value as train | val | test; null when it is none of `DECLARED`."""
    return F.expr(_declared(ident(column)))


def undeclared_split(column: str, name: str) -> tuple[str, str]:
    """Rows whose split column (`column`; data.split_column is `name`) holds no split, and
    why, in words: SQL text for a cleaning rule (pipeline.ingest.rules.Check)."""
    value = ident(column)
    quote = literal("'")
    held = Expr(f"coalesce(concat({quote}, CAST({value} AS STRING), {quote}), 'nothing')")
    needs = f"; each row needs one of {', '.join(DECLARED)}"
    reason = text(f"split column '{name}' holds ", held, needs)
    return f"{_declared(value)} IS NULL", reason


def split_of_file_name(path: Column) -> Column:
    """The split a file's name declares (`GunPoint_TRAIN.ts`, `day1_test.json`), else null."""
    stem = F.upper(F.regexp_extract(path, r"([^/]*?)(\.[^./]*)?$", 1))
    return F.when(stem.endswith("_TRAIN"), F.lit("train")).when(
        stem.endswith("_TEST"), F.lit("test")
    )


def carved_split(key: Column, source: Column, fractions: SplitConfig) -> Column:
    """A source's own split kept: its test rows stay test (unseen), its val rows val, and
    `source_val` of its train rows become validation by the same key hash; rows without one
    take `split_of`."""
    bucket = F.pmod(F.xxhash64(key), F.lit(SPLIT_BUCKETS)) / F.lit(float(SPLIT_BUCKETS))
    return (
        F.when(source == F.lit("test"), F.lit("test"))
        .when(source == F.lit("val"), F.lit("val"))
        .when((source == F.lit("train")) & (bucket < F.lit(fractions.source_val)), F.lit("val"))
        .when(source == F.lit("train"), F.lit("train"))
        .otherwise(split_of(key, fractions))
    )


def assign_split(df: DataFrame, key_column: str, fractions: SplitConfig) -> DataFrame:
    """Add a `split` column ("train" | "val" | "test") from `key_column`, keeping a source's
    own split where the rows carry one (`_source_split`)."""
    if SOURCE_SPLIT in df.columns:
        split = carved_split(F.col(key_column), F.col(SOURCE_SPLIT), fractions)
        return df.withColumn("split", split)
    return df.withColumn("split", split_of(F.col(key_column), fractions))


def split_variant(id_columns: list[str], fractions: SplitConfig) -> str:
    """What the split of `with_split` depends on, for keying a copy of rows that carry it."""
    return (
        f"split:{RULE_VERSION}:{KEY_SEPARATOR.join(id_columns)}:"
        f"{fractions.train}/{fractions.val}/{fractions.test}"
    )


def with_split(df: DataFrame, id_columns: list[str], fractions: SplitConfig) -> DataFrame:
    """Add the `split` ingest gives a row with these `data.id` values: the same key (the typed
    values as strings, nulls marked) hashed by the same rule, so both always agree."""
    key = split_key(id_columns)
    return df.withColumn("split", split_of(key, fractions))
