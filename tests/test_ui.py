"""`make ui` over a store the jobs wrote to, and the MLflow UI in a real headless Chromium.

jobs/train.py logs straight into a SQLite store (as `make demo` does); `make ui` then
serves that store. Chromium from Debian's packages, driven by Playwright, opens the
experiment page and must show the run and its test accuracy. The screenshot is kept
under test-artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.ops.rest import MlflowRest
from pipeline.ops.services import ServiceProcess, free_port, start_process, wait_for_http
from tests.helpers import run_job, summary_of
from tests.train_helpers import ingested_lake

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True)
class TrainedStore:
    store_uri: str
    experiment: str
    run_name: str
    run_id: str
    test_accuracy: float


@dataclass(frozen=True)
class RunningUi:
    url: str
    process: ServiceProcess


@pytest.fixture(scope="module")
def trained_store(spark, tmp_path_factory: pytest.TempPathFactory) -> TrainedStore:  # type: ignore[no-untyped-def]
    """A SQLite store holding one real training run, written directly by the training job
    (its input, the penguins table, is the session's: the UI never sees the lake)."""
    root = tmp_path_factory.mktemp("ui")
    store = f"sqlite:///{root / 'mlflow.db'}"
    lake = ingested_lake("penguins", spark, tmp_path_factory)
    run_name = f"ui-check-{secrets.token_hex(3)}"
    train = run_job(
        "train",
        "--config", "conf/penguins.yaml",
        f"lake.root={lake}",
        f"tracking.uri={store}",
        "tracking.experiment=ui-check",
        f"tracking.run_name={run_name}",
        f"tracking.artifact_location={root / 'mlruns'}",
        "model.name=penguins-ui-check",
        "train.workers=1",
        "train.epochs=3",
        f"train.checkpoint_dir={root / 'checkpoints'}",
        env={"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store},
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-4000:]
    summary = summary_of(train)
    return TrainedStore(
        store_uri=store,
        experiment="ui-check",
        run_name=run_name,
        run_id=summary["run_id"],
        test_accuracy=float(summary["test_metrics"]["accuracy"]),
    )


@contextmanager
def serve_ui(store_uri: str, root: Path) -> Iterator[RunningUi]:
    """`make ui` itself (setup is taken as done: `-o setup`) over `store_uri`, in its own
    process group; also used by other modules' browser tests (test_tune)."""
    port = free_port()
    env = {
        **os.environ,
        "UI_PORT": str(port),
        "UI_BACKEND_STORE_URI": store_uri,
        "UI_ARTIFACTS_DESTINATION": str(root / "served-artifacts"),
    }
    env.pop("UI_HOST", None)  # the default host is part of what `make ui` promises
    process = start_process(
        "make ui", ["make", "-s", "-o", "setup", "ui"], log_path=root / "ui.log", env=env, cwd=REPO
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", timeout_s=180, process=process)
        yield RunningUi(url=url, process=process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def make_ui(
    trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningUi]:
    with serve_ui(trained_store.store_uri, tmp_path_factory.mktemp("make-ui")) as ui:
        yield ui


def test_make_ui_prints_its_url_and_serves_the_jobs_experiments(
    make_ui: RunningUi, trained_store: TrainedStore
) -> None:
    first_line = make_ui.process.log_path.read_text().splitlines()[0]
    assert first_line.startswith(f"MLflow UI: {make_ui.url} "), first_line
    rest = MlflowRest(make_ui.url)
    experiment = rest.experiment_by_name(trained_store.experiment)
    found = rest.post(
        "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 10}
    ).get("runs", [])
    assert [r["info"]["run_name"] for r in found] == [trained_store.run_name]
    # Artifacts the job wrote into its own directory are served too (the UI's plots tab).
    plots = [f["path"] for f in rest.run_artifacts(trained_store.run_id, "plots")]
    assert any(p.endswith(".png") for p in plots), plots


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's browser with `apt-get install chromium` "
    "(CI's .ci/run does this when it runs as root)",
)
def test_experiment_page_in_chromium_shows_the_run_and_its_accuracy(
    make_ui: RunningUi, trained_store: TrainedStore
) -> None:
    from playwright.sync_api import sync_playwright

    experiment_id = MlflowRest(make_ui.url).experiment_by_name(trained_store.experiment)[
        "experiment_id"
    ]
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "mlflow-ui-experiment.png"
    shot.unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 900})
            page.goto(f"{make_ui.url}/#/experiments/{experiment_id}/runs")
            page.get_by_text(trained_store.run_name).first.wait_for(timeout=120_000)
            # The assistant side panel takes a third of the page; close it when it is open.
            close = page.get_by_role("button", name="Close")
            if close.count():
                close.first.click()
            # MLflow 3's runs table shows no metric column until one is picked under "Columns".
            page.get_by_test_id("column-selection-dropdown").filter(has_text="Columns").click()
            page.get_by_text("test_accuracy", exact=True).first.click()
            page.keyboard.press("Escape")
            page.get_by_role("columnheader", name="test_accuracy").first.wait_for(timeout=30_000)
            # AG Grid renders the pinned run-name cells and the metric cells as two row
            # elements sharing one row-index; the metric cell's col-id names the metric.
            pinned = page.get_by_role("row").filter(has_text=trained_store.run_name).first
            index = pinned.get_attribute("row-index")
            metric_cell = '[role="gridcell"][col-id="metrics.`test_accuracy`"]'
            cell = page.locator(f'[role="row"][row-index="{index}"] {metric_cell}')
            shown = cell.inner_text(timeout=30_000).strip()
        finally:
            page_list = browser.contexts[0].pages if browser.contexts else []
            if page_list:
                page_list[0].screenshot(path=str(shot))
            browser.close()
    assert float(shown) == pytest.approx(trained_store.test_accuracy, abs=5e-4), (
        f"the UI shows test_accuracy={shown!r}, the run logged {trained_store.test_accuracy}"
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
