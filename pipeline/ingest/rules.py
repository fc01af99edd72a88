"""Cleaning rules from config, compiled to Spark column expressions.

Every raw value goes through the same steps, in this order: trim, null
sentinels ("NA", "."), regex extract, case normalisation, then a cast to its
declared type. Each step that can fail, and then the checks on typed values
(required, allowed values, ranges), is a `Check`; a row's `_rule` is the
first check it fails (e.g. "cast:body_mass_g") and `_reason` lists every
failure in words. Rows with no failure are clean.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline.config import DataConfig
from pipeline.errors import ConfigError, DataError
from pipeline.ingest.naming import did_you_mean, snake_case
from pipeline.ingest.sources import CORRUPT, LINE_REASON, LINE_RULE, col

NUMERIC_TYPES = {"double", "float", "int", "integer", "long", "bigint", "short", "smallint"}
SCALAR_TYPES = NUMERIC_TYPES | {"string", "boolean", "date", "timestamp"}
_DECIMAL = re.compile(r"decimal\(\s*\d+\s*,\s*\d+\s*\)")
REASON_VALUE_CHARS = 80

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnPlan:
    """One raw column and what it becomes in the clean table."""

    raw: str  # the header's name, for messages
    ref: str  # the column while cleaning: raw names may clash with clean ones
    clean: str
    dtype: str  # Spark SQL type name


def raw_ref(position: int) -> str:
    return f"__r{position}"


def staged_name(clean: str) -> str:
    """The column holding a value after the string steps, before its cast."""
    return f"__s_{clean}"


@dataclass(frozen=True)
class Check:
    """A rule: the rows it rejects and why, in words."""

    rule: str
    failed: Column
    reason: Column


def _valid_type(dtype: str) -> bool:
    return dtype in SCALAR_TYPES or bool(_DECIMAL.fullmatch(dtype))


def plan_columns(header: list[str], data: DataConfig) -> list[ColumnPlan]:
    """Map the raw header to clean names and types; fail when it does not match the schema."""
    unknown_renames = [raw for raw in data.rename if raw not in header]
    if unknown_renames:
        raise DataError(
            f"data.rename names raw column(s) {unknown_renames} that are not in the header of "
            f"'{data.source}' (header: {header}); fix the names in data.rename"
        )
    plans: list[ColumnPlan] = []
    seen: dict[str, str] = {}
    for position, raw in enumerate(header):
        clean = data.rename.get(raw) or snake_case(raw)
        if not clean:
            raise DataError(f"raw column {raw!r} has no usable name; map it in data.rename")
        if clean in seen:
            raise DataError(
                f"raw columns '{seen[clean]}' and '{raw}' both become '{clean}'; "
                "give one of them another name in data.rename"
            )
        seen[clean] = raw
        dtype = data.schema.get(clean, "string").strip().lower()
        if not _valid_type(dtype):
            raise ConfigError(
                f"data.schema.{clean}: unknown type '{dtype}'; use one of "
                f"{', '.join(sorted(SCALAR_TYPES))} or decimal(p,s)"
            )
        plans.append(ColumnPlan(raw, raw_ref(position), clean, dtype))
    missing = [name for name in data.schema if name not in seen]
    if missing:
        mapping = ", ".join(f"'{p.raw}' -> {p.clean}" for p in plans)
        raise DataError(
            f"the header of '{data.source}' does not match data.schema: no column becomes "
            f"{missing}{did_you_mean(missing[0], seen)}. The header maps as: {mapping}. "
            "Fix the file's header, data.rename or data.schema"
        )
    if data.keep:
        unknown = [k for k in data.keep if k not in seen]
        if unknown:
            raise DataError(
                f"data.keep names {unknown}{did_you_mean(unknown[0], seen)}, which the data does "
                f"not have (clean columns: {sorted(seen)}); fix data.keep"
            )
        warn_dropped_by_keep(plans, data)
        plans = [p for p in plans if p.clean in data.keep]
    return plans


def warn_dropped_by_keep(plans: list[ColumnPlan], data: DataConfig) -> None:
    """Name the source columns `data.keep` leaves out that the config does not know (not in
    data.schema or data.rename): a new column in a delivery is never dropped silently."""
    known = set(data.schema) | set(data.rename.values())
    extra = [p.clean for p in plans if p.clean not in data.keep and p.clean not in known]
    if extra:
        _logger.warning(
            "data.keep drops column(s) %s that the source has but the config does not name: "
            "add them to data.keep (with data.schema_evolution=add_columns to add them to an "
            "existing table), or to data.schema to acknowledge them",
            extra,
        )


def check_rule_columns(columns: dict[str, str], data: DataConfig) -> None:
    """Every column a rule or the model names must exist, with a type that fits the rule.

    `columns` maps clean column names to their Spark SQL types.
    """
    rules = data.rules
    named: list[tuple[str, list[str]]] = [
        ("data.rules.required", rules.required),
        ("data.rules.allowed", list(rules.allowed)),
        ("data.rules.ranges", list(rules.ranges)),
        ("data.rules.lowercase", rules.lowercase),
        ("data.rules.uppercase", rules.uppercase),
        ("data.rules.dedup_key", rules.dedup_key),
        ("data.rules.extract", list(rules.extract)),
        ("data.id", data.id),
        ("data.features", data.features),
        ("data.categorical", data.categorical),
        ("data.label", [data.label] if data.label else []),
    ]
    for where, names in named:
        for name in names:
            if name not in columns:
                raise DataError(
                    f"{where} names column '{name}'{did_you_mean(name, columns)}, which is not "
                    f"in the data (clean columns: {', '.join(columns)}); fix {where} "
                    "(rules use the clean, snake_case names)"
                )
    for name, bounds in rules.ranges.items():
        dtype = columns[name]
        if not (dtype in NUMERIC_TYPES or dtype.startswith("decimal") or dtype == "date"):
            raise ConfigError(
                f"data.rules.ranges.{name}: column '{name}' is {dtype}; declare a numeric type "
                f"for it in data.schema (e.g. data.schema.{name}=double) or drop the range"
            )
        if len(bounds) != 2:
            raise ConfigError(
                f"data.rules.ranges.{name} must be [min, max] (null for open), got {bounds}"
            )
    for name, pattern in rules.extract.items():
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise ConfigError(
                f"data.rules.extract.{name}: invalid regex {pattern!r}: {exc}"
            ) from exc
        if groups < 1:
            raise ConfigError(
                f"data.rules.extract.{name}: the regex {pattern!r} needs one capture group, "
                "e.g. '^(\\w+)'"
            )


def _shown(value: Column) -> Column:
    return F.coalesce(F.substring(value.cast("string"), 1, REASON_VALUE_CHARS), F.lit("<null>"))


def _text(*parts: Column | str) -> Column:
    return F.concat(*[p if isinstance(p, Column) else F.lit(p) for p in parts])


def stage_strings(
    df: DataFrame, plans: list[ColumnPlan], data: DataConfig
) -> tuple[DataFrame, list[Check]]:
    """Trim, null sentinels, extract and case rules, on string values under their clean names.

    Keeps the raw columns (`__r<i>`, for the `raw` JSON) next to the staged
    ones (see `staged_name`).
    """
    rules = data.rules
    checks: list[Check] = []
    staged: list[Column] = []
    for p in plans:
        value = col(p.ref)
        if rules.trim:
            value = F.trim(value)
        if rules.null_values:
            value = F.when(value.isin(*rules.null_values), F.lit(None)).otherwise(value)
        pattern = rules.extract.get(p.clean)
        if pattern is not None:
            matched = value.rlike(pattern)
            checks.append(
                Check(
                    f"extract:{p.clean}",
                    value.isNotNull() & ~matched,
                    _text(f"{p.clean}: '", _shown(value), f"' does not match {pattern}"),
                )
            )
            value = F.when(matched, F.regexp_extract(value, pattern, 1))
        if p.clean in rules.lowercase:
            value = F.lower(value)
        if p.clean in rules.uppercase:
            value = F.upper(value)
        staged.append(value.alias(staged_name(p.clean)))
    return df.select("*", *staged), checks


def cast_staged(df: DataFrame, plans: list[ColumnPlan]) -> tuple[DataFrame, list[Check]]:
    """Typed clean columns from the staged strings; a value that does not cast is a failure."""
    checks: list[Check] = []
    typed: list[Column] = []
    for p in plans:
        staged = col(staged_name(p.clean))
        if p.dtype == "string":
            typed.append(staged.alias(p.clean))
            continue
        # try_cast: null on a bad value whatever spark.sql.ansi.enabled says.
        value = F.expr(f"try_cast(`{staged_name(p.clean)}` AS {p.dtype})")
        typed.append(value.alias(p.clean))
        checks.append(
            Check(
                f"cast:{p.clean}",
                staged.isNotNull() & value.isNull(),
                _text(f"{p.clean}: '", _shown(staged), f"' is not a valid {p.dtype}"),
            )
        )
    return df.select("*", *typed), checks


def _literal(value: Any, dtype: str) -> Column:
    return F.lit(value).cast(dtype)


def value_checks(
    columns: dict[str, str],
    data: DataConfig,
    raw_of: dict[str, str] | None = None,
    staged_of: dict[str, str] | None = None,
) -> list[Check]:
    """required, allowed and range checks on the typed clean columns.

    `raw_of` maps a clean column to its raw column, to show the raw value in
    reasons; `staged_of` to its cleaned string, so that "required" means
    missing, not "did not cast" (the cast check reports that).
    """
    rules = data.rules
    raw_of, staged_of = raw_of or {}, staged_of or {}
    checks: list[Check] = []
    for name in rules.required:
        raw = raw_of.get(name)
        shown = _text(" (raw value '", _shown(col(raw)), "')") if raw else F.lit("")
        checks.append(
            Check(
                f"required:{name}",
                col(staged_of.get(name, name)).isNull(),
                _text(f"{name} is required but missing", shown),
            )
        )
    for name, values in rules.allowed.items():
        dtype = columns[name]
        allowed = [_literal(v, dtype) for v in values]
        checks.append(
            Check(
                f"allowed:{name}",
                col(name).isNotNull() & ~col(name).isin(*allowed),
                _text(f"{name}: '", _shown(col(name)), f"' is not one of {values}"),
            )
        )
    for name, (low, high) in rules.ranges.items():
        dtype = columns[name]
        outside = F.lit(False)
        if low is not None:
            outside = outside | (col(name) < _literal(low, dtype))
        if high is not None:
            outside = outside | (col(name) > _literal(high, dtype))
        checks.append(
            Check(
                f"range:{name}",
                col(name).isNotNull() & outside,
                _text(f"{name}: ", _shown(col(name)), f" is outside [{low}, {high}]"),
            )
        )
    return checks


def magnitude_checks(columns: dict[str, str], data: DataConfig) -> list[Check]:
    """Numbers the model cannot use: NaN and +-inf (a double cast from "NaN" or "Infinity"),
    and values beyond +-data.rules.max_abs_value, in floating columns and numeric features
    (an integer id may legitimately be larger)."""
    limit = data.rules.max_abs_value
    checks: list[Check] = []
    for name, dtype in columns.items():
        floating = dtype in ("double", "float")
        if not (floating or (name in data.features and dtype in NUMERIC_TYPES)):
            continue
        value = col(name)
        value_d = value.cast("double")
        not_finite = F.isnan(value_d) | (F.abs(value_d) == F.lit(float("inf")))
        checks.append(
            Check(
                f"magnitude:{name}",
                value.isNotNull() & (not_finite | (F.abs(value_d) > F.lit(limit))),
                F.when(
                    not_finite, _text(f"{name}: ", _shown(value), " is not a finite number")
                ).otherwise(
                    _text(
                        f"{name}: ",
                        _shown(value),
                        f" is beyond +-{limit:g} (data.rules.max_abs_value)",
                    )
                ),
            )
        )
    return checks


def line_checks() -> list[Check]:
    """Raw lines that were not parsed at all: blank, or more fields than the parser takes."""
    return [
        Check(rule, col(LINE_RULE) == F.lit(rule), col(LINE_REASON))
        for rule in ("blank", "too_wide")
    ]


def on_parsed_lines(checks: list[Check]) -> list[Check]:
    """`checks` applied only to lines that parsed: an unparsed line's reason is why it did
    not parse, not the missing values that follow from it."""
    parsed = col(CORRUPT).isNull() & col(LINE_RULE).isNull()
    return [Check(c.rule, parsed & c.failed, c.reason) for c in checks]


def parse_check() -> Check:
    return Check(
        "parse",
        col(CORRUPT).isNotNull() & col(LINE_RULE).isNull(),
        _text("malformed line (wrong number of fields or bad quoting): ", _shown(col(CORRUPT))),
    )


def apply_checks(df: DataFrame, checks: list[Check]) -> DataFrame:
    """Add `_rule` (the first failed check, or null) and `_reason` (all failures, in words)."""
    if not checks:
        return df.withColumn("_rule", F.lit(None).cast("string")).withColumn(
            "_reason", F.lit(None).cast("string")
        )
    failed = [F.coalesce(c.failed, F.lit(False)) for c in checks]
    rule = F.coalesce(*[F.when(f, F.lit(c.rule)) for f, c in zip(failed, checks, strict=True)])
    reason = F.concat_ws("; ", *[F.when(f, c.reason) for f, c in zip(failed, checks, strict=True)])
    # `_reason` reads the `_rule` column, not its expression: a clean row (most rows) then
    # runs the checks once, and the generated code stays small (see pipeline.spark).
    judged = df.withColumn("_rule", rule)
    return judged.withColumn("_reason", F.when(col("_rule").isNotNull(), reason))
