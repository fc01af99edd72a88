"""MLflow for the training job: store check, the run, lineage, plots and the logged model.

All of this runs on the driver; rank 0 only logs per-epoch metrics (loop.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.data.delta_dataset_source import DeltaDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.contract.serving import ARTIFACT_NAME, Scorer
from pipeline.errors import TrackingError
from pipeline.lake.read import Snapshot
from pipeline.train.fit import SplitCounts
from pipeline.train.mlflow_http import http_environment
from pipeline.train.orphans import DriverHeartbeat, heartbeat_interval_s, sweep_orphans

_logger = logging.getLogger(__name__)

_PIPELINE = Path(__file__).resolve().parents[1]
# The logged model carries its own code so a process without this project installed can
# load it: the contract package and the errors it raises, and models/. Not the rest of
# pipeline/ (Spark jobs, bench, ops), which a served model never runs.
_SHIPPED = ("contract", "errors.py")
_MODELS = _PIPELINE.parent / "models"
# The shipped `pipeline/__init__.py`: in a process that also has sparktrain installed,
# extend_path lets the rest of `pipeline` be imported from there.
_PACKAGE_INIT = (
    '"""The part of sparktrain a logged model ships: pipeline/contract and errors.py."""\n'
    "from pkgutil import extend_path\n\n"
    "__path__ = extend_path(__path__, __name__)\n"
)
# MLflow "models from code": the model is built by running this file, not unpickled.
_MODEL_CODE = str(_PIPELINE / "contract" / "model_code.py")
_REQUIREMENTS = ("torch", "numpy", "pandas", "pyarrow", "mlflow", "scikit-learn")


def absolute_uri(uri: str) -> str:
    """A relative SQLite path made absolute, so ranks in other working directories find it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + os.path.abspath(uri[len(prefix) :])
    return uri


AUTH_ENV = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
# Creating a fresh SQLite store's schema takes seconds; a job waits this long for another's.
SCHEMA_LOCK_TIMEOUT_S = 120.0


def http_status(exc: Exception) -> int | None:
    """The HTTP status of a failed MLflow REST call: from MLflow's "failed with error code
    401 != 200" message (a non-JSON reply, as the basic-auth app sends) or its error code."""
    match = re.search(r"error code (\d{3}) != 200", str(exc))
    if match:
        return int(match.group(1))
    code = getattr(exc, "error_code", None)
    return {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}.get(str(code))


def access_error(exc: Exception, uri: str, doing: str) -> TrackingError | None:
    """An authentication (401) or permission (403) failure, with the variables to set."""
    status = http_status(exc)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 401:
        who = f"as user '{user}'" if user else "without credentials"
        return TrackingError(
            f"MLflow tracking server {uri} refused to authenticate the job {who} (HTTP 401) "
            f"while {doing}. Set {AUTH_ENV} to a valid user of that server"
        )
    if status == 403:
        return TrackingError(
            f"MLflow tracking server {uri} denied user '{user}' permission (HTTP 403) while "
            f"{doing}. Ask an admin of the server to grant it (EDIT on the experiment, "
            f"tracking.experiment), or set {AUTH_ENV} to a user who has it"
        )
    return None


def _sqlite_path(uri: str) -> str | None:
    prefix = "sqlite:///"
    return uri[len(prefix) :].split("?")[0] if uri.startswith(prefix) else None


