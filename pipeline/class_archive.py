"""A class-data-sharing archive of the classes a Spark job loads: a faster JVM start.

A local Spark job's JVM reads, parses and verifies some 20,000 classes from about 250
jars at every start, on the same cores that then run the job. The JDK's dynamic CDS
(JDK 13 and later) writes the classes one run loaded into an archive when that JVM
exits (`-XX:ArchiveClassesAtExit`); a later JVM started with `-XX:SharedArchiveFile`
maps them instead of loading them. On the 2-core machine this took a penguins ingest
job from about 24.5 s to 19 s and a minimal Spark job from 11 s to 7 s (README "Speed").

`make setup` builds the archive once per virtualenv (`python -m pipeline.class_archive`)
by running a penguins ingest and a Delta read in a scratch lake. `build_spark` then
uses it for the local sessions it starts, unless `spark.class_archive` is false or the
session brings its own jars (their classes would not be in it).

An archive is valid only for the JVM and class path it was made with, so its file name
is a digest of both (`archive_path`). The JVM checks again on its own: it ignores an
archive whose jars changed, with a one-line warning, and runs as before.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.jars import ARTIFACTS, cached_jars
from pipeline.java import java_binary

_logger = logging.getLogger(__name__)

DIR_ENV = "SPARKTRAIN_CLASS_ARCHIVE_DIR"
BUILD_TIMEOUT_S = 900
REPO = Path(__file__).resolve().parents[1]


def archive_dir() -> Path:
    """Next to the virtualenv's jars (pyspark's, in site-packages): `make clean` drops both."""
    return Path(os.environ.get(DIR_ENV) or Path(sys.prefix) / "share" / "sparktrain")


def _java() -> Path | None:
    found = java_binary()
    return Path(found).resolve() if found else None


def _spark_jars() -> list[Path]:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "jars").glob("*.jar"))


def session_jars() -> list[Path]:
    """The jars a local session's JVM loads: Spark's own and the cached features' (delta,
    s3a), as `pipeline.spark.build_spark` puts them on the class path."""
    extra = [Path(p) for feature in ARTIFACTS for p in cached_jars(feature) or []]
    return [*_spark_jars(), *extra]


def archive_path(java: Path | None = None, jars: list[Path] | None = None) -> Path | None:
    """Where the archive for this JVM and these jars lives (None without a Java runtime).

    The digest covers each jar's path, size and modification time and the JDK's own
    class image, the same facts the JVM checks before it maps an archive."""
    java = java or _java()
    if java is None:
        return None
    digest = hashlib.sha256()
    modules = java.parent.parent / "lib" / "modules"
    for path in [java, modules, *(session_jars() if jars is None else jars)]:
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode())
    return archive_dir() / f"spark-classes-{digest.hexdigest()[:16]}.jsa"


def usable_archive() -> Path | None:
    """The archive for this machine's JVM and jars, when `make setup` has built it."""
    path = archive_path()
    return path if path is not None and path.is_file() and path.stat().st_size > 0 else None


def _record(dump: Path, workdir: Path) -> None:
    """Run the classes a job needs through one JVM that writes them to `dump` at exit."""
    from pyspark import SparkContext

    from pipeline.config import Config, load_config
    from pipeline.ingest import run_ingest
    from pipeline.spark import build_spark

    cfg: Config = load_config(
        REPO / "conf" / "penguins.yaml",
        [f"lake.root={workdir / 'lake'}", "spark.class_archive=false"],
    )
    cfg.spark.conf["spark.driver.extraJavaOptions"] = f"-XX:ArchiveClassesAtExit={dump}"
    spark = build_spark(cfg.spark)
    run_ingest(cfg, spark)
    clean = cfg.table_path(cfg.data.table_name)
    spark.read.format("delta").load(clean).write.parquet(str(workdir / "copy"))
    gateway = SparkContext._gateway
    spark.stop()
    # The JVM writes the archive as it exits, which it does when its stdin closes.
    proc = getattr(gateway, "proc", None)
    if proc is not None and proc.stdin is not None:
        proc.stdin.close()
        proc.wait(timeout=BUILD_TIMEOUT_S)


def build(timeout_s: float = BUILD_TIMEOUT_S) -> Path | None:
    """Build this machine's archive unless it exists; the path, or None when it could not
    be built (the reason is logged; sessions then start without one)."""
    target = archive_path()
    if target is None:
        _logger.warning("no class archive: no Java runtime found")
        return None
    if target.is_file():
        _logger.info("class archive up to date: %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sparktrain-cds-") as tmp:
        dump = Path(tmp) / "classes.jsa"
        log = Path(tmp) / "build.log"
        with log.open("w") as out:
            proc = subprocess.run(
                [sys.executable, "-m", "pipeline.class_archive", "--record", str(dump)],
                cwd=tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
        if proc.returncode != 0 or not dump.is_file() or dump.stat().st_size == 0:
            _logger.warning(
                "no class archive: its recording run exited %s without one; Spark jobs start "
                "without it (slower). The run's log ends:\n%s",
                proc.returncode,
                log.read_text()[-3000:],
            )
            return None
        # Moved in whole: a session never maps a half-written archive.
        staged = target.with_suffix(".tmp")
        shutil.move(str(dump), staged)
        os.replace(staged, target)
    for old in target.parent.glob("spark-classes-*.jsa"):
        if old != target:  # made for jars or a JVM this virtualenv no longer has
            old.unlink(missing_ok=True)
    _logger.info("class archive built: %s (%.0f MB)", target, target.stat().st_size / 2**20)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline.class_archive", description=__doc__)
    parser.add_argument("--record", help=argparse.SUPPRESS)  # the recording run (internal)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.record:
        dump = Path(args.record)
        _record(dump, dump.parent)
        return 0
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
