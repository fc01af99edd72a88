"""Job-level messages: a bad or unreachable Spark master is exit 2, fast, with the fix; an
unexpected failure's summary is one readable line."""

from __future__ import annotations

import json
import socket
import time

import pytest

from pipeline.cli import run_job
from pipeline.errors import ConfigError, EnvironmentSetupError
from pipeline.master import check_master
from tests.helpers import REPO, summary_of
from tests.helpers import run_job as run_job_process


def test_a_bogus_master_is_exit_2_with_the_fix() -> None:
    started = time.monotonic()
    proc = run_job_process(
        "ingest",
        "--config",
        str(REPO / "conf" / "penguins.yaml"),
        "spark.master=bogus",
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert summary_of(proc)["error"] == (
        "spark.master='bogus' is not a Spark master URL: use local[N], spark://host:port, yarn "
        "or k8s://https://host:port; e.g. spark.master=local[2], or "
        "spark.master=spark://127.0.0.1:7077 (make cluster-up)"
    )
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60


def test_an_unreachable_master_fails_within_the_timeout() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(EnvironmentSetupError) as caught:
        check_master(f"spark://127.0.0.1:{port}", timeout_s=2)
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"no Spark master answers at spark://127.0.0.1:{port} within 2 s "
        f"(127.0.0.1:{port}: Connection refused). Start the cluster (make cluster-up) or point "
        "spark.master at a running one; e.g. spark.master=local[2], or "
        "spark.master=spark://127.0.0.1:7077 (make cluster-up)"
    )
    for good in ("local", "local[2]", "local[*]", "local[2,3]", "yarn", "k8s://https://h:6443"):
        check_master(good)
    with pytest.raises(ConfigError, match="'host' is not host:port"):
        check_master("spark://host")


def test_an_unexpected_failure_is_one_line_in_the_summary(
    tmp_path,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    def body(cfg, spark):  # type: ignore[no-untyped-def]
        raise RuntimeError("first line\n\tat org.example.Frame(Frame.java:1)")

    (tmp_path / "c.yaml").write_text("{}\n")
    assert run_job("x", body, ["--config", str(tmp_path / "c.yaml")], needs_spark=False) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["error"] == "RuntimeError: first line"
