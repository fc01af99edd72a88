"""The user's own code (model.module, model.loss): where it lives, and how ranks get it.

The package that holds the class travels twice: to the ranks, zipped inside
their RankSpec (Horovod starts each rank as a process of its own, which does
not see files added to the Spark workers' path), and into the logged model
(MLflow code_paths), so a process without the package on its path still loads
`models:/<name>@champion`. A package installed on every node is used as it is.
"""

from __future__ import annotations

import atexit
import importlib.util
import io
import logging
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ModelConfig
from pipeline.contract.specs import user_code_path

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodeArchive:
    """One top-level package (or single module) of the user's, zipped."""

    name: str  # its import name
    data: bytes


def user_code_paths(model: ModelConfig) -> list[Path]:
    """The top-level packages (or single modules) of model.module and model.loss."""
    refs = [ref for ref in (model.module, model.loss) if ref]
    paths = {p for p in (user_code_path(ref) for ref in refs) if p is not None}
    # Installed libraries (model.loss=torch.nn.functional:l1_loss) are the environment's job.
    return sorted(p for p in paths if not {"site-packages", "dist-packages"} & set(p.parts))


def pack(paths: list[Path]) -> list[CodeArchive]:
    """Each package's source files (no bytecode) as a zip rooted at its parent directory."""
    archives = []
    for path in paths:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            files = [path] if path.is_file() else sorted(path.rglob("*"))
            for file in files:
                if file.is_file() and "__pycache__" not in file.parts:
                    archive.write(file, str(file.relative_to(path.parent)))
        archives.append(CodeArchive(name=path.stem, data=buffer.getvalue()))
    return archives


def unpack(archives: list[CodeArchive]) -> None:
    """Put the user's packages on this process's path, unless they are importable already."""
    for code in archives:
        if importlib.util.find_spec(code.name) is not None:
            continue
        target = tempfile.mkdtemp(prefix=f"sparktrain-user-code-{code.name}-")
        with zipfile.ZipFile(io.BytesIO(code.data)) as archive:
            archive.extractall(target)
        sys.path.insert(0, target)
        # A rank is a process of its own: the copy goes with it.
        atexit.register(shutil.rmtree, target, ignore_errors=True)
        _logger.info("user package %s unpacked to %s", code.name, target)
