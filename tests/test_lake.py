"""Delta I/O on both engines (the parity lane): single-commit writes, pinned reads, and
what delta-rs sees of them."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from pipeline.config import LakeConfig
from pipeline.errors import ConcurrentWriteError, LakeError
from pipeline.lake import (
    ArrowTransform,
    WriteRequest,
    history,
    prepare_write,
    read_table,
    snapshot,
    transaction_version,
    write_table,
)
from pipeline.lake.read import _num_rows, _to_pyarrow_schema
from pipeline.lake.schema import spark_schema_of
from tests.helpers import add_actions

pytestmark = pytest.mark.usefixtures("lake_engine")


def assert_lake_agrees(
    spark: SparkSession, path: str | Path, version: int | None = None
) -> DataFrame:
    """delta-rs and Spark agree on a table version: schema, version, exact files, row count."""
    path = str(path)
    table = DeltaTable(path)
    if version is not None:
        table.load_as_version(version)
    df = read_table(spark, path, version)
    assert df.schema == spark_schema_of(_to_pyarrow_schema(table))
    assert snapshot(path, version).version == table.version()
    # the engines escape partition directories differently: compare unescaped paths
    spark_files = {_unescaped(urllib.parse.urlparse(u).path) for u in df.inputFiles()}
    assert spark_files == {_unescaped(f) for f in table.file_uris()}
    assert df.count() == _num_rows(table)
    return df


def _unescaped(path: str) -> str:
    while urllib.parse.unquote(path) != path:
        path = urllib.parse.unquote(path)
    return path


def _frame(spark: SparkSession, start: int, n: int) -> DataFrame:
    return spark.range(start, start + n).select(
        F.col("id"),
        (F.col("id") * 0.5).alias("x"),
        F.when(F.col("id") % 3 == 0, "a b").when(F.col("id") % 3 == 1, "c/d").alias("group"),
        F.array(F.lit(1.0).cast("float"), F.col("id").cast("float")).alias("vec"),
        F.timestamp_seconds(F.col("id") * 3600).alias("ts"),
    )


def _row_groups(table: DeltaTable) -> list[int]:
    return [pq.ParquetFile(f).metadata.num_row_groups for f in table.file_uris()]


def test_append_and_overwrite_make_versions_that_stay_readable(
    spark: SparkSession, lake: Path
) -> None:
    path = lake / "t"
    first, second, third = _frame(spark, 0, 40), _frame(spark, 40, 30), _frame(spark, 100, 5)
    results = [
        write_table(spark, first, str(path), LakeConfig()),
        write_table(spark, second, str(path), LakeConfig(), mode="append"),
        write_table(spark, third, str(path), LakeConfig(), mode="overwrite"),
    ]
    assert [r.version for r in results] == [0, 1, 2]
    assert [r.num_rows for r in results] == [40, 30, 5]
    assert not any(r.skipped for r in results)
    assertDataFrameEqual(assert_lake_agrees(spark, path, 0), first)
    assertDataFrameEqual(assert_lake_agrees(spark, path, 1), first.unionByName(second))
    assertDataFrameEqual(assert_lake_agrees(spark, path), third)
    ops = [(h["version"], h["operation"]) for h in history(str(path))]
    # delta-rs records the first commit as CREATE TABLE, delta-spark as WRITE
    assert ops[:2] == [(2, "WRITE"), (1, "WRITE")]
    assert ops[2] in ((0, "CREATE TABLE"), (0, "WRITE"))
    # Files of the overwritten versions are still on disk for time travel, but not in v2.
    assert len(DeltaTable(str(path)).file_uris()) == results[2].num_files


def test_row_groups_are_sized_for_sharding(spark: SparkSession, lake: Path) -> None:
    df = _frame(spark, 0, 1000).repartition(2)
    small = write_table(spark, df, str(lake / "a"), LakeConfig(), min_row_groups=8)
    assert small.row_groups >= 8
    assert sum(_row_groups(DeltaTable(str(lake / "a")))) == small.row_groups

    bounded = LakeConfig(row_group_rows=50, target_file_rows=300)
    result = write_table(spark, df, str(lake / "b"), bounded, min_row_groups=2)
    table = DeltaTable(str(lake / "b"))
    for file in table.file_uris():
        meta = pq.ParquetFile(file).metadata
        assert meta.num_rows <= 300
        assert all(meta.row_group(i).num_rows <= 50 for i in range(meta.num_row_groups))
    assert result.row_groups >= 1000 // 50
    assert result.num_files >= 1000 // 300


def _layout(path: Path) -> list[list[list[int]]]:
    """The ids of each row group of each file, files in sorted order (as Petastorm shards)."""
    layout = []
    for file in sorted(DeltaTable(str(path)).file_uris()):
        parquet = pq.ParquetFile(file)
        groups = range(parquet.num_row_groups)
        layout.append([parquet.read_row_group(g, columns=["id"])["id"].to_pylist() for g in groups])
    return layout


def test_the_same_rows_spread_by_their_content_give_the_same_files(
    spark: SparkSession, lake: Path
) -> None:
    # Two writes of the same rows at different times (like two ingests: `_ingested_at` differs),
    # spread over more tasks than the input has: the same ids in the same files and order.
    rows = _frame(spark, 0, 200).repartition(2)
    stable = tuple(rows.columns)
    layouts = []
    for name, second in (("a", 1), ("b", 2)):
        written = rows.withColumn("_ingested_at", F.timestamp_seconds(F.lit(second)))
        request = WriteRequest(written, str(lake / name), min_row_groups=6, spread_by=stable)
        prepare_write(spark, request, LakeConfig()).commit()
        layouts.append(_layout(lake / name))
    assert layouts[0] == layouts[1]
    groups = [ids for file in layouts[0] for ids in file]
    assert len(groups) >= 6
    assert sorted(i for ids in groups for i in ids) == list(range(200))


def test_partitioned_tables_round_trip_awkward_values(spark: SparkSession, lake: Path) -> None:
    path = lake / "parts"
    df = _frame(spark, 0, 90)  # group: "a b", "c/d" and null
    result = write_table(
        spark, df, str(path), LakeConfig(), partition_by=["group"], min_row_groups=3
    )
    table = DeltaTable(str(path))
    assert table.metadata().partition_columns == ["group"]
    # delta-rs escapes the space in a directory name, Spark does not; both escape '/'
    dirs = {urllib.parse.unquote(Path(f).parent.name) for f in table.file_uris()}
    assert dirs == {"group=a b", "group=c/d", "group=__HIVE_DEFAULT_PARTITION__"}
    back = assert_lake_agrees(spark, path)
    assert back.columns == df.columns
    assertDataFrameEqual(back, df)
    # min_row_groups holds per partition value: each can be sharded on its own.
    per_dir: dict[str, int] = {}
    for f in table.file_uris():
        per_dir[Path(f).parent.name] = per_dir.get(Path(f).parent.name, 0) + _row_groups_of(f)
    assert min(per_dir.values()) >= 3
    assert result.row_groups == sum(per_dir.values())


def _row_groups_of(file: str) -> int:
    return pq.ParquetFile(file).metadata.num_row_groups


def test_app_transaction_makes_a_retry_a_no_op(spark: SparkSession, lake: Path) -> None:
    path = str(lake / "t")
    df = _frame(spark, 0, 10)
    first = write_table(spark, df, path, LakeConfig(), app_id="job-a", app_version=1)
    retry = write_table(spark, df, path, LakeConfig(), app_id="job-a", app_version=1)
    older = write_table(spark, df, path, LakeConfig(), app_id="job-a", app_version=0)
    assert (first.version, first.skipped) == (0, False)
    assert (retry.version, retry.skipped, retry.num_rows) == (0, True, 0)
    assert older.skipped
    assert read_table(spark, path).count() == 10
    nxt = write_table(spark, df, path, LakeConfig(), app_id="job-a", app_version=2)
    other = write_table(spark, df, path, LakeConfig(), app_id="job-b", app_version=1)
    assert (nxt.version, other.version) == (1, 2)
    assert transaction_version(path, "job-a") == 2
    assert read_table(spark, path).count() == 30


def test_zero_row_writes_create_and_extend_tables(spark: SparkSession, lake: Path) -> None:
    empty = _frame(spark, 0, 0)
    created = write_table(spark, empty, str(lake / "e"), LakeConfig())
    assert (created.version, created.num_rows, created.num_files) == (0, 0, 0)
    back = assert_lake_agrees(spark, lake / "e")
    assert back.count() == 0
    assert back.schema.simpleString() == empty.schema.simpleString()

    write_table(spark, _frame(spark, 0, 7), str(lake / "f"), LakeConfig())
    appended = write_table(spark, empty, str(lake / "f"), LakeConfig())
    assert (appended.version, appended.num_rows) == (1, 0)
    assert assert_lake_agrees(spark, lake / "f").count() == 7


def test_add_actions_carry_stats(spark: SparkSession, lake: Path) -> None:
    path = lake / "s"
    write_table(spark, _frame(spark, 0, 100), str(path), LakeConfig(target_file_rows=40))
    adds = add_actions(path, 0)
    assert len(adds) >= 3  # at most 40 rows a file
    total = 0
    for add in adds:
        stats = json.loads(add["stats"])
        data = pq.read_table(path / urllib.parse.unquote(add["path"]))
        ids = data.column("id").to_pylist()
        assert stats["numRecords"] == data.num_rows
        assert (stats["minValues"]["id"], stats["maxValues"]["id"]) == (min(ids), max(ids))
        assert stats["minValues"]["x"] == min(ids) * 0.5
        assert stats["nullCount"]["group"] == data.column("group").null_count
        assert "vec" not in stats["minValues"]  # no order on arrays: no min/max
        assert stats["minValues"]["ts"].endswith("Z")
        total += stats["numRecords"]
    assert total == 100
    assert DeltaTable(str(path)).count() == 100


def test_append_with_another_schema_is_refused(spark: SparkSession, lake: Path) -> None:
    path = str(lake / "t")
    write_table(spark, _frame(spark, 0, 5), path, LakeConfig())
    other = _frame(spark, 0, 5).withColumn("x", F.col("x").cast("string")).drop("vec")
    with pytest.raises(
        LakeError, match=r"lack column\(s\) \['vec'\]; changed type: 'x' is double.*overwrite"
    ):
        write_table(spark, other, path, LakeConfig())
    assert DeltaTable(path).version() == 0
    replaced = write_table(spark, other, path, LakeConfig(), mode="overwrite")
    assert read_table(spark, path).schema["x"].dataType.simpleString() == "string"
    assert replaced.version == 1


def test_schema_evolution_adds_nullable_columns_only_when_asked(
    spark: SparkSession, lake: Path, lake_engine: str
) -> None:
    path = str(lake / "evolve")
    write_table(spark, _frame(spark, 0, 5), path, LakeConfig())
    wider = _frame(spark, 5, 3).withColumn("extra", F.lit("new"))
    with pytest.raises(
        LakeError, match=r"column\(s\) \['extra'\] that the table lacks.*schema_evolution=add_col"
    ):
        write_table(spark, wider, path, LakeConfig())
    assert DeltaTable(path).version() == 0
    request = WriteRequest(wider, path, schema_evolution="add_columns")
    prepare_write(spark, request, LakeConfig()).commit()
    rows = read_table(spark, path)
    assert rows.columns[-1] == "extra"
    got = {r.id: r.extra for r in rows.select("id", "extra").collect()}
    assert got == {**dict.fromkeys(range(5)), **dict.fromkeys(range(5, 8), "new")}
    # a changed type or a dropped column is refused whatever the setting
    narrower = _frame(spark, 8, 1).drop("group").withColumn("extra", F.lit(1))
    with pytest.raises(LakeError, match=r"lack column\(s\) \['group'\]; changed type: 'extra'"):
        prepare_write(
            spark, WriteRequest(narrower, path, schema_evolution="add_columns"), LakeConfig()
        )
    assert rows.count() == 8


def test_failed_write_leaves_the_table_at_its_previous_version(
    spark: SparkSession, lake: Path
) -> None:
    path = str(lake / "t")
    write_table(spark, _frame(spark, 0, 20), path, LakeConfig())

    @F.udf("double")
    def explode_on_13(x: float) -> float:
        if x == 6.5:
            raise ValueError("boom")
        return x

    bad = _frame(spark, 0, 20).withColumn("x", explode_on_13("x"))
    with pytest.raises(Exception, match="boom"):
        write_table(spark, bad, path, LakeConfig())
    assert DeltaTable(path).version() == 0
    assert read_table(spark, path).count() == 20


def test_an_overwrite_that_loses_a_race_fails_and_keeps_the_winner(
    spark: SparkSession, lake: Path
) -> None:
    """Two overwrites of one table in their losing order: the other writer commits after this
    write was planned and before it commits. First the race to create the table."""
    path, lake_cfg = str(lake / "t"), LakeConfig()
    request = WriteRequest(_frame(spark, 0, 5), path, mode="overwrite")
    late = prepare_write(spark, request, lake_cfg)
    write_table(spark, _frame(spark, 100, 3), path, lake_cfg, mode="overwrite")
    with pytest.raises(ConcurrentWriteError) as lost:
        late.commit()
    assert (lost.value.winner, lost.value.read_version) == (0, None), vars(lost.value)
    assert not lost.value.retryable  # an overwrite that lost is not re-run on its own
    assert f"concurrent write to Delta table '{path}'" in str(lost.value)
    assert "version 0 after this job read the table before the table existed" in str(lost.value)
    assert DeltaTable(path).version() == 0
    assert sorted(r["id"] for r in read_table(spark, path).collect()) == [100, 101, 102]
    # The same order on the table that now exists: the overwrite planned on version 0 loses
    # to one that committed version 1 meanwhile.
    late = prepare_write(spark, request, lake_cfg)
    write_table(spark, _frame(spark, 200, 2), path, lake_cfg, mode="overwrite")
    with pytest.raises(ConcurrentWriteError) as lost:
        late.commit()
    assert (lost.value.winner, lost.value.read_version) == (1, 0), vars(lost.value)
    assert not lost.value.retryable
    assert [h["version"] for h in history(path)] == [1, 0]
    assert sorted(r["id"] for r in read_table(spark, path).collect()) == [200, 201]
    # An overwrite that creates a table commits one version, as before.
    fresh = str(lake / "fresh")
    write_table(spark, _frame(spark, 0, 4), fresh, lake_cfg, mode="overwrite")
    assert [h["version"] for h in history(fresh)] == [0]
    assert read_table(spark, fresh).count() == 4


def test_deletion_vectors_are_read_by_delta_spark_and_refused_by_delta_rs(
    spark: SparkSession, lake: Path, lake_engine: str
) -> None:
    # Written by delta-spark: delta-rs (deltalake 1.6) would add the reader feature
    # variantType, which delta-spark 3.3 cannot read.
    path = str(lake / "dv")
    table = f"delta.`{path}`"
    spark.sql(
        f"CREATE TABLE {table} (a BIGINT) USING delta "
        "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
    )
    spark.sql(f"INSERT INTO {table} VALUES (1), (2), (3)")
    spark.sql(f"DELETE FROM {table} WHERE a = 2")
    if lake_engine == "delta-spark":
        assert sorted(r.a for r in read_table(spark, path).collect()) == [1, 3]
        return
    with pytest.raises(LakeError, match=r"deletionVectors.*cannot honour"):
        read_table(spark, path)


def test_delta_rs_reads_refuse_column_mapping(
    spark: SparkSession, lake: Path, lake_engine: str
) -> None:
    """A hand-written log as Spark writes it with column mapping: physical names differ."""
    path = lake / "cm"
    (path / "_delta_log").mkdir(parents=True)
    schema = {
        "type": "struct",
        "fields": [
            {
                "name": "a",
                "type": "long",
                "nullable": True,
                "metadata": {
                    "delta.columnMapping.id": 1,
                    "delta.columnMapping.physicalName": "col-5f1b",
                },
            }
        ],
    }
    actions = [
        {"protocol": {"minReaderVersion": 2, "minWriterVersion": 5}},
        {
            "metaData": {
                "id": "3a0d65cd-4b4c-4f0b-9f8a-3d1b0a6f0001",
                "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps(schema),
                "partitionColumns": [],
                "configuration": {
                    "delta.columnMapping.mode": "name",
                    "delta.columnMapping.maxColumnId": "1",
                },
                "createdTime": 0,
            }
        },
    ]
    log = path / "_delta_log" / f"{0:020d}.json"
    log.write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    if lake_engine == "delta-spark":
        assert read_table(spark, str(path)).columns == ["a"]  # Delta maps the names itself
        return
    with pytest.raises(LakeError, match=r"column mapping mode 'name'"):
        read_table(spark, str(path))


def _feature_table(path: Path, reader_features: list[str]) -> None:
    """A hand-written log of an empty table whose protocol needs `reader_features`."""
    (path / "_delta_log").mkdir(parents=True)
    schema = {
        "type": "struct",
        "fields": [{"name": "a", "type": "long", "nullable": True, "metadata": {}}],
    }
    actions = [
        {
            "protocol": {
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": reader_features,
                "writerFeatures": reader_features,
            }
        },
        {
            "metaData": {
                "id": "3a0d65cd-4b4c-4f0b-9f8a-3d1b0a6f0002",
                "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps(schema),
                "partitionColumns": [],
                "configuration": {},
                "createdTime": 0,
            }
        },
    ]
    (path / "_delta_log" / f"{0:020d}.json").write_text(
        "\n".join(json.dumps(a) for a in actions) + "\n"
    )


def test_a_reader_feature_no_path_honours_is_refused_by_name(lake: Path) -> None:
    _feature_table(lake / "variant", ["variantType"])
    with pytest.raises(
        LakeError, match=r"reader feature\(s\) \['variantType'\].*Rewrite the table without it"
    ):
        snapshot(str(lake / "variant"))
    # features one of the paths honours pass the check: the snapshot path reads them
    _feature_table(lake / "dv", ["deletionVectors", "timestampNtz"])
    snap = snapshot(str(lake / "dv"))
    assert snap.reader_features == ("deletionVectors", "timestampNtz")


def test_snapshot_converts_arrow_schema_and_counts_rows(spark: SparkSession, lake: Path) -> None:
    path = str(lake / "t")
    write_table(spark, _frame(spark, 0, 12), path, LakeConfig())
    snap = snapshot(path)
    assert isinstance(snap.schema, pa.Schema)
    assert snap.schema.names == ["id", "x", "group", "vec", "ts"]
    assert snap.schema.field("vec").type.value_type == pa.float32()
    assert snap.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert snap.num_rows == 12
    assert snap.files == DeltaTable(path).file_uris()
    write_table(spark, _frame(spark, 0, 0), str(lake / "empty"), LakeConfig())
    assert snapshot(str(lake / "empty")).num_rows == 0


def test_missing_tables_and_versions_name_the_fix(spark: SparkSession, lake: Path) -> None:
    with pytest.raises(LakeError, match="no Delta table.*run the ingest job"):
        read_table(spark, str(lake / "nope"))
    write_table(spark, _frame(spark, 0, 2), str(lake / "t"), LakeConfig())
    with pytest.raises(LakeError, match=r"versions 0\.\.0; version 3 does not exist"):
        read_table(spark, str(lake / "t"), 3)


def test_a_transformed_write_computes_its_rows_in_the_writer(
    spark: SparkSession, tmp_path: Path, lake_engine: str
) -> None:
    """The rows written are the transform's (here: even ids, doubled), not the input's."""
    source = spark.range(0, 100, numPartitions=2)
    schema = spark_schema_of(pa.schema([("id", pa.int64()), ("twice", pa.int64())]))

    def evens_doubled(batches):  # type: ignore[no-untyped-def]
        for batch in batches:
            ids = batch.column(0).to_numpy()
            kept = ids[ids % 2 == 0]
            yield pa.RecordBatch.from_arrays([pa.array(kept), pa.array(kept * 2)], ["id", "twice"])

    path = str(tmp_path / "t")
    transform = ArrowTransform(evens_doubled, schema)
    with pytest.raises(LakeError, match="needs max_rows"):
        WriteRequest(source, path, min_row_groups=1, transform=transform)
    request = WriteRequest(source, path, min_row_groups=1, max_rows=100, transform=transform)
    prepared = prepare_write(spark, request, LakeConfig())
    # delta-rs has written the files by now; delta-spark writes at commit
    assert prepared.num_rows == (50 if lake_engine == "delta-rs" else None)
    assert prepared.commit().num_rows == 50
    table = DeltaTable(path).to_pyarrow_table().sort_by("id")
    assert table.column("id").to_pylist() == list(range(0, 100, 2))
    assert table.column("twice").to_pylist() == list(range(0, 200, 4))
