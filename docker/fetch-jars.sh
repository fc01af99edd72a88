#!/usr/bin/env bash
# Cache the JVM jars the Spark factory loads (Delta Lake; see pipeline/jars.py for the list)
# once per machine, with the Maven client. Usage: docker/fetch-jars.sh [python]
# The cache is $SPARKTRAIN_JARS_DIR, else ~/.cache/sparktrain/jars; a second run with
# every jar cached starts no mvn and takes well under a second.
set -euo pipefail
PY="${1:-python3}"
cd "$(dirname "$0")/.."
exec "$PY" -m pipeline.jars fetch
