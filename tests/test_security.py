"""Safe defaults: no secret in conf/, the MLflow server on loopback, basic-auth that works.

The server tests start the real `docker/mlflow-ui.sh` (what `make ui` runs).
"""

from __future__ import annotations

import configparser
import re
import socket
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from pipeline.ops.rest import MlflowRest
from pipeline.ops.services import (
    UI_SCRIPT,
    MlflowUiSettings,
    free_port,
    start_mlflow_ui,
)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# A key whose name has one of these words (between separators) holds a credential.
SECRET_KEY = re.compile(
    r"(^|[._\-])(pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credentials?)($|[._\-])",
    re.I,
)
# Shapes of well-known credentials, whatever key holds them.
SECRET_VALUE = re.compile(
    r"(://[^/\s:@]+:[^/\s@]+@"  # user:password@ in a URI
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|dapi[0-9a-f]{32}"  # Databricks personal access token
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.)"  # JWT
)
ENV_REFERENCE = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}?$")


def _value_is_secret(key: str, value: Any) -> bool:
    text = "" if value is None else str(value).strip()
    if SECRET_VALUE.search(text):
        return True
    if not SECRET_KEY.search(key) or not text or ENV_REFERENCE.match(text):
        return False
    # A key like `password_env: MLFLOW_TRACKING_PASSWORD` names a variable, not a secret.
    return not (key.lower().endswith(("_env", "_var")) and re.fullmatch(r"[A-Z_][A-Z0-9_]*", text))


def _walk(node: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _walk(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [kv for i, v in enumerate(node) for kv in _walk(v, f"{path}[{i}]")]
    return [(path, node)]


def find_secrets(directory: Path) -> list[str]:
    """`file: key` for every key or value under `directory` that holds a credential."""
    findings = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        pairs: list[tuple[str, Any]] = []
        if path.suffix in (".yaml", ".yml"):
            pairs = _walk(yaml.safe_load(text), "")
        # Every file, YAML included, also line by line: `key = v`, `key: v`, `key v`.
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";", "//")):
                continue
            m = re.match(r"([\w.\-\[\]]+)\s*(?:=|:|\s)\s*(.*)$", line)
            pairs.append((m[1], m[2]) if m else ("", line))
        findings += [f"{path.name}: {k}" for k, v in pairs if _value_is_secret(k, v)]
    return findings


def test_no_config_in_conf_holds_a_password_or_token() -> None:
    files = [p.name for p in CONF.iterdir() if p.is_file()]
    assert files, "conf/ is empty: nothing was checked"
    assert find_secrets(CONF) == []


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("a.yaml", "tracking:\n  password: hunter2\n"),
        ("b.yaml", "tracking:\n  uri: postgresql://mlflow:s3cret@db:5432/mlflow\n"),
        ("c.yaml", "spark:\n  conf:\n    spark.hadoop.fs.s3a.secret.key: abc123\n"),
        ("d.yaml", "x:\n  - AKIAABCDEFGHIJKLMNOP\n"),
        ("e.ini", "[mlflow]\nadmin_password = changeme\n"),
        ("f.properties", "spark.databricks.token dapi0123456789abcdef0123456789abcdef\n"),
        ("g.yaml", "tracking:\n  api_token: 'ghp_abcdefghijklmnopqrstuvwxyz0123456789'\n"),
    ],
)
def test_secret_scanner_catches_planted_credentials(
    tmp_path: Path, name: str, content: str
) -> None:
    (tmp_path / name).write_text(content)
    assert find_secrets(tmp_path), f"scanner missed the credential in {name}"


