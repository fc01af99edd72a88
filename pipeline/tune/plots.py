"""The study's plots, logged as artifacts of the parent run."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

_logger = logging.getLogger(__name__)


def _figure(plot: Callable[..., Any], study: optuna.Study) -> Figure:
    with warnings.catch_warnings():  # optuna marks its matplotlib backend experimental
        warnings.simplefilter("ignore")
        axes = plot(study)
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    figure: Figure = first.figure
    return figure


def log_study_plots(client: MlflowClient, run_id: str, study: optuna.Study) -> list[str]:
    """Optimisation history, parameter importances and the per-epoch (intermediate) values,
    which show where trials were pruned. A plot the study cannot make yet (importances need
    two complete trials) is skipped with a warning. Returns the artifact paths logged."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    logged = []
    plots: dict[str, Callable[..., Any]] = {
        "optimization_history.png": vis.plot_optimization_history,
        "param_importances.png": vis.plot_param_importances,
        "intermediate_values.png": vis.plot_intermediate_values,
    }
    for name, plot in plots.items():
        try:
            figure = _figure(plot, study)
        except Exception as exc:  # a plot is a nicety; the study's result stands without it
            _logger.warning("study plot %s skipped: %s", name, exc)
            continue
        client.log_figure(run_id, figure, f"plots/{name}")
        plt.close(figure)
        logged.append(f"plots/{name}")
    return logged
