"""The GPU path: Spark's GPU discovery script, the GPU settings, and (on a GPU machine) a
cluster whose workers advertise their GPUs and a training run that uses them.

Tests marked `gpu` skip cleanly where torch sees no CUDA device (these machines, CI).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DISCOVERY = REPO / "docker" / "spark-gpu-discovery.sh"
GPU_PROPERTIES = REPO / "conf" / "spark-gpu.properties"


BASH = shutil.which("bash") or "/bin/bash"


def discover(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(DISCOVERY)], env=env, capture_output=True, text=True, timeout=60
    )


def test_discovery_without_nvidia_smi_fails_and_says_why(tmp_path: Path) -> None:
    proc = discover({"PATH": str(tmp_path), "NVIDIA_SMI": str(tmp_path / "nvidia-smi")})
    assert proc.returncode == 1
    assert proc.stdout == ""  # nothing Spark could mistake for a GPU list
    assert "install the NVIDIA driver" in proc.stderr


@pytest.fixture
def stand_in_nvidia_smi(tmp_path: Path) -> Path:
    """A stand-in for the NVIDIA driver's tool, printing what it prints for three GPUs.

    Only the script's parsing and slicing are under test here; the `gpu` test below runs
    the real nvidia-smi.
    """
    tool = tmp_path / "nvidia-smi"
    tool.write_text(
        '#!/bin/sh\n[ "$1 $2" = "--query-gpu=index --format=csv,noheader" ] || exit 9\n'
        "printf '0\\n1\\n 2\\n'\n"
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def test_discovery_prints_spark_resource_json(stand_in_nvidia_smi: Path) -> None:
    proc = discover({"PATH": "/usr/bin:/bin", "NVIDIA_SMI": str(stand_in_nvidia_smi)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"name": "gpu", "addresses": ["0", "1", "2"]}


def test_discovery_gives_a_worker_only_its_slice(stand_in_nvidia_smi: Path) -> None:
    base = {"PATH": "/usr/bin:/bin", "NVIDIA_SMI": str(stand_in_nvidia_smi)}
    sliced = discover({**base, "SPARKTRAIN_GPU_ADDRESSES": "2, 1"})
    assert json.loads(sliced.stdout)["addresses"] == ["2", "1"]
    missing = discover({**base, "SPARKTRAIN_GPU_ADDRESSES": "1,7"})
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert "asks for GPU 7" in missing.stderr


def test_gpu_properties_ask_one_gpu_per_executor_and_per_task() -> None:
    props = dict(
        line.split("=", 1)
        for line in GPU_PROPERTIES.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert props["spark.executor.resource.gpu.amount"] == "1"
    assert props["spark.task.resource.gpu.amount"] == "1"
    assert props["spark.executor.cores"] == "1"
    script = props["spark.executor.resource.gpu.discoveryScript"]
    # The images copy docker/spark-gpu-discovery.sh to /app/docker/.
    assert script == "/app/docker/spark-gpu-discovery.sh"
    assert (REPO / script.removeprefix("/app/")).is_file()


@pytest.mark.gpu
def test_discovery_lists_the_gpus_torch_sees() -> None:
    import torch

    proc = discover(dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    addresses = json.loads(proc.stdout)["addresses"]
    assert len(addresses) == torch.cuda.device_count()


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_workers_advertise_their_gpus_to_the_master(tmp_path: Path) -> None:
    import urllib.request

    import torch

    from pipeline.ops.services import free_port

    workers = min(2, torch.cuda.device_count())
    ui_port = free_port()
    env = {
        **os.environ,
        "CLUSTER_DIR": str(tmp_path / "cluster"),
        "CLUSTER_MASTER_PORT": str(free_port()),
        "CLUSTER_MASTER_UI_PORT": str(ui_port),
        "CLUSTER_WORKER_UI_PORT": str(free_port()),
        "CLUSTER_WORKERS": str(workers),
        "CLUSTER_WORKER_GPUS": "1",
    }
    script = str(REPO / "docker" / "cluster.sh")
    try:
        up = subprocess.run(["bash", script, "up"], env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=10) as resp:
            state = json.load(resp)
        gpus = [tuple(w["resources"]["gpu"]["addresses"]) for w in state["workers"]]
        assert len(gpus) == workers
        assert all(len(g) == 1 for g in gpus)
        assert len(set(gpus)) == workers, f"two workers claim the same GPU: {gpus}"
    finally:
        subprocess.run(["bash", script, "down"], env=env, capture_output=True, timeout=300)
