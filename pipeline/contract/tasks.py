"""One Task object per task: everything that differs between classification, regression and
anomaly detection, in one place.

A Task owns the label's encoding (from fitted statistics), the loss, the
per-epoch and final metrics, the output activation, the output frame and its
schema, and the metric that chooses the champion. It also *declares* what
Spark must compute for it (`statistics`, the row filters); `pipeline/train/fit.py`
turns the declarations into aggregations, so this module needs no Spark.

Adding a task is one new subclass here, registered in `TASKS`; nothing else
branches on a task's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from pipeline.contract.encoding import as_strings, codes, numbers
from pipeline.errors import ConfigError, DataError

# torch and sklearn are imported where they are used (losses, metrics), not here: batch
# inference's driver reads a task's output schema only, and importing both costs it seconds.
if TYPE_CHECKING:
    import torch

# Which label values a row needs to count: `present` (not null), `finite` (a number),
# `in_classes` (a class seen in train) or `normal` (in data.normal_labels).
RowFilter = Literal["present", "finite", "in_classes", "normal"]
# Label statistics Spark computes over the fitting rows of the train split:
# `distinct` (the set of values, as "__classes") or `mean_std` ("__lmean", "__lstd").
Statistic = Literal["distinct", "mean_std"]
# Rows per label value (as a string; NULL_LABEL when missing) and split: what coverage checks.
LabelCounts = Mapping[str, Mapping[str, int]]
NULL_LABEL = "<null>"
_COVERAGE_FIX = (
    "Re-ingest so that every split holds them (a larger dataset or other data.split "
    "fractions), or remove these rows from the table"
)


def shown(counts: LabelCounts, values: list[str]) -> str:
    """'value': train n, val n, test n; ... for the values named, in a stable order."""
    return "; ".join(
        f"{v!r}: " + ", ".join(f"{s} {n}" for s, n in counts[v].items()) for v in sorted(values)
    )


@dataclass(frozen=True, kw_only=True)
class Label:
    """The target and its fitted statistics. classification: `classes` in index order;
    regression: standardised by mean/std; anomaly: rows whose label is in `normal` are the
    normal class. Saved with the model as JSON (keep the fields stable)."""

    name: str
    task: str
    classes: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    normal: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    confusion: np.ndarray | None = None  # classification only: counts[true, predicted]


class Task(ABC):
    """The protocol every task implements. Instances are stateless: fitted values live in
    the `Label` passed to each method."""

    name: ClassVar[str]
    # Rows the label statistics are fitted on, and rows ranks train and validate on.
    fit_rows: ClassVar[RowFilter]
    usable_rows: ClassVar[RowFilter]
    statistics: ClassVar[tuple[Statistic, ...]] = ()
    numeric_label: ClassVar[bool] = False
    # The network reconstructs its input (out_features = in_features): a sequence network
    # then returns a (batch, length, channels) series, not one row of outputs per series.
    reconstructs: ClassVar[bool] = False
    # The champion is the version with the best `selection_metric` on the validation split.
    selection_metric: ClassVar[str]
    higher_is_better: ClassVar[bool]
    # The pyfunc's output columns and their Spark SQL types.
    output_schema: ClassVar[tuple[tuple[str, str], ...]]
    # Sums each rank adds up over its validation batches (allreduced), besides the loss.
    epoch_sums: ClassVar[tuple[str, ...]] = ()
    # The served model needs a decision threshold calibrated on the validation split
    # (`fit_threshold`), so it cannot train on that split (train.fit_on).
    threshold_from_val: ClassVar[bool] = False

    # ------------------------------------------------------------ config and fitting

    def check_config(self, label: str | None, normal_labels: list[Any]) -> None:
        """Config the task needs, checked before any Spark work."""
        if label is None:
            raise ConfigError(
                f"data.label is not set: name the label column (data.task={self.name} needs "
                "one), e.g. data.label=species"
            )

    @abstractmethod
    def fit_label(
        self, name: str, stats: Mapping[str, Any], normal: list[str], table: str
    ) -> Label:
        """The Label from the statistics Spark computed (see `statistics`)."""

    @abstractmethod
    def check_coverage(self, label: Label, counts: LabelCounts, table: str) -> None:
        """Refuse validation/test rows the model or the metrics cannot use (checked on the
        driver before any rank launches). `counts`: label value -> split -> rows."""

    # ------------------------------------------------------------ targets and loss

    @abstractmethod
    def targets(self, label: Label, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """(targets, usable) for a label column of any length."""

    def trains_on(self, targets: np.ndarray) -> np.ndarray:
        """Which usable rows ranks train and validate on."""
        return np.ones(len(targets), dtype=bool)

    @abstractmethod
    def output_width(self, label: Label, in_features: int) -> int:
        """Columns of the network's raw output (`out_features` of a tabular model)."""

    def loss_target(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the loss compares the network's output with."""
        return y

    @abstractmethod
    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean training loss of a batch."""

    # ------------------------------------------------------------ outputs

    @abstractmethod
    def activate(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The served outputs of a batch, from the network's raw output and its input."""

    def to_label_units(self, label: Label, outputs: np.ndarray) -> np.ndarray:
        return outputs

    def empty_outputs(self, label: Label) -> np.ndarray:
        return np.zeros((0,), np.float32)

    @abstractmethod
    def frame(self, label: Label, outputs: np.ndarray, threshold: float | None) -> pd.DataFrame:
        """The pyfunc's output frame, columns as in `output_schema`."""

    def fit_threshold(
        self, outputs: np.ndarray, targets: np.ndarray, quantile: float
    ) -> float | None:
        """A decision threshold calibrated on validation outputs, if the task has one."""
        return None

    def metadata(self, label: Label, threshold: float | None) -> dict[str, Any]:
        """Model metadata batch inference and users read (besides features and label)."""
        return {"task": self.name}

    # ------------------------------------------------------------ metrics

    def epoch_batch(self, out: torch.Tensor, target: torch.Tensor) -> list[float]:
        """This batch's contribution to `epoch_sums`."""
        return []

    def epoch_metrics(self, label: Label, sums: dict[str, float], rows: float) -> dict[str, float]:
        """Per-epoch validation metrics (besides val_loss) from the allreduced sums."""
        return {}

    @abstractmethod
    def evaluate(self, label: Label, targets: np.ndarray, outputs: np.ndarray) -> Evaluation:
        """Metrics of served outputs against usable targets (validation or test rows)."""

    def selection_score(self, scores: Mapping[str, float]) -> float:
        """The champion's criterion, higher is better whatever the metric's direction."""
        value = float(scores[self.selection_metric])
        return value if self.higher_is_better else -value

    def selection_name(self, split: str) -> str:
        """How tags name the criterion, e.g. 'val_rmse (lower is better)'."""
        direction = "higher" if self.higher_is_better else "lower"
        return f"{split}_{self.selection_metric} ({direction} is better)"


class Classification(Task):
    name = "classification"
    fit_rows = "present"
    usable_rows = "in_classes"
    statistics = ("distinct",)
    selection_metric = "accuracy"
    higher_is_better = True
    output_schema = (("prediction", "string"), ("probabilities", "array<double>"))
    epoch_sums = ("correct",)

    def fit_label(
        self, name: str, stats: Mapping[str, Any], normal: list[str], table: str
    ) -> Label:
        classes = sorted(str(v) for v in stats["__classes"])
        if len(classes) < 2:
            raise DataError(
                f"label '{name}' has a single class {classes} in the train split of "
                f"{table}; classification needs at least two. Check the data or data.label"
            )
        return Label(name=name, task=self.name, classes=classes)

    def check_coverage(self, label: Label, counts: LabelCounts, table: str) -> None:
        unseen = [
            v
            for v, per_split in counts.items()
            if v not in label.classes and (per_split["val"] or per_split["test"])
        ]
        if unseen:
            raise DataError(
                f"label '{label.name}' of {table} has value(s) in the validation/test splits "
                f"that the train split lacks, so the model cannot predict them and the metrics "
                f"would leave them out (rows per split: {shown(counts, unseen)}; train classes: "
                f"{label.classes}). {_COVERAGE_FIX}"
            )

    def targets(self, label: Label, values: Any) -> tuple[np.ndarray, np.ndarray]:
        # Rows with a class unseen in train are not usable.
        index = codes(values, label.classes)
        return np.maximum(index, 0), index >= 0

    def output_width(self, label: Label, in_features: int) -> int:
        return len(label.classes)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(out.float(), target.long())

    def activate(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return out.float().softmax(dim=1)

    def empty_outputs(self, label: Label) -> np.ndarray:
        return np.zeros((0, len(label.classes)), np.float32)

    def frame(self, label: Label, outputs: np.ndarray, threshold: float | None) -> pd.DataFrame:
        classes = np.asarray(label.classes, dtype=object)
        return pd.DataFrame(
            {
                "prediction": classes[outputs.argmax(axis=1)] if len(outputs) else [],
                "probabilities": list(outputs.astype(np.float64)),
            }
        )

    def metadata(self, label: Label, threshold: float | None) -> dict[str, Any]:
        return {"task": self.name, "classes": label.classes}

    def epoch_batch(self, out: torch.Tensor, target: torch.Tensor) -> list[float]:
        return [float((out.argmax(dim=1) == target).sum().item())]

    def epoch_metrics(self, label: Label, sums: dict[str, float], rows: float) -> dict[str, float]:
        return {"val_accuracy": sums["correct"] / rows}

    def evaluate(self, label: Label, targets: np.ndarray, outputs: np.ndarray) -> Evaluation:
        """accuracy, macro-F1 and log loss of class probabilities against class indices."""
        from sklearn import metrics

        labels = list(range(len(label.classes)))
        predicted = outputs.argmax(axis=1)
        scores = {
            "accuracy": float(metrics.accuracy_score(targets, predicted)),
            "macro_f1": float(metrics.f1_score(targets, predicted, labels=labels, average="macro")),
            "log_loss": float(metrics.log_loss(targets, outputs, labels=labels)),
        }
        return Evaluation(scores, metrics.confusion_matrix(targets, predicted, labels=labels))


class Regression(Task):
    name = "regression"
    fit_rows = "finite"
    usable_rows = "finite"
    statistics = ("mean_std",)
    numeric_label = True
    selection_metric = "rmse"
    higher_is_better = False
    output_schema = (("prediction", "double"),)
    epoch_sums = ("squared_error",)

    def fit_label(
        self, name: str, stats: Mapping[str, Any], normal: list[str], table: str
    ) -> Label:
        std = stats["__lstd"]
        # A constant label carries no spread; dividing by 1 keeps targets finite.
        return Label(
            name=name, task=self.name, mean=float(stats["__lmean"]), std=float(std) if std else 1.0
        )

    def check_coverage(self, label: Label, counts: LabelCounts, table: str) -> None:
        bad = [v for v in (NULL_LABEL, "NaN") if v in counts]  # a NaN label casts to "NaN"
        if any(counts[v][s] for v in bad for s in ("val", "test")):
            raise DataError(
                f"label '{label.name}' of {table} is missing in validation/test rows, which "
                f"could not be measured (rows per split: {shown(counts, bad)}). Add "
                f"'{label.name}' to data.rules.required and re-ingest"
            )

    def targets(self, label: Label, values: Any) -> tuple[np.ndarray, np.ndarray]:
        # Standardised, so one learning rate suits labels of any scale; missing is unusable.
        y = numbers(values)
        usable = np.isfinite(y)
        return np.where(usable, (y - label.mean) / label.std, 0.0).astype(np.float32), usable

    def output_width(self, label: Label, in_features: int) -> int:
        return 1

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.mse_loss(out.float().reshape(-1), target)

    def activate(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return out.float().reshape(-1)

    def to_label_units(self, label: Label, outputs: np.ndarray) -> np.ndarray:
        return outputs * label.std + label.mean

    def frame(self, label: Label, outputs: np.ndarray, threshold: float | None) -> pd.DataFrame:
        return pd.DataFrame({"prediction": outputs.astype(np.float64)})

    def epoch_batch(self, out: torch.Tensor, target: torch.Tensor) -> list[float]:
        return [float(((out.float().reshape(-1) - target) ** 2).sum().item())]

    def epoch_metrics(self, label: Label, sums: dict[str, float], rows: float) -> dict[str, float]:
        # targets are standardised: RMSE in the label's units
        return {"val_rmse": float(np.sqrt(sums["squared_error"] / rows)) * label.std}

    def evaluate(self, label: Label, targets: np.ndarray, outputs: np.ndarray) -> Evaluation:
        from sklearn import metrics

        truth = self.to_label_units(label, targets)
        return Evaluation(
            {
                "rmse": float(np.sqrt(metrics.mean_squared_error(truth, outputs))),
                "mae": float(metrics.mean_absolute_error(truth, outputs)),
                "r2": float(metrics.r2_score(truth, outputs)),
            }
        )


class Anomaly(Task):
    """Trained on normal rows only; the score is the row's reconstruction error."""

    name = "anomaly"
    threshold_from_val = True
    reconstructs = True
    fit_rows = "normal"
    usable_rows = "normal"
    selection_metric = "roc_auc"
    higher_is_better = True
    output_schema = (("score", "double"), ("prediction", "boolean"))

    def check_config(self, label: str | None, normal_labels: list[Any]) -> None:
        super().check_config(label, normal_labels)
        if not normal_labels:
            raise ConfigError(
                "data.task=anomaly needs data.normal_labels: the label values of normal rows, "
                "e.g. data.normal_labels=[Adelie]"
            )

    def fit_label(
        self, name: str, stats: Mapping[str, Any], normal: list[str], table: str
    ) -> Label:
        return Label(name=name, task=self.name, normal=normal)

    def check_coverage(self, label: Label, counts: LabelCounts, table: str) -> None:
        # the threshold check (val) and ROC AUC (test) need both kinds of row
        normal = [v for v in counts if v in label.normal]
        anomalous = [v for v in counts if v not in label.normal]
        for split in ("val", "test"):
            for kind, values in (("normal", normal), ("anomalous", anomalous)):
                if not any(counts[v][split] for v in values):
                    raise DataError(
                        f"the {split} split of {table} has no {kind} rows (normal: label "
                        f"'{label.name}' in {label.normal}); anomaly detection measures its "
                        "threshold and ROC AUC on both kinds in validation and test (rows per "
                        f"split: {shown(counts, list(counts))}). {_COVERAGE_FIX}, or fix "
                        "data.normal_labels"
                    )

    def targets(self, label: Label, values: Any) -> tuple[np.ndarray, np.ndarray]:
        anomalous = ~np.isin(as_strings(values), label.normal)
        return anomalous.astype(np.float32), np.ones(len(anomalous), dtype=bool)

    def trains_on(self, targets: np.ndarray) -> np.ndarray:
        return targets == 0

    def output_width(self, label: Label, in_features: int) -> int:
        return in_features  # a reconstruction of the input

    def loss_target(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((out.float() - target.float()) ** 2).mean()

    def activate(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return ((out.float() - x) ** 2).mean(dim=1)  # reconstruction error per row

    def frame(self, label: Label, outputs: np.ndarray, threshold: float | None) -> pd.DataFrame:
        if threshold is None:
            raise ValueError("an anomaly model needs its threshold; it is set after training")
        return pd.DataFrame(
            {"score": outputs.astype(np.float64), "prediction": outputs > threshold}
        )

    def fit_threshold(
        self, outputs: np.ndarray, targets: np.ndarray, quantile: float
    ) -> float | None:
        """The `quantile` of the score over normal validation rows."""
        return float(np.quantile(outputs[targets == 0], quantile))

    def metadata(self, label: Label, threshold: float | None) -> dict[str, Any]:
        return {"task": self.name, "threshold": threshold}

    def evaluate(self, label: Label, targets: np.ndarray, outputs: np.ndarray) -> Evaluation:
        from sklearn import metrics

        if len(np.unique(targets)) < 2:
            raise DataError(
                f"ROC AUC needs normal and anomalous rows, but these {len(targets)} rows are all "
                f"{'anomalous' if len(targets) and targets[0] else 'normal'} (normal labels: "
                f"{label.normal}); re-ingest with more rows per split or check data.normal_labels"
            )
        return Evaluation({"roc_auc": float(metrics.roc_auc_score(targets, outputs))})


TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Regression(), Anomaly())}


def task_named(name: str) -> Task:
    """The Task registered as `name` (data.task)."""
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; set data.task to one of {sorted(TASKS)}")
    return TASKS[name]


def output_schema(task: str) -> list[tuple[str, str]]:
    """The pyfunc's output columns and their Spark SQL types, per task."""
    return list(task_named(task).output_schema)
