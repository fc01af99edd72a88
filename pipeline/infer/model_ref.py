"""Resolving a model URI to one exact registered version, once per run."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import InferenceError

_logger = logging.getLogger(__name__)

_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class ModelRef:
    """One registered model version: what every prediction of a run is traced to."""

    name: str
    version: int
    run_id: str
    source: str
    requested: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def default_model_uri(model_name: str, alias: str) -> str:
    return f"models:/{model_name}@{alias}"


def resolve(client: MlflowClient, model_uri: str) -> ModelRef:
    """Pin `models:/<name>@<alias>` or `models:/<name>/<version>` to one version."""
    by_alias = _ALIAS.match(model_uri)
    by_version = _VERSION.match(model_uri)
    if not (by_alias or by_version):
        raise InferenceError(
            f"infer.model_uri '{model_uri}' is not a registered model URI; use "
            "models:/<name>@<alias> (e.g. models:/penguins-mlp@champion) "
            "or models:/<name>/<version>"
        )
    name = (by_alias or by_version).group("name")  # type: ignore[union-attr]
    try:
        if by_alias:
            alias = by_alias.group("alias")
            mv: Any = client.get_model_version_by_alias(name, alias)
        else:
            mv = client.get_model_version(name, by_version.group("version"))  # type: ignore[union-attr]
    except MlflowException as exc:
        raise InferenceError(_missing_message(client, model_uri, name)) from exc
    ref = ModelRef(
        name=name,
        version=int(mv.version),
        run_id=str(mv.run_id),
        source=str(mv.source),
        requested=model_uri,
    )
    _logger.info("resolved %s to %s (run %s)", model_uri, ref.uri, ref.run_id)
    return ref


def _missing_message(client: MlflowClient, model_uri: str, name: str) -> str:
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return (
            f"model '{name}' is not registered in the tracking store, so '{model_uri}' cannot be "
            "resolved. Train and register it first (python jobs/train.py --config conf/<x>.yaml) "
            "or check tracking.uri"
        )
    aliases = sorted((model.aliases or {}).items())
    versions = [v.version for v in client.search_model_versions(f"name='{name}'")]
    return (
        f"'{model_uri}' does not exist: model '{name}' has versions {sorted(versions, key=int)} "
        f"and aliases {dict(aliases) or '{}'}. Pin a version (infer.model_uri=models:/{name}/<n>) "
        "or promote one to the alias"
    )
