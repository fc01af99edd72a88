"""Your own model: an nn.Module (and a loss) from a package this test writes, trained by two
Horovod ranks on Spark executors, registered, then loaded and scored by a fresh process that
does not have the package on its path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.train.job import run_training
from tests.train_helpers import ingested_lake, train_config

PACKAGE = "sparktrain_usernets"  # a name no installed package has

NETS = """
import torch
from torch import nn


class ResidualMLP(nn.Module):
    \"\"\"A tabular network: in_features and out_features come from the data.\"\"\"

    def __init__(self, in_features: int, out_features: int, width: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, width)
        self.block = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.block(h))
"""

LOSSES = """
import torch.nn.functional as F


def smoothed(outputs, target):
    return F.cross_entropy(outputs.float(), target.long(), label_smoothing=0.05)
"""


def write_package(root: Path) -> Path:
    package = root / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent(NETS))
    (package / "losses.py").write_text(textwrap.dedent(LOSSES))
    return root


@pytest.mark.slow
def test_user_model_trains_registers_and_scores_in_a_fresh_process(
    spark,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = write_package(tmp_path / "user-src")
    monkeypatch.syspath_prepend(str(source))  # the driver imports it; executors get a zip
    lake = ingested_lake("penguins", spark, tmp_path_factory)
    cfg = train_config(
        "penguins",
        lake,
        tmp_path,
        "train.workers=2",
        "train.epochs=10",
        "model.name=penguins-user",
        "model.family=custom",
        f"model.module={PACKAGE}.nets:ResidualMLP",
        "model.kwargs={width: 24}",
        f"model.loss={PACKAGE}.losses:smoothed",
    )
    result = run_training(cfg, spark)
    print("user model:", result.val_metrics, result.test_metrics, result.epochs_run)
    assert result.alias_moved is True
    assert result.val_metrics["accuracy"] >= 0.9
    assert result.test_metrics["accuracy"] >= 0.9

    script = f"""
import importlib.util, json, sys
import mlflow, pyarrow as pa, pyarrow.parquet as pq
from deltalake import DeltaTable
assert importlib.util.find_spec({PACKAGE!r}) is None, "the user package must not be on the path"
model = mlflow.pyfunc.load_model("models:/penguins-user@champion")
network = model.unwrap_python_model().scorer.network
files = DeltaTable({result.table_path!r}).file_uris()
rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
test = rows[rows["split"] == "test"]
out = model.predict(test)
print(json.dumps({{
    "accuracy": float((out["prediction"].to_numpy() == test["species"].to_numpy()).mean()),
    "class": type(network).__module__ + "." + type(network).__name__,
    "width": network.inp.out_features,
    "file": sys.modules[type(network).__module__].__file__,
}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = str(cfg.tracking.uri)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fresh["class"] == f"{PACKAGE}.nets.ResidualMLP"
    assert fresh["width"] == 24
    assert "/code/" in fresh["file"]  # the copy logged with the model, not the test's source
    assert not fresh["file"].startswith(str(source))
    assert fresh["accuracy"] == pytest.approx(result.test_metrics["accuracy"], abs=1e-9)
