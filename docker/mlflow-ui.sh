#!/usr/bin/env bash
# `make ui`: an MLflow tracking server (UI + REST API) over the project's
# tracking store, in the foreground (Ctrl-C stops it). Prints the URL first.
#
# Settings (environment):
#   UI_HOST                   interface to bind (default 127.0.0.1: this machine only).
#                             Anything else exposes the server: turn on UI_APP=basic-auth.
#   UI_PORT                   port (default 5000)
#   UI_BACKEND_STORE_URI      tracking + registry store. Default: $MLFLOW_TRACKING_URI when it
#                             names a database, else sqlite:///<repo>/mlflow.db, the store the
#                             jobs write to by default. PostgreSQL works by configuration alone:
#                             UI_BACKEND_STORE_URI=postgresql://USER@HOST:5432/DB (run through the
#                             psycopg2 driver, postgresql+psycopg2://) with the password
#                             in PGPASSWORD (libpq reads it), never in the URI or a file.
#   UI_ARTIFACTS_DESTINATION  where the server stores artifacts it is sent over HTTP
#                             (default <repo>/mlruns, where the jobs' runs keep theirs)
#   UI_APP                    "basic-auth" turns on MLflow's basic-auth app; it then needs
#                             MLFLOW_AUTH_ADMIN_PASSWORD (first start) and
#                             MLFLOW_FLASK_SERVER_SECRET_KEY in the environment, and reads
#                             MLFLOW_AUTH_CONFIG_PATH (default conf/mlflow-auth.ini).
#   UI_WORKERS                server worker processes (default 1)
#   UI_ALLOWED_HOSTS          extra Host headers to accept, e.g. mlflow.example.com (MLflow's
#                             DNS-rebinding guard allows localhost and private IPs by default)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  default false here (see below)
#   PY                        the Python with mlflow (default <repo>/.venv/bin/python)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$repo/.venv/bin/python}
UI_HOST=${UI_HOST:-127.0.0.1}
UI_PORT=${UI_PORT:-5000}
UI_WORKERS=${UI_WORKERS:-1}
UI_APP=${UI_APP:-}

die() { echo "mlflow-ui: error: $*" >&2; exit 2; }

[ -x "$PY" ] || die "no Python at $PY: run 'make setup' first (or set PY=/path/to/python with mlflow)"

if [ -z "${UI_BACKEND_STORE_URI:-}" ]; then
  case "${MLFLOW_TRACKING_URI:-}" in
    sqlite:*|postgresql*|mysql*|mssql*) UI_BACKEND_STORE_URI=$MLFLOW_TRACKING_URI ;;
    http:*|https:*|databricks*)
      die "MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI is already a server; open it in a browser," \
          "or set UI_BACKEND_STORE_URI to the database behind it" ;;
    *) UI_BACKEND_STORE_URI="sqlite:///$repo/mlflow.db" ;;
  esac
fi
case "$UI_BACKEND_STORE_URI" in
  *://*:*@*) die "UI_BACKEND_STORE_URI carries a password: remove it from the URI and export" \
                 "it as PGPASSWORD (PostgreSQL) instead, so it never shows in 'ps' or logs" ;;
esac
# SQLAlchemy 2.1 maps a bare postgresql:// to the psycopg 3 driver; the project ships
# psycopg2 (psycopg2-binary), so name that driver explicitly.
case "$UI_BACKEND_STORE_URI" in
  postgresql://*|postgres://*)
    UI_BACKEND_STORE_URI="postgresql+psycopg2://${UI_BACKEND_STORE_URI#*://}" ;;
esac
UI_ARTIFACTS_DESTINATION=${UI_ARTIFACTS_DESTINATION:-$repo/mlruns}
case "$UI_ARTIFACTS_DESTINATION" in
  *://*) ;;
  *) mkdir -p "$UI_ARTIFACTS_DESTINATION" ;;
esac

args=(server --backend-store-uri "$UI_BACKEND_STORE_URI"
      --serve-artifacts --artifacts-destination "$UI_ARTIFACTS_DESTINATION"
      --host "$UI_HOST" --port "$UI_PORT" --workers "$UI_WORKERS")
[ -n "${UI_ALLOWED_HOSTS:-}" ] && args+=(--allowed-hosts "$UI_ALLOWED_HOSTS")
case "$UI_APP" in
  "") ;;
  basic-auth)
    [ -n "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ] \
      || die "UI_APP=basic-auth needs MLFLOW_FLASK_SERVER_SECRET_KEY (e.g. export" \
             "MLFLOW_FLASK_SERVER_SECRET_KEY=\$(openssl rand -hex 32))"
    # Users and permissions live where conf/mlflow-auth.ini says (no secret in it).
    export MLFLOW_AUTH_CONFIG_PATH=${MLFLOW_AUTH_CONFIG_PATH:-$repo/conf/mlflow-auth.ini}
    args+=(--app-name basic-auth) ;;
  *) die "UI_APP must be empty or basic-auth, got '$UI_APP'" ;;
esac

case "$UI_HOST" in
  127.*|localhost|::1) shown_host=$UI_HOST ;;
  *)
    shown_host=$(hostname)
    [ "$UI_APP" = basic-auth ] || echo "mlflow-ui: warning: UI_HOST=$UI_HOST exposes the server" \
      "beyond this machine without authentication; set UI_APP=basic-auth" >&2 ;;
esac

# MLflow 3 starts a pool of job-runner processes (GenAI judges and scorers) with the server, in
# their own sessions: about 2 GB of memory that training runs do not use, and that outlive a
# killed server. Off unless asked for.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

echo "MLflow UI: http://$shown_host:$UI_PORT  (store: $UI_BACKEND_STORE_URI," \
     "artifacts: $UI_ARTIFACTS_DESTINATION; Ctrl-C stops it)"
cd "$repo"
exec "$PY" -m mlflow "${args[@]}"
