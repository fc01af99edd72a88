# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sparktrain-setup
# `pip install torch==2.13.0` takes PyPI's CUDA build (2.13.0+cu130; about 90 s and a 4.8 GB
# venv), which runs on the CPU; a CPU wheel in a local PIP_FIND_LINKS folder is taken instead
# where one exists. Horovod is then built against it (docker/build-horovod.sh).

PYTEST_ARGS ?=
# pytest processes for the parallel part of `make test` (README "Tests"). Three on 2 cores:
# with two, a train + batch-inference pair of modules kept the cores 83 % busy (700 CPU-s in
# 424 s); the rest was tests waiting on JVMs, Horovod ranks and servers to start.
TEST_PROCS ?= 3

.PHONY: setup jars class-archive test test-fast lint demo demo-sequences tune-demo ui cluster-up cluster-down bench clean

setup: $(STAMP) jars class-archive

# Delta Lake's and the S3 connector's jars, cached once per machine (mvn; SPARKTRAIN_JARS_DIR overrides the cache).
jars: $(STAMP)
	@command -v mvn >/dev/null || { echo "error: no Maven client to fetch Delta Lake's jars: apt-get install maven" >&2; exit 1; }
	bash docker/fetch-jars.sh $(PY)

# The classes a Spark job loads, archived once per virtualenv for the JVM's class-data
# sharing: seconds off every local job's start (pipeline/class_archive.py; about 45 s).
class-archive: jars
	$(PY) -m pipeline.class_archive

$(STAMP): pyproject.toml docker/build-horovod.sh docker/cxx17.sh docker/nvcc17.sh
	@command -v java >/dev/null || { echo "error: no Java runtime. Spark 3.5 needs Java 8/11/17: apt-get install openjdk-17-jre-headless" >&2; exit 1; }
	@compgen -G "$(VENV)/lib/python3*/site-packages/torch" >/dev/null || bash docker/check-disk.sh $(VENV)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "setuptools>=77.0.3" wheel
	$(PY) -m pip install -q torch==2.13.0 numpy==1.26.4 pyyaml packaging
	bash docker/build-horovod.sh $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	@# grep reads to the end (not -q, which exits at the first match and leaves horovodrun
	@# writing into a closed pipe: a BrokenPipeError traceback in the setup log).
	$(VENV)/bin/horovodrun --check-build | grep 'X\] PyTorch' >/dev/null || { echo "horovod was built without PyTorch" >&2; exit 1; }
	@touch $(STAMP)
	@echo "setup done: $(VENV)"

# The suite's JVMs (the pytest processes' sessions and every job it starts as a subprocess,
# which inherit the variable) run with HotSpot's quick C1 compiler only. They live seconds to
# minutes on small data, where the optimising C2 compiler's threads cost more CPU than their
# code saves, and on 2 cores that CPU is taken from the test running beside. Measured alone on
# 2 cores: a penguins ingest job 36 s against 26 s; two tests of job subprocesses 82-88 s
# against 66-75 s; a module of in-process Spark work unchanged (192 s against 208 s). Semantics
# do not depend on the compiler. `make demo`, `make bench` and the jobs keep the JVM's default.
TEST_JVM := JAVA_TOOL_OPTIONS="-XX:TieredStopAtLevel=1 $$JAVA_TOOL_OPTIONS"

# TEST_PROCS pytest processes (one module each at a time, the longest first: tests/conftest.py
# LONGEST_FIRST) share the suite, then the tests that time themselves run alone
# (tests/conftest.py SERIAL_MODULES); both parts always run.
test: setup
	@rc=0; \
	$(TEST_JVM) $(PY) -m pytest -n $(TEST_PROCS) --dist loadfile --no-loadscope-reorder -m "not serial" --durations=25 $(PYTEST_ARGS) || rc=$$?; \
	$(TEST_JVM) $(PY) -m pytest -m serial --durations=15 $(PYTEST_ARGS) || rc=$$?; \
	exit $$rc

test-fast: setup
	$(TEST_JVM) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check pipeline models jobs tests
	$(VENV)/bin/mypy

# LAKE=s3://bucket/lake runs the demo on object storage (see README "Object storage")
demo: setup
	$(PY) jobs/demo.py $(if $(LAKE),lake.root=$(LAKE))

# A small Optuna study on penguins (README "Tuning"): each trial a 1-worker training run.
# A new study name each time, so a re-run does not need tune.resume=true.
TUNE_STUDY ?= penguins-demo-$(shell date +%Y%m%d-%H%M%S)
tune-demo: setup
	$(PY) jobs/ingest.py --config conf/penguins.yaml
	$(PY) jobs/tune.py --config conf/penguins.yaml tune.study=$(TUNE_STUDY) tune.trials=6 train.workers=1 train.epochs=15
	@echo "Where to look: make ui, open http://127.0.0.1:5000, experiment 'penguins' -> Training runs:"
	@echo "  the parent run '$(TUNE_STUDY)' (expand it: one child run per trial, tag tune.state);"
	@echo "  its Artifacts -> plots/ hold the optimisation history, importances and pruned trials;"
	@echo "  Models -> penguins-mlp holds the winner, alias champion if it beat the previous one."
# A UCR data set (GunPoint, shipped by sktime) -> a 1D-CNN on 2 workers -> registry -> test split scored.
demo-sequences: setup
	$(PY) jobs/demo_sequences.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache lake mlruns

# --- operations (issue 6): MLflow UI and a local Spark standalone cluster -------------
# UI_HOST (default 127.0.0.1), UI_PORT, UI_BACKEND_STORE_URI, UI_APP=basic-auth: see docker/mlflow-ui.sh
ui: setup
	@bash docker/mlflow-ui.sh

# CLUSTER_WORKERS (2), CLUSTER_WORKER_CORES (1), CLUSTER_MASTER_PORT (7077), ...: see docker/cluster.sh
cluster-up: setup
	@bash docker/cluster.sh up

cluster-down:
	@bash docker/cluster.sh down

# --- benchmarks (issue 7): B1..B8, each side by side with its peer ---------------------
# BENCH_ROWS raw synthetic rows (default 1,000,000); BENCH_OUT the JSON written.
BENCH_ROWS ?= 1000000
BENCH_OUT ?= bench-out/bench.json
bench: setup
	$(PY) jobs/bench.py --config conf/bench.yaml --out $(BENCH_OUT) bench.rows=$(BENCH_ROWS)
