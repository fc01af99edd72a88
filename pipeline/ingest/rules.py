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

from pyspark.sql import DataFrame

from pipeline.config import DataConfig
from pipeline.errors import ConfigError, DataError
from pipeline.ingest.naming import did_you_mean, snake_case
from pipeline.ingest.sources import CORRUPT, LINE_REASON, LINE_RULE
from pipeline.ingest.sql import Expr, ident, literal, shown, text, when

NUMERIC_TYPES = {"double", "float", "int", "integer", "long", "bigint", "short", "smallint"}
SCALAR_TYPES = NUMERIC_TYPES | {"string", "boolean", "date", "timestamp"}
_DECIMAL = re.compile(r"decimal\(\s*\d+\s*,\s*\d+\s*\)")

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
    """A rule: the rows it rejects and why, in words, as Spark SQL expression text
    (see pipeline.ingest.sql) over the columns of the frame the checks are applied to."""

    rule: str
    failed: str
    reason: str


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


def stage_strings(
    df: DataFrame, plans: list[ColumnPlan], data: DataConfig
) -> tuple[DataFrame, list[Check]]:
    """Trim, null sentinels, extract and case rules, on string values under their clean names.

    Keeps the raw columns (`__r<i>`, for the `raw` JSON) next to the staged
    ones (see `staged_name`).
    """
    rules = data.rules
    checks: list[Check] = []
    staged: list[str] = []
    nulls = ", ".join(literal(v) for v in rules.null_values)
    for p in plans:
        value = ident(p.ref)
        if rules.trim:
            value = Expr(f"trim({value})")
        if rules.null_values:
            value = Expr(when(f"{value} IN ({nulls})", "NULL", value))
        pattern = rules.extract.get(p.clean)
        if pattern is not None:
            regex = literal(pattern)
            matched = f"{value} RLIKE {regex}"
            checks.append(
                Check(
                    f"extract:{p.clean}",
                    f"{value} IS NOT NULL AND NOT ({matched})",
                    text(f"{p.clean}: '", shown(value), f"' does not match {pattern}"),
                )
            )
            value = Expr(when(matched, f"regexp_extract({value}, {regex}, 1)"))
        if p.clean in rules.lowercase:
            value = Expr(f"lower({value})")
        if p.clean in rules.uppercase:
            value = Expr(f"upper({value})")
        staged.append(f"{value} AS {ident(staged_name(p.clean))}")
    return df.selectExpr("*", *staged), checks


def cast_staged(df: DataFrame, plans: list[ColumnPlan]) -> tuple[DataFrame, list[Check]]:
    """Typed clean columns from the staged strings; a value that does not cast is a failure."""
    checks: list[Check] = []
    typed: list[str] = []
    for p in plans:
        staged = ident(staged_name(p.clean))
        if p.dtype == "string":
            typed.append(f"{staged} AS {ident(p.clean)}")
            continue
        # try_cast: null on a bad value whatever spark.sql.ansi.enabled says.
        value = f"try_cast({staged} AS {p.dtype})"
        typed.append(f"{value} AS {ident(p.clean)}")
        checks.append(
            Check(
                f"cast:{p.clean}",
                f"{staged} IS NOT NULL AND {value} IS NULL",
                text(f"{p.clean}: '", shown(staged), f"' is not a valid {p.dtype}"),
            )
        )
    return df.selectExpr("*", *typed), checks


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
        raw_shown = text(" (raw value '", shown(ident(raw)), "')") if raw else "''"
        checks.append(
            Check(
                f"required:{name}",
                f"{ident(staged_of.get(name, name))} IS NULL",
                text(f"{name} is required but missing", Expr(raw_shown)),
            )
        )
    for name, values in rules.allowed.items():
        dtype, value = columns[name], ident(name)
        allowed = ", ".join(literal(v, dtype) for v in values)
        # `x IN ()` does not parse; with nothing allowed every value fails
        outside = f"NOT ({value} IN ({allowed}))" if values else "TRUE"
        checks.append(
            Check(
                f"allowed:{name}",
                f"{value} IS NOT NULL AND {outside}",
                text(f"{name}: '", shown(value), f"' is not one of {values}"),
            )
        )
    for name, (low, high) in rules.ranges.items():
        dtype, value = columns[name], ident(name)
        bounds = [f"{value} < {literal(low, dtype)}"] if low is not None else []
        bounds += [f"{value} > {literal(high, dtype)}"] if high is not None else []
        checks.append(
            Check(
                f"range:{name}",
                f"{value} IS NOT NULL AND ({' OR '.join(['FALSE', *bounds])})",
                text(f"{name}: ", shown(value), f" is outside [{low}, {high}]"),
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
        value = ident(name)
        as_double = f"CAST({value} AS DOUBLE)"
        not_finite = f"(isnan({as_double}) OR abs({as_double}) = {literal(float('inf'))})"
        too_large = f"abs({as_double}) > {literal(float(limit))}"
        checks.append(
            Check(
                f"magnitude:{name}",
                f"{value} IS NOT NULL AND ({not_finite} OR {too_large})",
                when(
                    not_finite,
                    text(f"{name}: ", shown(value), " is not a finite number"),
                    text(
                        f"{name}: ",
                        shown(value),
                        f" is beyond +-{limit:g} (data.rules.max_abs_value)",
                    ),
                ),
            )
        )
    return checks


def line_checks() -> list[Check]:
    """Raw lines that were not parsed at all: blank, or more fields than the parser takes."""
    return [
        Check(rule, f"{ident(LINE_RULE)} = {literal(rule)}", ident(LINE_REASON))
        for rule in ("blank", "too_wide")
    ]


def on_parsed_lines(checks: list[Check]) -> list[Check]:
    """`checks` applied only to lines that parsed: an unparsed line's reason is why it did
    not parse, not the missing values that follow from it."""
    parsed = f"{ident(CORRUPT)} IS NULL AND {ident(LINE_RULE)} IS NULL"
    return [Check(c.rule, f"{parsed} AND ({c.failed})", c.reason) for c in checks]


def parse_check() -> Check:
    return Check(
        "parse",
        f"{ident(CORRUPT)} IS NOT NULL AND {ident(LINE_RULE)} IS NULL",
        text("malformed line (wrong number of fields or bad quoting): ", shown(ident(CORRUPT))),
    )


def apply_checks(df: DataFrame, checks: list[Check]) -> DataFrame:
    """Add `_rule` (the first failed check, or null) and `_reason` (all failures, in words)."""
    if not checks:
        none = "CAST(NULL AS STRING)"
        return df.selectExpr("*", f"{none} AS _rule", f"{none} AS _reason")
    # Each check's verdict is computed once, as a column of its own, and both `_rule` and
    # `_reason` read it: the expressions Spark analyses stay half the size (a 200-column
    # table has about 500 checks), and a reject does not run its checks twice.
    flags = [f"__check{i}" for i in range(len(checks))]
    flagged = df.selectExpr(
        "*", *[f"coalesce({c.failed}, FALSE) AS {f}" for f, c in zip(flags, checks, strict=True)]
    )
    rule = " ".join(f"WHEN {f} THEN {literal(c.rule)}" for f, c in zip(flags, checks, strict=True))
    reasons = ", ".join(when(f, c.reason) for f, c in zip(flags, checks, strict=True))
    reason = when("_rule IS NOT NULL", f"concat_ws('; ', {reasons})")
    judged = flagged.selectExpr("*", f"CASE {rule} END AS _rule")
    return judged.selectExpr(*[ident(c) for c in df.columns], "_rule", f"{reason} AS _reason")