def test_secret_scanner_accepts_references_to_the_environment(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(
        "tracking:\n  uri: postgresql://mlflow@db:5432/mlflow\n"
        "  password: ${MLFLOW_TRACKING_PASSWORD}\n  password_env: MLFLOW_TRACKING_PASSWORD\n"
        "train:\n  tokens_per_batch: 0\n"
    )
    (tmp_path / "ok.ini").write_text("[mlflow]\n# admin_password comes from the environment\n")
    assert find_secrets(tmp_path) == []


def test_ui_launcher_refuses_a_password_inside_the_store_uri(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(UI_SCRIPT)],
        env={
            "PATH": "/usr/bin:/bin",
            "UI_BACKEND_STORE_URI": "postgresql://mlflow:s3cret@127.0.0.1:5432/mlflow",
            "UI_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "PGPASSWORD" in proc.stderr
    assert "s3cret" not in proc.stdout


def _non_loopback_ipv4() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for addr in addresses:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return str(addr.address)
    return None


def test_mlflow_server_binds_loopback_by_default(tmp_path: Path) -> None:
    settings = MlflowUiSettings(
        backend_store_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_destination=str(tmp_path / "artifacts"),
        port=free_port(),
    )
    # An empty UI_HOST leaves the launcher's own default, which is under test.
    with start_mlflow_ui(settings, log_path=tmp_path / "ui.log", extra_env={"UI_HOST": ""}) as ui:
        listening = [
            c.laddr.ip
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == settings.port
        ]
        assert listening == ["127.0.0.1"]
        other = _non_loopback_ipv4()
        if other is not None:
            with pytest.raises(OSError), socket.create_connection((other, settings.port), 3):
                pass
        assert "MLflow UI: http://127.0.0.1:" in ui.process.log_path.read_text()


def test_basic_auth_app_turns_away_anonymous_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shipped auth config, with its user database moved into this test's directory.
    auth = configparser.ConfigParser()
    auth.read(CONF / "mlflow-auth.ini")
    auth["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'auth.db'}"
    auth_ini = tmp_path / "auth.ini"
    with open(auth_ini, "w") as fh:
        auth.write(fh)
    admin_password = "test-only-" + tmp_path.name
    settings = MlflowUiSettings(
        backend_store_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_destination=str(tmp_path / "artifacts"),
        port=free_port(),
        app="basic-auth",
    )
    secrets_env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key-" + tmp_path.name,
    }
    with start_mlflow_ui(settings, log_path=tmp_path / "ui.log", extra_env=secrets_env) as ui:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        search = "/api/2.0/mlflow/experiments/search"
        assert MlflowRest(ui.url).request(search, {"max_results": 5}).status == 401
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        assert MlflowRest(ui.url).request(search).status == 401
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        found = MlflowRest(ui.url).get("experiments/search", max_results=5)
        assert [e["name"] for e in found["experiments"]] == ["Default"]
        # The training job's own checks name the variables to set (one server for all cases).
        _job_reports_401_and_403(ui.url, admin_password, monkeypatch)


def _enter(context: AbstractContextManager[Any]) -> None:
    """Enter and leave a context manager: start_run's checks run when it is entered."""
    with context:
        pass


def _job_reports_401_and_403(
    url: str, admin_password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    from pipeline.config import TrackingConfig
    from pipeline.errors import TrackingError
    from pipeline.train.tracking import check_tracking_store, start_run

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(TrackingError) as denied:
        check_tracking_store(url, 5)
    assert str(denied.value) == (
        f"MLflow tracking server {url} refused to authenticate the job as user 'admin' "
        "(HTTP 401) while checking the store before training. Set MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD to a valid user of that server"
    )
    # a user who may read (default_permission = READ) but not log into the admin's experiment
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    AuthServiceClient(url).create_user("reader", "reader-" + admin_password)
    MlflowClient(url).create_experiment("owned-by-admin")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-" + admin_password)
    check_tracking_store(url, 5)  # reading is allowed
    with pytest.raises(TrackingError) as forbidden:
        _enter(start_run(TrackingConfig(experiment="owned-by-admin"), url, None))
    assert str(forbidden.value).startswith(
        f"MLflow tracking server {url} denied user 'reader' permission (HTTP 403) while "
        "starting a run in experiment 'owned-by-admin'. Ask an admin"
    )
    assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in str(forbidden.value)
