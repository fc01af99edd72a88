"""The ingest: rules, quarantine, reconciliation, dedup, splits, bad input, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, DataError
from pipeline.ingest import REJECT_COLUMNS, run_ingest
from pipeline.ingest.naming import snake_case
from pipeline.ingest.sources import resolve_source
from pipeline.lake import read_table
from tests.helpers import REPO, file_stats, run_job, summary_of
from tests.test_lake import assert_lake_agrees

PENGUINS = REPO / "conf" / "penguins.yaml"
# The parity lane: every test here runs on both Delta engines (see conftest.lake_engine).
pytestmark = pytest.mark.usefixtures("lake_engine")
RULE_KINDS = ("parse", "extract:", "cast:", "required:", "allowed:", "range:")


def _reconciles(summary: dict) -> None:
    parts = summary["rows_ok"] + summary["rows_rejected"] + summary["duplicates_dropped"]
    assert summary["rows_in"] == parts
    assert sum(summary["splits"].values()) == summary["rows_ok"]


# ------------------------------------------------------------------ penguins, as a user runs it


def _expected_penguin_rejects() -> set[tuple[str, str]]:
    """Independently of Spark: raw rows with a missing required value or out-of-range number."""
    raw = pd.read_csv(
        resolve_source("pkg://palmerpenguins/data/penguins-raw.csv"),
        dtype=str,
        keep_default_na=False,
    )
    required = [
        "Island",
        "Sex",
        "Culmen Length (mm)",
        "Culmen Depth (mm)",
        "Flipper Length (mm)",
        "Body Mass (g)",
    ]
    bad = raw[required].isin(["", "NA", "."]).any(axis=1)
    return set(zip(raw.loc[bad, "studyName"], raw.loc[bad, "Individual ID"], strict=True))


def test_penguins_reconcile_and_overwrite_keeps_version_0(
    spark: SparkSession, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    args = ["--config", str(PENGUINS), f"lake.root={lake}"]
    started = time.time()
    first = run_job("ingest", *args, cwd=tmp_path)
    took = time.time() - started
    assert first.returncode == 0, first.stderr[-3000:]
    s1 = summary_of(first)
    _reconciles(s1)
    assert (s1["rows_in"], s1["rows_ok"], s1["rows_rejected"], s1["duplicates_dropped"]) == (
        344,
        333,
        11,
        0,
    )
    assert s1["version"] == 0
    assert s1["rejects_version"] == 0
    # Timing is reported, not asserted: these machines are shared (see STYLE.md, issue 7).
    print(f"penguins ingest job: {took:.1f}s wall, {s1['seconds']}s in the job")

    clean = assert_lake_agrees(spark, lake / "penguins")
    rejects = assert_lake_agrees(spark, lake / "penguins_rejects")
    assert clean.count() == 333
    assert rejects.count() == 11
    assert rejects.columns == REJECT_COLUMNS
    # every file keeps its row count; min/max only where they can skip files (STATS_COLUMNS)
    for table, rows in ((lake / "penguins", 333), (lake / "penguins_rejects", 11)):
        stats = file_stats(table, 0)
        assert sum(s["numRecords"] for s in stats) == rows
        assert all(set(s["minValues"]) == set(s["nullCount"]) == {"_ingested_at"} for s in stats)
    labels = {r.species for r in clean.select("species").distinct().collect()}
    assert labels == {"Adelie", "Chinstrap", "Gentoo"}
    assert {r.sex for r in clean.select("sex").distinct().collect()} == {"male", "female"}
    assert {r.split: r["count"] for r in clean.groupBy("split").count().collect()} == s1["splits"]
    assert clean.filter(F.col("_source_file").endswith("penguins-raw.csv")).count() == 333

    # The rejects explain every rejected row: which rule, why, and the raw values.
    rows = rejects.collect()
    assert all(r.rule.startswith(RULE_KINDS) and r.reason for r in rows)
    raws = [json.loads(r.raw) for r in rows]
    assert {(x["studyName"], x["Individual ID"]) for x in raws} == _expected_penguin_rejects()
    cfg = load_config(PENGUINS)
    raw_name = {cfg.data.rename.get(h) or snake_case(h): h for h in raws[0]}
    for row, raw in zip(rows, raws, strict=True):
        kind, _, column = row.rule.partition(":")
        assert kind == "required", row.rule  # penguins-raw only misses values
        assert raw[raw_name[column]] in cfg.data.rules.null_values, (row.rule, raw)
        assert f"{column} is required but missing" in row.reason

    # Same input again, append mode: already ingested, nothing added.
    again = summary_of(run_job("ingest", *args, cwd=tmp_path))
    assert again["skipped"] is True
    assert again["version"] == 0
    _reconciles(again)

    # Overwrite: version 1 of both tables, version 0 still readable and the same rows.
    second = run_job("ingest", *args, "data.mode=overwrite", cwd=tmp_path)
    s2 = summary_of(second)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (s2["version"], s2["rejects_version"], s2["rows_ok"]) == (1, 1, 333)
    v0 = assert_lake_agrees(spark, lake / "penguins", 0).drop("_ingested_at")
    v1 = assert_lake_agrees(spark, lake / "penguins", 1).drop("_ingested_at")
    assert v0.exceptAll(v1).count() == 0
    assert v1.exceptAll(v0).count() == 0
    assert_lake_agrees(spark, lake / "penguins_rejects", 0)


# ------------------------------------------------------------------------ rules, in-process


RULES_CSV = """ID,Kind,Size (cm),Colour,Count,Note
1,Alpha thing,10.5,RED,3,first
2,Beta thing,NA,blue,4,
3,Gamma thing,abc,blue,5,
4,Delta thing,500,blue,6,
5,Eps thing,20,green,7,
6,???,20,red,8,
7,Zeta thing,30,red,9,a,EXTRA
8,  Eta thing  ,40,.,10,
9,Theta thing,50,blue,1.5,
1,Alpha thing,11,red,3,second
"""


def _config_file(lake: Path, source: Path | str, **data: object) -> Path:
    """A YAML config for the small 'things' dataset, as a user would write it."""
    section: dict[str, object] = {
        "name": "things",
        "source": str(source),
        "schema": {
            "id": "int",
            "kind": "string",
            "size_cm": "double",
            "colour": "string",
            "count": "int",
        },
        "rules": {
            "required": ["id", "kind", "size_cm"],
            "allowed": {"colour": ["red", "blue"]},
            "ranges": {"size_cm": [0, 100]},
            "extract": {"kind": "^([A-Za-z]+) thing$"},
            "lowercase": ["colour"],
            "null_values": ["", "NA", "."],
            "dedup_key": ["id"],
        },
        "id": ["id"],
    }
    section.update(data)
    path = lake.parent / f"things-{abs(hash(json.dumps(section, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump({"lake": {"root": str(lake)}, "data": section}))
    return path


def _config(lake: Path, source: Path | str, **data: object) -> Config:
    return load_config(_config_file(lake, source, **data))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_rules_quarantine_each_kind_of_bad_row(spark: SparkSession, tmp_path: Path) -> None:
    src = _write(tmp_path / "raw" / "things.csv", RULES_CSV)
    summary = run_ingest(_config(tmp_path / "lake", src), spark).summary()
    _reconciles(summary)
    assert (summary["rows_in"], summary["rows_ok"], summary["rows_rejected"]) == (10, 2, 7)
    assert summary["duplicates_dropped"] == 1

    rejects = assert_lake_agrees(spark, summary["rejects_table"])
    assert_lake_agrees(spark, summary["table"])
    by_id = {json.loads(r.raw).get("ID", r.raw): r for r in rejects.collect()}
    rules = {k: v.rule for k, v in by_id.items()}
    assert rules == {
        "2": "required:size_cm",
        "3": "cast:size_cm",
        "4": "range:size_cm",
        "5": "allowed:colour",
        "6": "extract:kind",
        '{"line":"7,Zeta thing,30,red,9,a,EXTRA"}': "parse",
        "9": "cast:count",
    }
    assert by_id["3"].reason == "size_cm: 'abc' is not a valid double"
    assert by_id["4"].reason == "size_cm: 500.0 is outside [0.0, 100.0]"
    assert "'green' is not one of ['red', 'blue']" in by_id["5"].reason
    assert json.loads(by_id["2"].raw) == {
        "ID": "2",
        "Kind": "Beta thing",
        "Size (cm)": "NA",
        "Colour": "blue",
        "Count": "4",
        "Note": None,
    }

    clean = {r.id: r for r in read_table(spark, summary["table"]).collect()}
    assert sorted(clean) == [1, 8]
    assert (clean[1].kind, clean[1].colour, clean[1].size_cm, clean[1].note) == (
        "Alpha",
        "red",
        10.5,
        "first",  # the first row of a duplicated key is kept
    )
    assert (clean[8].kind, clean[8].colour) == ("Eta", None)  # trimmed; "." -> null
    assert all(r.split in ("train", "val", "test") for r in clean.values())


def test_dedup_against_the_table_on_append(spark: SparkSession, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    header = "ID,Kind,Size (cm),Colour,Count\n"
    one = _write(tmp_path / "raw" / "a.csv", header + "1,A thing,1,red,1\n2,B thing,2,red,1\n")
    first = run_ingest(_config(lake, one), spark).summary()
    assert (first["rows_ok"], first["version"]) == (2, 0)
    # A new file repeating key 2 (changed values) and a known reject: both count as duplicates.
    two = _write(
        tmp_path / "raw2" / "b.csv",
        header + "2,B thing,9,blue,1\n3,C thing,3,red,1\n4,D thing,NA,red,1\n",
    )
    second = run_ingest(_config(lake, two), spark).summary()
    _reconciles(second)
    assert (second["rows_in"], second["rows_ok"], second["duplicates_dropped"]) == (3, 1, 1)
    assert second["rows_rejected"] == 1
    # the de-duplicating append (an insert-only MERGE on delta-spark, a commit against the
    # version read on delta-rs) keeps the stats columns the table was created with
    stats = file_stats(lake / "things", 1)
    assert sum(s["numRecords"] for s in stats) == 1
    assert all(set(s["minValues"]) == set(s["nullCount"]) == {"_ingested_at"} for s in stats)
    third = run_ingest(
        _config(lake, _write(tmp_path / "raw3" / "c.csv", header + "4,D thing,NA,red,1\n")), spark
    ).summary()
    assert (third["rows_rejected"], third["duplicates_dropped"]) == (0, 1)
    clean = read_table(spark, str(lake / "things"))
    assert sorted((r.id, r.size_cm) for r in clean.collect()) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert read_table(spark, str(lake / "things_rejects")).count() == 1


def test_splits_are_deterministic_and_follow_fractions(spark: SparkSession, tmp_path: Path) -> None:
    header = "ID,Kind,Size (cm),Colour,Count\n"
    lines = [f"{i},K thing,{i % 90},red,1\n" for i in range(3000)]
    a = _write(tmp_path / "a" / "x.csv", header + "".join(lines))
    b = _write(tmp_path / "b" / "y.csv", header + "".join(reversed(lines)))
    sa = run_ingest(_config(tmp_path / "lake", a, name="a", table="a"), spark).summary()
    sb = run_ingest(_config(tmp_path / "lake", b, table="b"), spark).summary()
    assert sa["splits"] == sb["splits"]
    shares = {k: v / 3000 for k, v in sa["splits"].items()}
    assert abs(shares["train"] - 0.7) < 0.03
    assert abs(shares["val"] - 0.15) < 0.03
    ta = read_table(spark, sa["table"]).select("id", "split")
    tb = read_table(spark, sb["table"]).select("id", "split")
    assert ta.exceptAll(tb).count() == 0
    other = run_ingest(
        _config(tmp_path / "lake", a, table="c", split={"train": 0.5, "val": 0.25, "test": 0.25}),
        spark,
    ).summary()
    assert abs(other["splits"]["train"] / 3000 - 0.5) < 0.03


def test_json_lines_and_parquet_sources(spark: SparkSession, tmp_path: Path) -> None:
    rows = [
        {"ID": 1, "Kind": "A thing", "Size (cm)": 1.5, "Colour": "red", "Count": 2},
        {"ID": 2, "Kind": "B thing", "Size (cm)": "heavy", "Colour": "blue", "Count": 3},
        {"ID": 3, "Kind": "C thing", "Size (cm)": 7, "Colour": "blue", "Count": 4},
    ]
    src = _write(
        tmp_path / "j" / "x.jsonl", "".join(json.dumps(r) + "\n" for r in rows) + "{not json\n"
    )
    js = run_ingest(_config(tmp_path / "lake", src, format="json", table="j"), spark).summary()
    _reconciles(js)
    assert (js["rows_in"], js["rows_ok"], js["reject_rules"]) == (
        4,
        2,
        {"cast:size_cm": 1, "parse": 1},
    )
    pq_dir = tmp_path / "p"
    pq_dir.mkdir()
    pd.DataFrame([r for r in rows if r["ID"] != 2]).to_parquet(pq_dir / "x.parquet")
    pq_summary = run_ingest(
        _config(tmp_path / "lake", pq_dir, format="parquet", table="p"), spark
    ).summary()
    assert (pq_summary["rows_in"], pq_summary["rows_ok"]) == (2, 2)
    got = sorted((r.id, r.size_cm) for r in read_table(spark, pq_summary["table"]).collect())
    assert got == [(1, 1.5), (3, 7.0)]


# ------------------------------------------------------------------------------ bad input


def test_missing_source_is_a_clear_error(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.source '.*nowhere.csv' does not exist"):
        run_ingest(_config(tmp_path / "lake", tmp_path / "nowhere.csv"), spark)
    with pytest.raises(DataError, match="package 'no_such_pkg', which is not installed"):
        run_ingest(_config(tmp_path / "lake", "pkg://no_such_pkg/x.csv"), spark)
    assert not (tmp_path / "lake").exists()


def test_package_source_that_is_a_plain_module_says_so() -> None:
    with pytest.raises(DataError, match=r"'csv' is a module \(.*csv.py\), not a package with data"):
        resolve_source("pkg://csv/data/x.csv")


def test_package_source_resolves_without_importing_the_package() -> None:
    # palmerpenguins' __init__ imports pandas: a job that only reads its CSV must not pay that.
    code = (
        "import sys; from pipeline.ingest.sources import resolve_source; "
        "p = resolve_source('pkg://palmerpenguins/data/penguins-raw.csv'); "
        "print(p, 'palmerpenguins' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0].endswith("/palmerpenguins/data/penguins-raw.csv")
    assert Path(out[0]).is_file()
    assert out[1:] == ["False", "False"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has no columns"),
        ("ID,Kind,Size (cm),Colour,Count\n", "header but no data rows"),
    ],
)
def test_empty_input_is_a_clear_error(
    spark: SparkSession, tmp_path: Path, text: str, message: str
) -> None:
    src = _write(tmp_path / "raw" / "x.csv", text)
    with pytest.raises(DataError, match=message):
        run_ingest(_config(tmp_path / "lake", src), spark)
    assert not (tmp_path / "lake" / "things").exists()


def test_header_that_does_not_match_the_schema(spark: SparkSession, tmp_path: Path) -> None:
    src = _write(tmp_path / "raw" / "x.csv", "ID,Kind,Sise (cm),Colour,Count\n1,A thing,1,red,1\n")
    with pytest.raises(
        DataError,
        match=r"does not match data.schema: no column becomes "
        r"\['size_cm'\] \(did you mean 'sise_cm'\?\)",
    ):
        run_ingest(_config(tmp_path / "lake", src), spark)


def test_rules_naming_missing_columns_or_wrong_types(spark: SparkSession, tmp_path: Path) -> None:
    src = _write(tmp_path / "raw" / "x.csv", "ID,Kind,Size (cm),Colour,Count\n1,A thing,1,red,1\n")
    lake = tmp_path / "lake"
    with pytest.raises(
        DataError,
        match=r"data.rules.required names column 'colur' \(did you "
        r"mean 'colour'\?\)",
    ):
        run_ingest(_config(lake, src, rules={"required": ["colur"]}), spark)
    with pytest.raises(DataError, match=r"data.features names column 'weight'"):
        run_ingest(_config(lake, src, features=["weight"]), spark)
    with pytest.raises(ConfigError, match=r"data.rules.ranges.colour: column 'colour' is string"):
        run_ingest(_config(lake, src, rules={"ranges": {"colour": [0, 1]}}), spark)
    with pytest.raises(ConfigError, match=r"data.schema.count: unknown type 'integr'"):
        run_ingest(_config(lake, src, schema={"count": "integr"}), spark)
    assert not lake.exists()


def test_job_exits_2_with_the_fix_for_bad_input(tmp_path: Path) -> None:
    proc = run_job(
        "ingest",
        "--config",
        str(PENGUINS),
        f"lake.root={tmp_path / 'lake'}",
        f"data.source={tmp_path / 'missing.csv'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    summary = summary_of(proc)
    assert summary["status"] == "failed"
    assert "does not exist" in summary["error"]
    assert "point data.source at" in summary["error"]


# --------------------------------------------------------------------------- crash safety


def test_killed_between_file_writes_and_commit_leaves_tables_unchanged(
    spark: SparkSession, tmp_path: Path, lake_engine: str
) -> None:
    lake = tmp_path / "lake"
    src = _write(tmp_path / "raw" / "things.csv", RULES_CSV)
    first = run_ingest(_config(lake, src), spark).summary()
    tables = [lake / "things", lake / "things_rejects"]
    before = {t: (DeltaTable(str(t)).version(), DeltaTable(str(t)).file_uris()) for t in tables}
    on_disk = {t: set(t.rglob("*.parquet")) for t in tables}

    cfg_file = _config_file(lake, src, mode="overwrite")
    args = ["--config", str(cfg_file)]
    killed = run_job("ingest", *args, cwd=tmp_path, env={"SPARKTRAIN_KILL_AT": "before_commit"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    for t in tables:
        assert (DeltaTable(str(t)).version(), DeltaTable(str(t)).file_uris()) == before[t]
    if lake_engine == "delta-rs":
        # The killed run did write its files: they are there, just never referenced.
        assert set((lake / "things").rglob("*.parquet")) > on_disk[lake / "things"]
    else:
        # delta-spark writes and commits in one step: killed before it, nothing was written.
        assert set((lake / "things").rglob("*.parquet")) == on_disk[lake / "things"]
    assert read_table(spark, str(lake / "things")).count() == first["rows_ok"]
    assert read_table(spark, str(lake / "things_rejects")).count() == first["rows_rejected"]

    # Re-run without the fault: both tables move on to version 1.
    redo = run_ingest(load_config(cfg_file), spark).summary()
    assert (redo["version"], redo["rejects_version"]) == (1, 1)
    assert os.environ.get("SPARKTRAIN_KILL_AT") is None
