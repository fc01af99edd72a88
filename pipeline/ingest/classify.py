"""Raw input -> one row per input row, with typed clean columns and its verdict.

Both tabular and image inputs come out in the same shape: the clean columns,
then `_source_file`, `_row_id` (input order), `_rule`/`_reason` (null when
the row is clean), `_raw` (the raw values as JSON) and `_split_key`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.ingest import images, rules, sequences, sql
from pipeline.ingest.array_sequences import read_array_series
from pipeline.ingest.sources import CORRUPT, LINE_REASON, LINE_RULE, col, read_tabular
from pipeline.ingest.splits import SOURCE_SPLIT, declared_split, split_key, undeclared_split
from pipeline.ingest.sql import ident, literal

META = ["_source_file", "_row_id", "_rule", "_reason", "_raw", "_split_key"]


@dataclass(frozen=True)
class Classified:
    df: DataFrame
    columns: list[str]  # the clean columns, in table order
    rules: tuple[str, ...] = ()  # every value `_rule` can take: counted per rule at ingest


def _rule_names(checks: list[rules.Check]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.rule for c in checks))


def _key_columns(data: DataConfig, fallback: list[str]) -> list[str]:
    return data.id or fallback


def _split_check(column: str, data: DataConfig) -> rules.Check:
    """data.split_column's rule: every row names its split (`column` holds it)."""
    assert data.split_column is not None
    failed, reason = undeclared_split(column, data.split_column)
    return rules.Check("split", failed, reason)


def classify_tabular(
    spark: SparkSession, data: DataConfig, location: str | list[str]
) -> Classified:
    raw, header = read_tabular(spark, data, location)
    refs = [rules.raw_ref(i) for i in range(len(header))]
    raw = raw.selectExpr(
        *[f"{ident(h)} AS {r}" for h, r in zip(header, refs, strict=True)],
        *[ident(c) for c in (CORRUPT, LINE_RULE, LINE_REASON, "_source_file", "_row_id")],
    )
    plans = rules.plan_columns(header, data)
    types = {p.clean: p.dtype for p in plans}
    rules.check_rule_columns(types, data)
    split_ref = _split_ref(plans, data)
    staged, extract_checks = rules.stage_strings(raw, plans, data)
    typed, cast_checks = rules.cast_staged(staged, plans)
    raw_of = {p.clean: p.ref for p in plans}
    value_checks = [
        *extract_checks,
        *cast_checks,
        *rules.magnitude_checks(types, data),
        *rules.value_checks(types, data, raw_of, {c: rules.staged_name(c) for c in types}),
    ]
    if split_ref is not None:
        value_checks.append(_split_check(split_ref, data))
    checks = [*rules.line_checks(), rules.parse_check(), *rules.on_parsed_lines(value_checks)]
    judged = rules.apply_checks(typed, checks)
    fields = ", ".join(f"{literal(h)}, {r}" for h, r in zip(header, refs, strict=True))
    raw_json = sql.when(
        f"{ident(CORRUPT)} IS NOT NULL",
        f"to_json(named_struct('line', {ident(CORRUPT)}))",
        f"to_json(named_struct({fields}), map('ignoreNullFields', 'false'))",
    )
    # Without an id, the split hashes all raw values: independent of the cleaning rules.
    key = split_key(data.id or refs)
    clean = [p.clean for p in plans if p.clean != data.split_column]
    out = judged.select(
        *[col(c) for c in clean],  # names may hold dots or backticks (data.rename)
        "_source_file",
        "_row_id",
        "_rule",
        "_reason",
        # Only rejects keep their raw values: JSON for every clean row would double the data.
        sql.expr(sql.when("_rule IS NOT NULL", raw_json), "_raw"),
        key.alias("_split_key"),
        *([declared_split(split_ref).alias(SOURCE_SPLIT)] if split_ref else []),
    )
    return Classified(out, clean, _rule_names(checks))


def _split_ref(plans: list[rules.ColumnPlan], data: DataConfig) -> str | None:
    """The raw column behind data.split_column (a clean column name), or None."""
    if data.split_column is None:
        return None
    refs = {p.clean: p.ref for p in plans}
    if data.split_column not in refs:
        raise DataError(
            f"data.split_column '{data.split_column}' is not a column of data.source "
            f"'{data.source}' (clean columns: {sorted(refs)}); name the column that holds "
            "each row's split, or drop data.split_column"
        )
    return refs[data.split_column]


