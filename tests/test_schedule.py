"""The crontab and Kubernetes CronJob that schedule batch inference (checked statically)."""

from __future__ import annotations

import re
import shlex

import yaml

from pipeline.config import load_config
from tests.helpers import REPO

SCHEDULE = REPO / "docker" / "schedule"
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\d+(-\d+)?))*$")


def _job_invocations(command: str) -> list[list[str]]:
    """Every `jobs/<x>.py ...` invocation in a shell command, as argv lists."""
    words = shlex.split(command.replace("&&", " && ").replace("'", " "))
    calls, current = [], None
    for word in words:
        if word.startswith("jobs/") and word.endswith(".py"):
            current = [word]
            calls.append(current)
        elif word in ("&&", ">>", "2>&1"):
            current = None
        elif current is not None:
            current.append(word)
    return calls


def _check_invocation(argv: list[str]) -> None:
    assert (REPO / argv[0]).is_file(), f"{argv[0]} does not exist"
    conf = argv[argv.index("--config") + 1]
    overrides = [a for a in argv[argv.index("--config") + 2 :] if "=" in a and "$" not in a]
    load_config(REPO / conf, overrides)


def test_crontab_lines_are_valid_and_run_existing_jobs() -> None:
    lines = [
        line
        for line in (SCHEDULE / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]
    assert lines, "crontab has no schedule line"
    jobs_seen = []
    for line in lines:
        fields = line.split(None, 5)
        assert all(CRON_FIELD.match(f) for f in fields[:5]), f"bad schedule in: {line}"
        calls = _job_invocations(fields[5])
        for argv in calls:
            _check_invocation(argv)
        jobs_seen += [argv[0] for argv in calls]
    assert "jobs/batch_infer.py" in jobs_seen


def test_kubernetes_cronjob_runs_batch_infer_with_secrets_from_env() -> None:
    doc = yaml.safe_load((SCHEDULE / "batch-infer-cronjob.yaml").read_text())
    assert doc["kind"] == "CronJob"
    assert doc["apiVersion"] == "batch/v1"
    spec = doc["spec"]
    assert len(spec["schedule"].split()) == 5
    # idempotent job, but two runs at once would only waste work
    assert spec["concurrencyPolicy"] == "Forbid"
    (container,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["args"])
    calls = _job_invocations(command)
    assert [c[0] for c in calls] == ["jobs/batch_infer.py"]
    _check_invocation(calls[0])
    for var in container["env"]:
        if any(s in var["name"] for s in ("PASSWORD", "TOKEN", "USERNAME", "TRACKING_URI")):
            assert "valueFrom" in var, f"{var['name']} must come from a Secret, not a literal"
            assert "value" not in var
