"""Ingest over time: new files only, explicit schema evolution, and upserts by data.id."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession

from pipeline.config import Config, LakeConfig, load_config
from pipeline.errors import ConfigError, DataError, LakeError
from pipeline.ingest.ledger import ledger_table_name
from pipeline.ingest.run import run_ingest
from pipeline.lake import WriteRequest, read_table, version_if_exists, write_table
from pipeline.lake.upsert import prepare_upsert


def _config(tmp: Path, schema: dict[str, str], **data: Any) -> Config:
    spec = {
        "lake": {"root": str(tmp / "lake"), "min_row_groups": 1},
        "data": {"name": "things", "source": str(tmp / "in"), "schema": schema, **data},
    }
    path = tmp / f"things-{len(os.listdir(tmp))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_config(path)


def _deliver(tmp: Path, name: str, lines: list[str]) -> None:
    (tmp / "in").mkdir(exist_ok=True)
    (tmp / "in" / name).write_text("\n".join(lines) + "\n")


BASE = {"id": "int", "x": "double"}
WIDE = {**BASE, "color": "string"}


def test_new_files_only_and_explicit_schema_evolution(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _deliver(tmp_path, "a.csv", ["id,x", *[f"{i},{i / 2}" for i in range(5)]])
    first = run_ingest(_config(tmp_path, BASE), spark).summary()
    assert (first["files"], first["rows_ok"], first["skipped"]) == (1, 5, False)
    table = first["table"]
    version = version_if_exists(table)

    again = run_ingest(_config(tmp_path, BASE), spark).summary()
    assert (again["files"], again["rows_in"], again["skipped"]) == (0, 0, True)
    assert version_if_exists(table) == version  # a re-run over an unchanged folder: no-op

    # A delivery with a column the config does not know: data.keep drops it, loudly.
    _deliver(tmp_path, "b.csv", ["id,x,color", *[f"{i},{i / 2},red" for i in range(5, 8)]])
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.rules"):
        kept = run_ingest(_config(tmp_path, BASE, keep=["id", "x"]), spark).summary()
    assert (kept["files"], kept["rows_in"]) == (1, 3)  # only the new file was read
    assert any("['color']" in r.getMessage() for r in caplog.records)
    assert read_table(spark, table).count() == 8

    # Keeping it: refused without schema evolution, added as a nullable column with it.
    _deliver(tmp_path, "c.csv", ["id,x,color", "8,4.0,blue", "9,4.5,green"])
    with pytest.raises(LakeError, match=r"\['color'\].*data.schema_evolution=add_columns"):
        run_ingest(_config(tmp_path, WIDE), spark)
    added = run_ingest(_config(tmp_path, WIDE, schema_evolution="add_columns"), spark).summary()
    assert added["rows_ok"] == 2
    rows = {r.id: r.color for r in read_table(spark, table).collect()}
    assert rows == {**dict.fromkeys(range(8)), 8: "blue", 9: "green"}
    ledger = read_table(spark, str(Path(table).parent / ledger_table_name("things")))
    assert sorted(os.path.basename(r.path) for r in ledger.collect()) == ["a.csv", "b.csv", "c.csv"]

    # A changed type is refused whatever the setting.
    _deliver(tmp_path, "d.csv", ["id,x,color", "10,5.0,7"])
    changed = {**BASE, "color": "int"}
    with pytest.raises(LakeError, match=r"changed type: 'color' is string.*int32"):
        run_ingest(_config(tmp_path, changed, schema_evolution="add_columns"), spark)


def test_upsert_by_id_inserts_and_updates(spark: SparkSession, tmp_path: Path) -> None:
    up = {"id": ["id"], "upsert": True}
    _deliver(tmp_path, "a.csv", ["id,x", *[f"{i},{i / 2}" for i in range(5)]])
    first = run_ingest(_config(tmp_path, BASE, **up), spark).summary()
    assert (first["rows_inserted"], first["rows_updated"]) == (5, 0)
    # id 3 changes, id 4 arrives again unchanged, id 5 is new
    _deliver(tmp_path, "b.csv", ["id,x", "3,30.0", "4,2.0", "5,2.5"])
    second = run_ingest(_config(tmp_path, BASE, **up), spark).summary()
    assert (second["rows_inserted"], second["rows_updated"]) == (1, 1)
    got = {r.id: r.x for r in read_table(spark, first["table"]).collect()}
    assert got == {0: 0.0, 1: 0.5, 2: 1.0, 3: 30.0, 4: 2.0, 5: 2.5}

    _deliver(tmp_path, "c.csv", ["id,x", "7,1.0", "7,2.0", "8,1.0"])
    with pytest.raises(DataError, match=r"key \{'id': 7\} appears 2 times in the input"):
        run_ingest(_config(tmp_path, BASE, **up), spark)
    with pytest.raises(ConfigError, match=r"data.upsert=true.*set data.id"):
        _config(tmp_path, BASE, upsert=True)


def test_driver_merge_on_delta_rs_and_its_bound(spark: SparkSession, tmp_path: Path) -> None:
    lake = LakeConfig(engine="delta-rs")
    path = str(tmp_path / "t")
    write_table(spark, spark.createDataFrame([(1, 1.0), (2, 2.0)], "id int, x double"), path, lake)
    changes = spark.createDataFrame([(2, 20.0), (3, 3.0)], "id int, x double")
    result = prepare_upsert(spark, WriteRequest(changes, path), ["id"], lake).commit()
    assert (result.inserted, result.updated, result.engine) == (1, 1, "delta-rs")
    assert {r.id: r.x for r in read_table(spark, path, lake=lake).collect()} == {
        1: 1.0,
        2: 20.0,
        3: 3.0,
    }
    small = LakeConfig(engine="delta-rs", driver_merge_max_rows=4)
    with pytest.raises(LakeError, match=r"exceed lake.driver_merge_max_rows=4. Use delta-spark"):
        prepare_upsert(spark, WriteRequest(changes, path), ["id"], small).commit()