def classify_images(spark: SparkSession, data: DataConfig, location: str) -> Classified:
    decoded = images.read_images(spark, data, location)
    types = {"image": "array<float>", "label": "string", "path": "string"}
    rules.check_rule_columns(types, data)
    if data.rules.ranges:
        raise DataError("data.rules.ranges does not apply to image datasets; remove it")
    decode, layout = (
        rules.Check(rule, f"_decode_rule = {literal(rule)}", "_decode_reason")
        for rule in ("decode", "label")
    )
    checks = [decode, layout, *rules.value_checks(types, data)]
    judged = rules.apply_checks(decoded, checks)
    key = split_key(_key_columns(data, ["path"]))
    clean = list(types)
    out = judged.select(
        *clean, "_source_file", "_row_id", "_rule", "_reason", "_raw", key.alias("_split_key")
    )
    return Classified(out, clean, _rule_names(checks))


def classify_sequences(
    spark: SparkSession, data: DataConfig, location: str | list[str]
) -> Classified:
    """Series (.ts files or an array column) in the canonical padded layout (see `sequences`),
    with `_source_split`."""
    if data.format == "ts":
        assert isinstance(location, str)  # a .ts source is read whole (see ingest.ledger)
        parsed = sequences.read_ts(spark, data, location)
    else:
        parsed = read_array_series(spark, data, location)
    seq = data.sequence
    if len(data.id) > 1:
        raise DataError(
            f"data.id={data.id}: a sequence table has one id column; give each series one "
            "id (e.g. join the columns into one before ingest) or leave data.id empty"
        )
    # The table names its id and label columns as data.id and data.label say.
    id_name, label = (data.id or ["id"])[0], data.label or "label"
    label_type = data.schema.get(label, "string")
    staged, checks = sequences.canonical(parsed, data, sequences.padded_length(parsed, data))
    staged = staged.withColumnRenamed("id", id_name).withColumnRenamed("label", label)
    types = {
        id_name: "string",
        seq.column: "array<float>",
        seq.length_column: "int",
        seq.channels_column: "int",
        label: label_type,
    }
    rules.check_rule_columns(types, data)
    if label_type != "string":  # a regression target (@targetLabel): a number or a reject
        text = col("_label_text")
        staged = staged.withColumn("_label_text", col(label))
        staged = staged.withColumn(label, text.cast(label_type))
        checks.append(
            rules.Check(
                f"cast:{label}",
                f"_label_text IS NOT NULL AND {ident(label)} IS NULL",
                sql.text(f"{label} '", ident("_label_text"), f"' is not a {label_type}"),
            )
        )
    if data.split_column is not None:
        checks.append(_split_check(SOURCE_SPLIT, data))
    checks = [*checks, *rules.value_checks(types, data)]
    judged = rules.apply_checks(staged, checks)
    judged = judged.withColumn(SOURCE_SPLIT, declared_split(SOURCE_SPLIT))
    key = split_key([id_name])
    clean = list(types)
    out = judged.select(
        *[col(c) for c in clean],  # names may hold dots or backticks (data.rename)
        "_source_file",
        "_row_id",
        "_rule",
        "_reason",
        F.when(col("_rule").isNotNull(), col("_raw")).alias("_raw"),
        key.alias("_split_key"),
        SOURCE_SPLIT,
    )
    # One more pass over the input (sequence sources are small next to tabular ones) so that
    # a table never mixes shapes: the reader reshapes every row by one channel count.
    sequences.check_channels(out.where(col("_rule").isNull()), data)
    return Classified(out, clean, _rule_names(checks))


def classify(spark: SparkSession, data: DataConfig, location: str | list[str]) -> Classified:
    """`location`: the source, or the files of it still to ingest (tabular formats only)."""
    if data.format == "images":
        assert isinstance(location, str)  # an image folder is read whole (see ingest.ledger)
        return classify_images(spark, data, location)
    if data.sequences:
        return classify_sequences(spark, data, location)
    return classify_tabular(spark, data, location)
