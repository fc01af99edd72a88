"""Schema conversions between Spark, Arrow and Delta, and the append compatibility check.

Spark's own Arrow mapping is used both ways so that the files executors write,
the schema the Delta log records and the schema Spark reads back agree.
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from pipeline.errors import LakeError

# Types a partition value can be written as a string in the Delta log and a Hive path.
PARTITION_TYPES = (pa.types.is_string, pa.types.is_integer, pa.types.is_date, pa.types.is_boolean)


def _nullable(dtype: pa.DataType) -> pa.DataType:
    """The same type with every nested field nullable (Delta's and Spark's default)."""
    if pa.types.is_list(dtype):
        return pa.list_(pa.field("element", _nullable(dtype.value_type), nullable=True))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _nullable(f.type), nullable=True) for f in dtype])
    if pa.types.is_map(dtype):
        return pa.map_(_nullable(dtype.key_type), _nullable(dtype.item_type))
    return dtype


def arrow_schema_of(schema: StructType) -> pa.Schema:
    """The Arrow schema the lake stores for a Spark schema: all fields nullable, UTC timestamps.

    Spark and Delta treat nullability as a hint; forcing it off avoids a
    Delta schema that a later append with a nullable column would violate.
    """
    arrow = to_arrow_schema(schema)
    return pa.schema([pa.field(f.name, _nullable(f.type), nullable=True) for f in arrow])


def spark_schema_of(schema: pa.Schema) -> StructType:
    return from_arrow_schema(schema)


def _normalise(dtype: pa.DataType) -> pa.DataType:
    """Drop what differs between equal Delta types read back (list item names, string sizes)."""
    if pa.types.is_large_string(dtype) or pa.types.is_string(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary(dtype):
        return pa.binary()
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pa.list_(_normalise(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _normalise(f.type)) for f in dtype])
    if pa.types.is_timestamp(dtype):
        return pa.timestamp("us", tz="UTC" if dtype.tz else None)
    return dtype


def schema_differences(table: pa.Schema, incoming: pa.Schema) -> list[str]:
    """Human-readable differences between a table's schema and data to append to it."""
    problems: list[str] = []
    have = {f.name: _normalise(f.type) for f in table}
    new = {f.name: _normalise(f.type) for f in incoming}
    missing = [n for n in have if n not in new]
    extra = [n for n in new if n not in have]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"new columns {extra}")
    for name in have.keys() & new.keys():
        if have[name] != new[name]:
            problems.append(f"column '{name}' is {have[name]} in the table but {new[name]} here")
    return sorted(problems)


def check_partition_columns(schema: pa.Schema, partition_by: list[str]) -> None:
    names = schema.names
    for col in partition_by:
        if col not in names:
            raise LakeError(
                f"partition column '{col}' is not in the data (columns: {', '.join(names)}); "
                "fix partition_by / lake.partition_by"
            )
        dtype = schema.field(col).type
        if not any(check(dtype) for check in PARTITION_TYPES):
            raise LakeError(
                f"partition column '{col}' has type {dtype}; partition by a string, integer, "
                "date or boolean column instead"
            )
    if partition_by and len(partition_by) == len(names):
        raise LakeError("every column is a partition column; keep at least one data column")
