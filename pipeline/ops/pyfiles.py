"""The archive that ships the project's own code to a cluster with `spark-submit --py-files`.

Only `pipeline/` and `models/` travel this way: they are pure Python. torch, Horovod,
Petastorm, pyarrow, deltalake and mlflow have native parts and must already be
installed on every node (the Docker image, a cluster init script, or a packed
virtualenv shipped with `--archives`).

    python -m pipeline.ops.pyfiles dist/sparktrain-pyfiles.zip
"""

from __future__ import annotations

import logging
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import EnvironmentSetupError

_logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "models")
# Source and the typing marker; never bytecode, which is tied to one Python build.
SHIPPED_SUFFIXES = (".py", ".typed")


def build_py_files(dest: Path, root: Path = REPO, packages: Sequence[str] = PACKAGES) -> Path:
    """Zip each package's source under `root` into `dest`, with paths relative to `root`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for package in packages:
            base = root / package
            if not (base / "__init__.py").is_file():
                raise EnvironmentSetupError(
                    f"{base} is not a Python package (no __init__.py): build the --py-files "
                    "archive from a source checkout of sparktrain"
                )
            for path in sorted(base.rglob("*")):
                if path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts:
                    archive.write(path, path.relative_to(root).as_posix())
                    count += 1
    _logger.info("wrote %s (%d files from %s)", dest, count, ", ".join(packages))
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.logs import setup_logging

    setup_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    dest = Path(args[0]) if args else REPO / "dist" / "sparktrain-pyfiles.zip"
    build_py_files(dest.absolute())
    return 0


if __name__ == "__main__":
    sys.exit(main())
