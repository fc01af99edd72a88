"""The Java runtime a local Spark session starts: `$JAVA_HOME/bin/java`, else `java` on PATH,
the same lookup as Spark's own launcher scripts."""

from __future__ import annotations

import os
import shutil


def java_binary() -> str | None:
    """The java executable a local session would run, or None when there is none."""
    java_home = os.environ.get("JAVA_HOME")
    return os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