@contextmanager
def schema_lock(uri: str) -> Iterator[None]:
    """Hold a file lock next to a SQLite store while a job first opens it.

    MLflow creates a fresh store's tables on first use; two jobs doing that at once
    both run the migrations and the second fails ("duplicate column name: step").
    Under the lock the first creates the schema and the second finds it made.
    """
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    try:
        handle = open(path + ".lock", "a")  # noqa: SIM115 - closed by the `with` below
    except OSError:
        # a missing or read-only directory: the store check itself reports it
        yield
        return
    with handle:
        deadline = time.monotonic() + SCHEMA_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrackingError(
                        f"another process has held {path}.lock for over "
                        f"{SCHEMA_LOCK_TIMEOUT_S:g} s while opening the tracking store {uri}; "
                        "if no job is running, delete the lock file"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_tracking_store(uri: str, timeout_s: float) -> None:
    """Fail fast, before any training, when the tracking store cannot be used."""
    # MLflow retries HTTP calls for minutes by default; one short try is the check.
    with http_environment(max_retries=0, timeout_s=timeout_s), schema_lock(uri):
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as exc:
            denied = access_error(exc, uri, "checking the store before training")
            if denied is not None:
                raise denied from exc
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise TrackingError(
                f"MLflow tracking store {uri} is unreachable ({type(exc).__name__}: {reason}). "
                "Training was not started. Start the server (make ui), or point tracking.uri / "
                "MLFLOW_TRACKING_URI at a reachable store, e.g. tracking.uri=sqlite:///mlflow.db"
            ) from exc


@contextmanager
def start_run(
    cfg: TrackingConfig, uri: str, resume_run_id: str | None, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """The job's one run (a new one, or the checkpoint's run when resuming), with a driver
    heartbeat while it lives. Orphans of the experiment are swept first. The run ends FAILED
    on an error; if the store cannot be reached to say so, the original error still wins
    and the heartbeat lets a later sweep end the run."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    sweep_orphans(client, cfg.experiment, cfg.orphan_after_s, keep=resume_run_id or "")
    active = _start_run(cfg, uri, resume_run_id, tags)
    beat = DriverHeartbeat(client, active.info.run_id, heartbeat_interval_s(cfg.orphan_after_s))
    try:
        yield active
    except BaseException:
        beat.stop()
        try:
            mlflow.end_run("FAILED")
        except Exception as exc:
            _logger.warning(
                "could not mark MLflow run %s FAILED (%s); it is marked KILLED once its driver "
                "heartbeat is older than tracking.orphan_after_s=%g",
                active.info.run_id,
                " ".join(str(exc).split())[:200],
                cfg.orphan_after_s,
            )
        raise
    beat.stop()
    mlflow.end_run("FINISHED")


def experiment_id(cfg: TrackingConfig) -> str:
    """The id of `tracking.experiment`, created (as a model-training experiment) if missing."""
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment:
        return str(experiment.experiment_id)
    return mlflow.create_experiment(
        cfg.experiment,
        artifact_location=cfg.artifact_location,
        # MLflow 3's UI opens an experiment on its GenAI overview unless it is marked
        # as model training; this lands `make ui` users on the runs table.
        tags={"mlflow.experimentKind": "custom_model_development"},
    )


def _start_run(
    cfg: TrackingConfig, uri: str, resume_run_id: str | None, tags: dict[str, str] | None
) -> mlflow.ActiveRun:
    if resume_run_id:
        try:
            return mlflow.start_run(run_id=resume_run_id)
        except Exception as exc:
            raise TrackingError(
                f"cannot resume MLflow run {resume_run_id} from the checkpoint ({exc}); was it "
                "deleted, or is tracking.uri another store? Train without train.resume"
            ) from exc
    try:
        return mlflow.start_run(experiment_id=experiment_id(cfg), run_name=cfg.run_name, tags=tags)
    except Exception as exc:
        denied = access_error(exc, uri, f"starting a run in experiment '{cfg.experiment}'")
        if denied is not None:
            raise denied from exc
        raise


def log_params(params: dict[str, Any]) -> None:
    """The flattened config as params. MLflow allows only some characters in names (config
    maps such as data.rename have free-text keys) and 6000 characters per value."""
    mlflow.log_params({re.sub(r"[^\w\-. :/]", "_", k): str(v)[:6000] for k, v in params.items()})


def log_lineage(table: str, snap: Snapshot, counts: SplitCounts) -> None:
    """Tags and a dataset input that name the exact Delta version trained on."""
    digest = hashlib.sha256("\n".join(sorted(snap.files)).encode()).hexdigest()[:16]
    rows = {f"rows_{split}": str(n) for split, n in counts.rows.items()}
    mlflow.set_tags(
        {
            "data.table": table,
            "data.table_path": snap.path,
            "data.table_version": str(snap.version),
            "data.files": str(len(snap.files)),
            **{f"data.{k}": v for k, v in rows.items()},
        }
    )
    source = DeltaDatasetSource(path=snap.path, delta_table_version=snap.version)
    # MetaDataset names a source without materialising it (its stub marks `profile` abstract).
    dataset = MetaDataset(source=source, name=f"{table}@v{snap.version}", digest=digest)  # type: ignore[abstract]
    tags = {"table_path": snap.path, "table_version": str(snap.version), **rows}
    try:
        mlflow.log_input(dataset, context="training", tags=tags)
    except mlflow.exceptions.MlflowException as exc:
        # MLflow's SQL store looks the dataset up, then inserts it: two runs of one experiment
        # logging the same table version at once (parallel tuning trials, two jobs) can both
        # miss it, and the second insert breaks the key (SQLite names the columns, PostgreSQL
        # the constraint dataset_pk). The winner's row is there now.
        if "UNIQUE constraint failed: datasets" not in str(exc) and "dataset_pk" not in str(exc):
            raise
        _logger.info("dataset %s was logged by another run at the same moment", dataset.name)
        mlflow.log_input(dataset, context="training", tags=tags)


def log_figure(figure: Figure, name: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, f"plots/{name}")
    plt.close(figure)


def _requirements() -> list[str]:
    """Pinned from this environment: skips MLflow's slow requirement inference."""
    pins = []
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _as_double(example: pd.DataFrame) -> pd.DataFrame:
    """float32 values (scalars or arrays) as float64. MLflow stores the input example as
    JSON, whose numbers read back as doubles, and refuses to narrow them to a float32
    signature; a double signature still accepts float32 input (widening is safe)."""
    out = example.copy()
    for name in out.columns:
        column = out[name]
        if column.dtype == np.float32:
            out[name] = column.astype(np.float64)
        elif column.dtype == object and len(column) and isinstance(column.iloc[0], np.ndarray):
            out[name] = [np.asarray(v, dtype=np.float64) for v in column]  # a few example rows
    return out


def _stage_pipeline(directory: Path) -> Path:
    """A `pipeline` package holding only what the served model imports."""
    package = directory / "pipeline"
    package.mkdir()
    (package / "__init__.py").write_text(_PACKAGE_INIT)
    for name in _SHIPPED:
        source = _PIPELINE / name
        if source.is_dir():
            shutil.copytree(source, package / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, package / name)
    return package


def log_scorer(
    scorer: Scorer,
    example: pd.DataFrame,
    model_metadata: dict[str, Any],
    user_code: list[Path] | None = None,
) -> ModelInfo:
    """Log the pyfunc (preprocessing + network) under the artifact name 'model', with the
    contract package, models/ and the user's own packages (`user_code`) as its code."""
    example = _as_double(example)
    signature: ModelSignature = infer_signature(example, scorer.predict(example))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = scorer.save(Path(tmp) / "bundle")
        code = [_stage_pipeline(Path(tmp)), _MODELS, *(user_code or [])]
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            python_model=_MODEL_CODE,
            artifacts={"bundle": str(bundle)},
            code_paths=[str(p) for p in code],
            signature=signature,
            input_example=example,
            metadata=model_metadata,
            pip_requirements=_requirements(),
        )
