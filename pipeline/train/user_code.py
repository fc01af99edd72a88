"""The user's own code (model.module, model.loss): where it lives, shipped to executors.

The package that holds the class travels twice: to the Spark executors that
run the ranks (`SparkContext.addPyFile`, as `spark-submit --py-files` would),
and into the logged model (MLflow code_paths), so a process without the
package on its path still loads `models:/<name>@champion`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from pyspark.sql import SparkSession

from pipeline.config import ModelConfig
from pipeline.contract.specs import user_code_path

_logger = logging.getLogger(__name__)


def user_code_paths(model: ModelConfig) -> list[Path]:
    """The top-level packages (or single modules) of model.module and model.loss."""
    refs = [ref for ref in (model.module, model.loss) if ref]
    if model.family != "custom":
        refs = [ref for ref in refs if ref != model.module]
    paths = {p for p in (user_code_path(ref) for ref in refs) if p is not None}
    # Installed libraries (model.loss=torch.nn.functional:l1_loss) are the environment's job.
    return sorted(p for p in paths if not {"site-packages", "dist-packages"} & set(p.parts))


def ship_to_executors(spark: SparkSession, paths: list[Path]) -> None:
    """Each package as a zip on the executors' Python path (a single module as itself)."""
    for path in paths:
        if path.is_file():
            spark.sparkContext.addPyFile(str(path))
            continue
        staging = Path(tempfile.mkdtemp(prefix="sparktrain-user-code-"))
        archive = shutil.make_archive(
            str(staging / path.name),
            "zip",
            root_dir=path.parent,
            base_dir=path.name,
        )
        spark.sparkContext.addPyFile(archive)
        _logger.info("shipped %s to the executors as %s", path, archive)
