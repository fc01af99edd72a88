"""The JVM artifacts the Spark factory puts on the classpath, and their per-machine cache.

One owner for "which jars": `ARTIFACTS` names each feature's Maven
coordinates. `make setup` runs `python -m pipeline.jars fetch` (through
docker/fetch-jars.sh), which copies the missing ones into the cache once per
machine with the Maven client (`mvn dependency:copy`, not transitive: every
compile-scope dependency a feature needs that Spark does not ship is listed
here). `build_spark` then loads every complete feature from the cache.

On a cluster the same coordinates go to `spark.jars.packages` (or the jars are
baked into the image); the cache is only for sessions this code starts itself.
Adding a feature is one more entry in `ARTIFACTS`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import EnvironmentSetupError

_logger = logging.getLogger(__name__)

CACHE_ENV = "SPARKTRAIN_JARS_DIR"
DELTA_VERSION = "3.3.2"  # the Delta Lake 3.x release built for Spark 3.5
# hadoop-aws must match the Hadoop client pyspark 3.5.8 ships (hadoop-client-api-3.3.4.jar);
# the SDK bundle is the version hadoop-aws 3.3.4's POM declares (about 280 MB).
HADOOP_VERSION = "3.3.4"
AWS_SDK_BUNDLE_VERSION = "1.12.262"


@dataclass(frozen=True)
class Artifact:
    group: str
    name: str
    version: str

    @property
    def coordinate(self) -> str:
        return f"{self.group}:{self.name}:{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.jar"


# Feature -> the jars it needs beyond Spark's own (pyspark 3.5 ships scala-library
# 2.12 and antlr4-runtime 4.9.3, delta-spark's other compile dependencies).
ARTIFACTS: dict[str, tuple[Artifact, ...]] = {
    "delta": (
        Artifact("io.delta", "delta-spark_2.12", DELTA_VERSION),
        Artifact("io.delta", "delta-storage", DELTA_VERSION),
    ),
    # s3a:// for Spark (delta-spark on S3). wildfly-openssl, hadoop-aws's only other
    # non-test dependency, is optional at runtime: s3a falls back to the JDK's TLS.
    "s3a": (
        Artifact("org.apache.hadoop", "hadoop-aws", HADOOP_VERSION),
        Artifact("com.amazonaws", "aws-java-sdk-bundle", AWS_SDK_BUNDLE_VERSION),
    ),
}


def cache_dir() -> Path:
    """`$SPARKTRAIN_JARS_DIR`, else ~/.cache/sparktrain/jars."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "sparktrain" / "jars"


def cached_jars(feature: str, directory: Path | None = None) -> list[str] | None:
    """The feature's jar paths when every one is cached, else None."""
    directory = directory or cache_dir()
    paths = [directory / a.file_name for a in ARTIFACTS[feature]]
    if all(p.is_file() and p.stat().st_size > 0 for p in paths):
        return [str(p) for p in paths]
    return None


def packages(feature: str) -> str:
    """The feature's coordinates as `spark.jars.packages` takes them (the cluster route)."""
    return ",".join(a.coordinate for a in ARTIFACTS[feature])


def fetch(directory: Path | None = None, mvn: str = "mvn") -> list[str]:
    """Copy every missing artifact into the cache; return the names fetched.

    Each jar lands in a temporary folder first and is moved in whole, so an
    interrupted fetch never leaves a truncated jar that looks cached.
    """
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    missing = [
        a for arts in ARTIFACTS.values() for a in arts if not (directory / a.file_name).is_file()
    ]
    if not missing:
        return []
    exe = shutil.which(mvn)
    if exe is None:
        raise EnvironmentSetupError(
            f"cannot fetch {[a.coordinate for a in missing]}: no Maven client ('{mvn}') on "
            "PATH. Install it (apt-get install maven) and re-run make setup, or copy the jars "
            f"into {directory} by hand"
        )
    fetched = []
    for artifact in missing:
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            cmd = [
                exe,
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact={artifact.coordinate}",
                f"-DoutputDirectory={tmp}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = Path(tmp) / artifact.file_name
            if proc.returncode != 0 or not got.is_file():
                raise EnvironmentSetupError(
                    f"mvn could not fetch {artifact.coordinate} (exit {proc.returncode}): "
                    f"{(proc.stdout + proc.stderr).strip()[-800:]}. Check that Maven Central is "
                    "reachable (a proxy goes in ~/.m2/settings.xml), then re-run make setup"
                )
            os.replace(got, directory / artifact.file_name)
        fetched.append(artifact.coordinate)
    return fetched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.jars")
    parser.add_argument("command", choices=["fetch", "list", "packages"])
    args = parser.parse_args(argv)
    out = sys.stdout
    if args.command == "fetch":
        start = time.monotonic()
        try:
            fetched = fetch()
        except EnvironmentSetupError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        took = time.monotonic() - start
        state = f"fetched {', '.join(fetched)}" if fetched else "all cached"
        out.write(f"jars in {cache_dir()}: {state} ({took:.1f} s)\n")
    elif args.command == "list":
        for feature in ARTIFACTS:
            out.write(f"{feature}: {cached_jars(feature) or 'missing'}\n")
    else:
        out.write(",".join(packages(f) for f in ARTIFACTS) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
