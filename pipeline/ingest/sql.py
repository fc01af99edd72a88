"""Spark SQL expression text for the cleaning rules: quoting and the few shapes they share.

Why text, not PySpark `Column` calls: every `F.*` call is several Py4J round trips
(the function's lookup, the call, and one per argument of a list), about 1 ms each on
a 2-core machine. Building a 200-column table's rules that way took 23 s before its
first Spark job; as text, each column's expression is one `F.expr` call and the
parse happens once in the JVM.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

NULL = "NULL"
REASON_VALUE_CHARS = 80


class Expr(str):
    """SQL expression text, told apart from plain words in `text`."""


def ident(name: str) -> Expr:
    """A column by its exact name, even with dots, spaces or backticks in it."""
    return Expr("`" + name.replace("`", "``") + "`")


def string(value: str) -> str:
    """A string literal. Spark's parser reads backslash escapes inside quotes by default
    (spark.sql.parser.escapedStringLiterals=false), so both are escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def literal(value: Any, dtype: str | None = None) -> str:
    """A Python value (str, bool, int, float or None) as a literal, cast to `dtype` if given."""
    if value is None:
        text = NULL
    elif isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and not math.isfinite(value):
        text = f"CAST({string(str(value))} AS DOUBLE)"
    elif isinstance(value, float):
        text = f"{value!r}D"  # the suffix makes a double; "1.5" alone parses as a decimal
    else:
        text = string(str(value))
    return f"CAST({text} AS {dtype})" if dtype else text


def concat(*parts: str) -> str:
    """`concat` of expressions (null if any is null, as in Spark)."""
    return f"concat({', '.join(parts)})"


def text(*parts: str) -> str:
    """A message from words (plain strings) and expressions (`Expr`)."""
    return concat(*[p if isinstance(p, Expr) else string(p) for p in parts])


def shown(value: str) -> Expr:
    """A value as it appears in a reason: as text, cut short, `<null>` when missing."""
    cut = f"substring(CAST({value} AS STRING), 1, {REASON_VALUE_CHARS})"
    return Expr(f"coalesce({cut}, '<null>')")


def when(condition: str, value: str, otherwise: str | None = None) -> str:
    tail = f" ELSE {otherwise}" if otherwise is not None else ""
    return f"CASE WHEN {condition} THEN {value}{tail} END"


def expr(sql: str, name: str | None = None) -> Column:
    """The expression as a Column, named `name` if given."""
    column = F.expr(sql)
    return column.alias(name) if name is not None else column
