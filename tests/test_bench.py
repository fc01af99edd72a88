"""Benchmarks: `jobs/bench.py --quick` writes every figure B1..B10, sane and consistent.

Only the quick size runs here, to prove the benchmark code works end to end on
real Spark, Delta, Horovod, TorchDistributor and MLflow. No timing is asserted:
figures depend on the machine; their presence, units and arithmetic do not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pipeline.bench.figures import Figure, Pair, Report
from pipeline.bench.run import ALL, check_only
from pipeline.bench.workspace import MARKER, Workspace
from pipeline.class_archive import usable_archive
from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.helpers import REPO, run_job, summary_of

UNITS = {
    "B1": "rows/s",
    "B2": "samples/s",
    "B3": "samples/s",
    "B4": "samples/s",
    "B5": "rows/s",
    "B6": "MiB",
    "B7": "s/epoch",
    "B8": "epochs",
    "B9": "s",
    "B10": "s",
}
QUICK = load_config(REPO / "conf" / "bench.yaml").bench


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out" / "bench.json"
    proc = run_job(
        "bench",
        "--config",
        str(REPO / "conf" / "bench.yaml"),
        "--quick",
        "--out",
        str(out),
        f"bench.workdir={tmp / 'work'}",
        # A guard against a hang, not a speed limit: alone it takes about 7.5 min, beside
        # test_sequence_bars (make test's other process) 10 min, and on a slow, loaded day
        # it ran past the 20 min this used to allow.
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return {"summary": summary_of(proc), "json": json.loads(out.read_text()), "stdout": proc.stdout}


def _check_pair(key: str, pair: dict[str, Any]) -> None:
    for name in ("value", "peer", "ratio"):
        assert isinstance(pair[name], float | int), (key, name, pair)
        assert math.isfinite(pair[name]), (key, name, pair)
        assert pair[name] > 0, (key, name, pair)
    # the ratio is ours / peer, from the unrounded values (4 significant digits kept)
    assert pair["ratio"] == pytest.approx(pair["value"] / pair["peer"], rel=2e-3), (key, pair)
    assert pair["units"], (key, pair)
    assert pair["peer_name"], (key, pair)


def test_quick_run_writes_every_figure(quick_run: dict[str, Any]) -> None:
    data = quick_run["json"]
    assert sorted(k for k in data if k != "context") == sorted(ALL)
    for key in ALL:
        figure = data[key]
        _check_pair(key, figure)
        assert figure["units"] == UNITS[key]
        # every figure states its setting: data size, workers, batch size, machine, versions
        # B8 and B9 run on penguins (344 raw rows), the others use the synthetic table
        assert figure["rows"] >= (300 if key in ("B8", "B9") else 1000), figure
        assert figure["workers"] >= 1, figure
        assert figure["machine"]["cores"] >= 1
        assert figure["machine"]["memory_gib"] > 0
        assert figure["packages"]["horovod"] == "0.28.1"
        assert figure["packages"]["petastorm"] == "0.12.1"
        assert figure["measured"]
    for key in ("B2", "B3", "B4", "B6", "B7"):
        assert data[key]["batch_size"] == 256  # train.batch_size of conf/bench.yaml
    _check_pair("B4 start", data["B4"]["start to first step"])
    assert data["B4"]["start to first step"]["units"] == "s"
    _check_pair("B5 limit", data["B5"]["vs limit"])
    _check_pair("B2 raw scan", data["B2"]["vs raw scan"])
    _check_pair("B10 second", data["B10"]["second run (snapshot reused)"])
    _check_pair("B9 inference", data["B9"]["incremental inference (8 rows)"])
    # B9's second ingest peer writes a Delta table: informative, with no target of its own
    delta_pair = data["B9"]["ingest vs a Delta write"]
    _check_pair("B9 vs Delta", delta_pair)
    assert delta_pair["value"] == data["B9"]["value"]
    assert (delta_pair["target"], delta_pair["met"]) == (None, None)
    assert delta_pair["peer_name"] == "minimal Spark job (same session) -> Delta (delta-spark)"
    # B9: each side's best round is split into phases that add up to (at most) its wall time
    b9 = data["B9"]["details"]
    assert b9["first_inference_rows"] == 333
    for side, wall in (
        ("ingest", data["B9"]["value"]),
        ("ingest_peer", data["B9"]["peer"]),
        ("ingest_delta_peer", delta_pair["peer"]),
    ):
        phases = b9[f"{side}_phases"]
        assert set(phases) == {"imports", "session", "work", "stop"}
        assert 0 < sum(phases.values()) <= wall + 0.1, (side, phases, wall)
    # B10: the plain copy streamed, the deletion-vector copy was made once, then reused
    assert set(data["B10"]["details"]) == {
        "plain_before_s",
        "vectors_first_s",
        "vectors_second_s",
        "plain_after_s",
    }
    assert data["context"]["quick"] is True
    assert data["context"]["raw_rows"] == QUICK.quick_rows
    assert data["context"]["class_archive"] == str(usable_archive())  # built by make setup


def test_quick_run_figures_are_consistent(quick_run: dict[str, Any]) -> None:
    data = quick_run["json"]
    b1 = data["B1"]["details"]
    # the ingest B1 timed reconciled every raw row
    assert b1["rows_ok"] + b1["rows_rejected"] + b1["duplicates_dropped"] == QUICK.quick_rows
    clean = data["context"]["clean_rows"]
    assert clean == b1["rows_ok"]
    # batch inference and spark_udf scored the same table: every clean row, each run
    assert data["B5"]["details"]["rows_per_run"] == [clean] * QUICK.quick_rounds
    # B6: the large table really has 10x the rows, same layout, and the worker ran its steps
    b6 = data["B6"]["details"]
    small, large = QUICK.quick_memory_rows
    assert (b6["small"]["rows"], b6["large"]["rows"]) == (small, large)
    assert b6["large"]["row_groups"] == b6["small"]["row_groups"] * (large // small)
    assert b6["small"]["steps"] == b6["large"]["steps"] == QUICK.memory_steps
    # a worker process holds at least the Python + torch + pyarrow imports
    assert 100 < data["B6"]["peer"] < 16_000
    # B8: the three studies ran every trial; without pruning each trained every epoch
    b8 = data["B8"]["details"]
    for study in ("pruned", "unpruned", "parallel_2"):
        s = b8[study]
        assert s["trials_complete"] + s["trials_pruned"] == QUICK.quick_tune_trials, (study, s)
    assert b8["unpruned"]["epochs_trained"] == QUICK.quick_tune_trials * QUICK.quick_tune_epochs
    # B7 logged real metrics to MLflow each epoch
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(
        data["B7"]["details"]["metrics_logged_per_epoch"]
    )


def test_quick_run_prints_the_table_and_summary(quick_run: dict[str, Any]) -> None:
    summary = quick_run["summary"]
    assert summary["status"] == "ok"
    assert summary["quick"] is True
    assert summary["ratios"] == {k: quick_run["json"][k]["ratio"] for k in ALL}
    table = quick_run["stdout"]
    for key in ALL:
        assert f"| {key} |" in table
    assert "| B4 start to first step |" in table
    assert "| B5 vs limit |" in table
    assert "| B2 vs raw scan |" in table
    assert "| B10 second run (snapshot reused) |" in table
    assert "| B9 incremental inference (8 rows) |" in table
    assert "| B9 ingest vs a Delta write |" in table


# ----------------------------------------------------------------- no Spark needed


def _report() -> Report:
    context = {
        "machine": {"cores": 2, "memory_gib": 24.0, "gpu": None},
        "packages": {"torch": "2.13.0"},
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [1.5, 1.0, 1.0],
        "seconds": 12.0,
    }
    fig = Figure(
        key="B6",
        name="peak RSS",
        main=Pair(value=600.0, peer=500.0, units="MiB", peer_name="small", target=("<=", 1.2)),
        rows=10,
        workers=2,
        batch_size=256,
        measured="test",
        also={"other": Pair(value=1.0, peer=4.0, units="s", peer_name="x", target=("<=", 0.2))},
    )
    return Report([fig], context)


def test_pairs_judge_targets_in_their_direction() -> None:
    assert Pair(value=3.0, peer=2.0, units="u", peer_name="p", target=(">=", 1.5)).met is True
    assert Pair(value=2.9, peer=2.0, units="u", peer_name="p", target=(">=", 1.5)).met is False
    assert Pair(value=2.5, peer=2.0, units="u", peer_name="p", target=("<=", 1.2)).met is False
    assert Pair(value=1.0, peer=2.0, units="u", peer_name="p").met is None


def test_report_json_and_table_agree(tmp_path: Path) -> None:
    report = _report()
    data = json.loads(report.write(tmp_path / "x" / "r.json").read_text())
    assert data["B6"]["ratio"] == 1.2
    assert data["B6"]["met"] is True
    assert data["B6"]["other"] == {
        "value": 1.0,
        "peer": 4.0,
        "ratio": 0.25,
        "units": "s",
        "peer_name": "x",
        "target": "<= 0.2",
        "met": False,
    }
    table = report.markdown()
    assert "| B6 | peak RSS vs small | 600 MiB | 500 MiB | 1.20 | <= 1.2 ✓ |" in table
    assert "| B6 other |" in table
    assert "<= 0.2 ✗" in table
    assert report.ratios() == {"B6": 1.2}


def test_workspace_refuses_to_wipe_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="bench.workdir .* non-empty directory"):
        Workspace.fresh(str(tmp_path))
    assert (tmp_path / "notes.txt").exists()
    ws = Workspace.fresh(str(tmp_path / "bench"))
    (ws.root / "left-over").write_text("old")
    again = Workspace.fresh(str(tmp_path / "bench"))  # its own workspace: wiped
    assert sorted(p.name for p in again.root.iterdir()) == [MARKER]


def test_bad_bench_options_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="unknown benchmark.*B11.*choose from B1"):
        check_only(["B1", "B11"])
    assert check_only(["b9"]) == ["B9"]
    assert check_only(["b2", " B4 "]) == ["B2", "B4"]
    assert check_only([""]) == list(ALL)
    with pytest.raises(ConfigError, match="whole multiple.*memory_rows=\\[1000,10000\\]"):
        load_config(overrides=["bench.memory_rows=[1000,1500]"])
    with pytest.raises(ConfigError, match="two sizes"):
        load_config(overrides=["bench.memory_rows=[1000]"])
    with pytest.raises(ConfigError, match="unknown config key 'bench.row'.*did you mean 'rows'"):
        load_config(overrides=["bench.row=5"])
