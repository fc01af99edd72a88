"""Operations helpers: local services (MLflow server, PostgreSQL) and their processes.

The user-facing launchers are shell scripts in docker/ (`make ui`, `make cluster-up`);
this package holds the Python side that tests, the demo and notebooks use to start,
reach and stop those services the same way.
"""
