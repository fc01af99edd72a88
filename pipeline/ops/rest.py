"""A small read-only client for an MLflow tracking server's REST API (reads, and searches).

It talks to `/api/2.0/mlflow/...` over plain HTTP (no MLflow client code), so a
check made with it shows what any other client, or the UI, gets from the server.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import TrackingError

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    content_type: str

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise TrackingError(f"expected a JSON object from the server, got {type(data)}")
        return data


@dataclass(frozen=True)
class MlflowRest:
    """Requests against `base_url`; basic-auth credentials come from the environment."""

    base_url: str
    username_env: str = "MLFLOW_TRACKING_USERNAME"
    password_env: str = "MLFLOW_TRACKING_PASSWORD"
    timeout_s: float = 30.0

    def _headers(self) -> dict[str, str]:
        user, password = os.environ.get(self.username_env), os.environ.get(self.password_env)
        if not user or password is None:
            return {}
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(
        self,
        route: str,
        params: Mapping[str, str | int] | None = None,
        body: dict[str, Any] | None = None,
    ) -> HttpAnswer:
        """GET `route` (POST when `body` is given) and return the answer, whatever its status."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"{self.base_url.rstrip('/')}/{route.lstrip('/')}{query}"
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return HttpAnswer(resp.status, resp.read(), resp.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as exc:
            return HttpAnswer(exc.code, exc.read(), exc.headers.get("Content-Type", ""))
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"MLflow server at {self.base_url} is unreachable ({exc}); start it with "
                "`make ui` or fix the URL"
            ) from exc

    def get(self, endpoint: str, **params: str | int) -> dict[str, Any]:
        """GET `/api/2.0/mlflow/<endpoint>` and return its JSON; any non-200 is an error."""
        answer = self.request(f"/api/2.0/mlflow/{endpoint}", params)
        if answer.status != 200:
            raise TrackingError(
                f"GET {endpoint} {params} answered HTTP {answer.status}: "
                f"{answer.body[:500].decode(errors='replace')}"
            )
        return answer.json()

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to `/api/2.0/mlflow/<endpoint>` (searches are POST-only)."""
        answer = self.request(f"/api/2.0/mlflow/{endpoint}", body=body)
        if answer.status != 200:
            raise TrackingError(
                f"POST {endpoint} answered HTTP {answer.status}: "
                f"{answer.body[:500].decode(errors='replace')}"
            )
        return answer.json()

    # ------------------------------------------------------------ typed shortcuts

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get("runs/get", run_id=run_id)["run"]
        return run

    def metric_history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = self.get(
            "metrics/get-history", run_id=run_id, metric_key=key
        ).get("metrics", [])
        return history

    def run_artifacts(self, run_id: str, path: str = "") -> list[dict[str, Any]]:
        params: dict[str, str | int] = {"run_id": run_id}
        if path:
            params["path"] = path
        files: list[dict[str, Any]] = self.get("artifacts/list", **params).get("files", [])
        return files

    def run_artifact_bytes(self, run_id: str, path: str) -> bytes:
        """Download one run artifact through the server (as the UI does)."""
        answer = self.request("/get-artifact", {"path": path, "run_uuid": run_id})
        if answer.status != 200:
            raise TrackingError(f"artifact {path} of run {run_id}: HTTP {answer.status}")
        return answer.body

    def logged_model(self, model_id: str) -> dict[str, Any]:
        model: dict[str, Any] = self.get(f"logged-models/{model_id}")["model"]
        return model

    def logged_model_files(self, model_id: str) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = self.get(
            f"logged-models/{model_id}/artifacts/directories"
        ).get("files", [])
        return files

    def model_version_by_alias(self, name: str, alias: str) -> dict[str, Any]:
        version: dict[str, Any] = self.get("registered-models/alias", name=name, alias=alias)[
            "model_version"
        ]
        return version

    def experiment_by_name(self, name: str) -> dict[str, Any]:
        experiment: dict[str, Any] = self.get("experiments/get-by-name", experiment_name=name)[
            "experiment"
        ]
        return experiment
