"""The logged model: preprocessing + network as one MLflow pyfunc that scores clean rows.

Contract for batch inference (keep it stable):
- input: a pandas DataFrame of clean table rows with at least the feature
  columns; other columns are ignored;
- output: a pandas DataFrame with the columns of `output_schema(task)`, made
  by the task (tasks.py): classification `prediction` (the label as a string)
  and `probabilities` (one float per class, in the order of the model metadata
  `classes`); regression `prediction`; anomaly `score` (reconstruction error)
  and `prediction` (score > metadata `threshold`).
This module imports neither Spark nor Horovod: it is what a fresh process loads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from pipeline.contract.preprocess import Preprocessor
from pipeline.contract.specs import build_network
from pipeline.contract.tasks import Task, output_schema

__all__ = ["Scorer", "SparktrainModel", "output_schema"]

_logger = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor.json"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
ARTIFACT_NAME = "model"  # the pyfunc's artifact name in the run


@dataclass
class Scorer:
    """A trained network with its preprocessing; scores pandas rows in batches."""

    preprocessor: Preprocessor
    family: str
    model_config: dict[str, Any]
    network: torch.nn.Module
    threshold: float | None = None
    batch_size: int = 4096

    @classmethod
    def from_state(
        cls,
        preprocessor: Preprocessor,
        family: str,
        model_config: dict[str, Any],
        state_dict: dict[str, torch.Tensor],
        threshold: float | None = None,
    ) -> Scorer:
        network = build_network(family, model_config)
        network.load_state_dict(state_dict)
        # Batch inference runs this on GPU executors when it can; CPU elsewhere.
        network.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        return cls(preprocessor, family, model_config, network, threshold)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def task(self) -> Task:
        return self.preprocessor.task

    def outputs(self, rows: pd.DataFrame) -> np.ndarray:
        """The task's outputs: class probabilities, regression values (label units) or
        anomaly scores."""
        missing = [c for c in self.preprocessor.feature_names if c not in rows.columns]
        if missing:
            raise ValueError(f"input rows lack feature column(s) {missing}")
        x = torch.from_numpy(self.preprocessor.transform(rows))
        task, label = self.task, self.preprocessor.label
        parts = []
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                batch = x[start : start + self.batch_size].to(self.device)
                parts.append(task.activate(self.network(batch), batch).cpu().numpy())
        result = np.concatenate(parts) if parts else task.empty_outputs(label)
        return task.to_label_units(label, result)

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        return self.task.frame(self.preprocessor.label, self.outputs(rows), self.threshold)

    # ------------------------------------------------------------ files

    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / PREPROCESSOR_FILE).write_text(self.preprocessor.to_json())
        spec = {"family": self.family, "config": self.model_config, "threshold": self.threshold}
        (path / MODEL_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
        torch.save({k: v.cpu() for k, v in self.network.state_dict().items()}, path / WEIGHTS_FILE)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Scorer:
        path = Path(directory)
        pre = Preprocessor.from_json((path / PREPROCESSOR_FILE).read_text())
        spec = json.loads((path / MODEL_FILE).read_text())
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        return cls.from_state(pre, spec["family"], spec["config"], state, spec["threshold"])


class SparktrainModel(PythonModel):
    """The MLflow pyfunc: loads the Scorer saved under the artifact 'bundle'."""

    def load_context(self, context: Any) -> None:
        self.scorer = Scorer.load(context.artifacts["bundle"])

    # pd.DataFrame is a type hint MLflow accepts without inferring a schema from it;
    # the logged signature describes the columns.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return self.scorer.predict(model_input)
