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


def check_append_schema(
    path: str, table: pa.Schema, incoming: pa.Schema, evolution: str
) -> list[str]:
    """The columns an append adds to the table; refuses what no setting allows.

    `evolution` is `data.schema_evolution`: `none` refuses new columns, `add_columns`
    adds them (nullable: older rows read as null). A column the rows lack or a
    changed type is refused whatever the setting: either would lose or rewrite
    what is already committed.
    """
    have = {f.name: _normalise(f.type) for f in table}
    new = {f.name: _normalise(f.type) for f in incoming}
    dropped = [n for n in have if n not in new]
    added = [n for n in new if n not in have]
    changed = [
        f"'{n}' is {have[n]} in the table but {new[n]} in the new rows"
        for n in have
        if n in new and have[n] != new[n]
    ]
    problems = []
    if dropped:
        problems.append(f"the new rows lack column(s) {dropped}")
    if changed:
        problems.append(f"changed type: {'; '.join(changed)}")
    if problems:
        raise LakeError(
            f"cannot append to '{path}': {'; '.join(problems)}. Appends never drop a column or "
            "change its type (data.schema_evolution only adds columns): make the data match "
            "the table (data.schema, data.keep), or replace the table with data.mode=overwrite"
        )
    if added and evolution != "add_columns":
        raise LakeError(
            f"cannot append to '{path}': the new rows have column(s) {added} that the table "
            "lacks. Set data.schema_evolution=add_columns to add them as nullable columns, or "
            "leave them out with data.keep"
        )
    return added


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
