"""Check `spark.master` before a JVM starts: a bad URL or an unreachable standalone master
otherwise ends in a Java traceback, or in a minute of retries ("LiveListenerBus is stopped")."""

from __future__ import annotations

import re
import socket

from pipeline.errors import ConfigError, EnvironmentSetupError

# local, local[4], local[*], local[4,2] (2 task retries), local-cluster[2,1,1024]
_LOCAL = re.compile(
    r"local(\[\s*(\d+|\*)\s*(,\s*\d+\s*)?\])?|local-cluster\[\s*\d+(\s*,\s*\d+){2}\s*\]"
)
_CLUSTER_SCHEMES = ("yarn", "k8s://", "mesos://")
_FIX = "e.g. spark.master=local[2], or spark.master=spark://127.0.0.1:7077 (make cluster-up)"


def check_master(master: str, timeout_s: float = 5.0) -> None:
    """Fail (exit 2) with the fix when `master` is not a master URL, or when no standalone
    master listed in it accepts a connection within `timeout_s`."""
    master = master.strip()
    if _LOCAL.fullmatch(master) or master.startswith(_CLUSTER_SCHEMES):
        return
    if not master.startswith("spark://"):
        raise ConfigError(
            f"spark.master={master!r} is not a Spark master URL: use local[N], "
            f"spark://host:port, yarn or k8s://https://host:port; {_FIX}"
        )
    failures = []
    for address in master[len("spark://") :].split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"spark.master={master!r}: '{address}' is not host:port; {_FIX}")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return
        except OSError as exc:
            failures.append(f"{address}: {exc.strerror or type(exc).__name__}")
    raise EnvironmentSetupError(
        f"no Spark master answers at {master} within {timeout_s:g} s ({'; '.join(failures)}). "
        f"Start the cluster (make cluster-up) or point spark.master at a running one; {_FIX}"
    )
