#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and N one-core workers,
# started with the spark-daemon.sh that ships inside the pyspark wheel.
#
#   docker/cluster.sh up       # start (idempotent), wait until every worker is ALIVE
#   docker/cluster.sh down     # stop workers then master (idempotent), wait for the JVMs to exit
#   docker/cluster.sh status   # exit 0 and print the master URL when every worker is ALIVE
#
# The pyspark wheel has no sbin/start-master.sh or start-worker.sh (only
# spark-daemon.sh and the history-server scripts), so this script calls
# spark-daemon.sh with the Master and Worker classes, as those scripts would.
#
# Settings (environment):
#   CLUSTER_DIR               pid files, logs, worker dirs     (default: <repo>/.cluster)
#   CLUSTER_HOST              address every daemon binds to    (default: 127.0.0.1)
#   CLUSTER_MASTER_PORT       master RPC port                  (default: 7077)
#   CLUSTER_MASTER_UI_PORT    master web UI/JSON port          (default: 8080)
#   CLUSTER_WORKER_UI_PORT    first worker's web UI port, +1 per worker (default: 8081)
#   CLUSTER_WORKERS           number of workers                (default: 2)
#   CLUSTER_WORKER_CORES      cores per worker                 (default: 1, so that two
#                             Horovod ranks land on two different workers)
#   CLUSTER_WORKER_MEMORY     memory per worker                (default: 2g)
#   CLUSTER_START_TIMEOUT     seconds to wait for the workers  (default: 90)
#   CLUSTER_WORKER_GPUS       GPUs per worker (default: 0). With N > 0, worker i advertises
#                             GPUs (i-1)*N .. i*N-1 through docker/spark-gpu-discovery.sh, so
#                             executors can ask for spark.executor.resource.gpu.amount and each
#                             task (Horovod rank) for spark.task.resource.gpu.amount.
#   PY                        the Python whose pyspark is used (default: <repo>/.venv/bin/python)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$repo/.venv/bin/python}
CLUSTER_DIR=${CLUSTER_DIR:-$repo/.cluster}
CLUSTER_HOST=${CLUSTER_HOST:-127.0.0.1}
CLUSTER_MASTER_PORT=${CLUSTER_MASTER_PORT:-7077}
CLUSTER_MASTER_UI_PORT=${CLUSTER_MASTER_UI_PORT:-8080}
CLUSTER_WORKER_UI_PORT=${CLUSTER_WORKER_UI_PORT:-8081}
CLUSTER_WORKERS=${CLUSTER_WORKERS:-2}
CLUSTER_WORKER_CORES=${CLUSTER_WORKER_CORES:-1}
CLUSTER_WORKER_MEMORY=${CLUSTER_WORKER_MEMORY:-2g}
CLUSTER_START_TIMEOUT=${CLUSTER_START_TIMEOUT:-90}
CLUSTER_WORKER_GPUS=${CLUSTER_WORKER_GPUS:-0}
user_worker_opts=${SPARK_WORKER_OPTS:-}

MASTER_CLASS=org.apache.spark.deploy.master.Master
WORKER_CLASS=org.apache.spark.deploy.worker.Worker
master_url="spark://$CLUSTER_HOST:$CLUSTER_MASTER_PORT"
master_ui="http://$CLUSTER_HOST:$CLUSTER_MASTER_UI_PORT"

die() { echo "cluster: error: $*" >&2; exit 1; }

setup_env() {
  [ -x "$PY" ] || die "no Python at $PY: run 'make setup' first (or set PY=/path/to/python with pyspark)"
  command -v java >/dev/null 2>&1 || [ -n "${JAVA_HOME:-}" ] \
    || die "no Java runtime: Spark 3.5 needs Java 8/11/17 (apt-get install openjdk-17-jre-headless)"
  SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))') \
    || die "$PY cannot import pyspark: run 'make setup' first"
  [ -x "$SPARK_HOME/sbin/spark-daemon.sh" ] || [ -f "$SPARK_HOME/sbin/spark-daemon.sh" ] \
    || die "$SPARK_HOME/sbin/spark-daemon.sh is missing: reinstall pyspark (make setup)"
  export SPARK_HOME
  export SPARK_PID_DIR="$CLUSTER_DIR/pids" SPARK_LOG_DIR="$CLUSTER_DIR/logs"
  export SPARK_WORKER_DIR="$CLUSTER_DIR/work" SPARK_IDENT_STRING=sparktrain
  # Daemons and the executors they start bind to loopback only, never to a public interface.
  export SPARK_LOCAL_IP="$CLUSTER_HOST"
  # Executors' Python must be the one that has torch, Horovod and the project.
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"
  mkdir -p "$SPARK_PID_DIR" "$SPARK_LOG_DIR" "$SPARK_WORKER_DIR"
}

daemon() { bash "$SPARK_HOME/sbin/spark-daemon.sh" "$@"; }
is_running() { daemon status "$1" "$2" >/dev/null 2>&1; }
pid_file() { echo "$SPARK_PID_DIR/spark-$SPARK_IDENT_STRING-$1-$2.pid"; }

alive_workers() {
  # The master's JSON endpoint counts registered workers in state ALIVE.
  curl -fsS --max-time 5 "$master_ui/json/" 2>/dev/null \
    | "$PY" -c 'import json, sys; print(json.load(sys.stdin).get("aliveworkers", 0))' 2>/dev/null \
    || echo 0
}

start_daemon() {  # class instance args...
  local cls=$1 inst=$2; shift 2
  if is_running "$cls" "$inst"; then
    echo "cluster: ${cls##*.} $inst already running (pid $(cat "$(pid_file "$cls" "$inst")"))"
    return 0
  fi
  daemon start "$cls" "$inst" "$@" >/dev/null
  is_running "$cls" "$inst" || {
    tail -20 "$SPARK_LOG_DIR"/spark-"$SPARK_IDENT_STRING"-"$cls"-"$inst"-*.out >&2 || true
    die "${cls##*.} $inst did not start (log above, in $SPARK_LOG_DIR); is the port taken?"
  }
  echo "cluster: started ${cls##*.} $inst (pid $(cat "$(pid_file "$cls" "$inst")"))"
}

stop_daemon() {  # class instance
  local cls=$1 inst=$2 pidf pid
  pidf=$(pid_file "$cls" "$inst")
  if ! is_running "$cls" "$inst"; then
    rm -f "$pidf"
    return 0
  fi
  pid=$(cat "$pidf")
  daemon stop "$cls" "$inst" >/dev/null
  # spark-daemon.sh only sends SIGTERM; wait, so that `down` returns with the ports free.
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { echo "cluster: stopped ${cls##*.} $inst (pid $pid)"; return 0; }
    sleep 0.5
  done
  kill -9 "$pid" 2>/dev/null || true
  echo "cluster: killed ${cls##*.} $inst (pid $pid) after 30 s"
}

gpu_env() {  # worker-instance: its own slice of the host's GPUs, or none
  local i=$1 first ids
  unset SPARKTRAIN_GPU_ADDRESSES
  export SPARK_WORKER_OPTS=$user_worker_opts
  [ "$CLUSTER_WORKER_GPUS" -gt 0 ] || return 0
  first=$(( (i - 1) * CLUSTER_WORKER_GPUS ))
  ids=$(seq -s, "$first" $((first + CLUSTER_WORKER_GPUS - 1)))
  export SPARKTRAIN_GPU_ADDRESSES=$ids
  export SPARK_WORKER_OPTS="$user_worker_opts -Dspark.worker.resource.gpu.amount=$CLUSTER_WORKER_GPUS \
-Dspark.worker.resource.gpu.discoveryScript=$repo/docker/spark-gpu-discovery.sh"
}

cmd_up() {
  setup_env
  start_daemon "$MASTER_CLASS" 1 --host "$CLUSTER_HOST" --port "$CLUSTER_MASTER_PORT" \
    --webui-port "$CLUSTER_MASTER_UI_PORT"
  local i
  for i in $(seq 1 "$CLUSTER_WORKERS"); do
    gpu_env "$i"
    start_daemon "$WORKER_CLASS" "$i" --host "$CLUSTER_HOST" \
      --webui-port $((CLUSTER_WORKER_UI_PORT + i - 1)) \
      --cores "$CLUSTER_WORKER_CORES" --memory "$CLUSTER_WORKER_MEMORY" \
      --work-dir "$SPARK_WORKER_DIR/worker-$i" "$master_url"
  done
  local deadline=$((SECONDS + CLUSTER_START_TIMEOUT)) alive=0
  while [ $SECONDS -lt $deadline ]; do
    alive=$(alive_workers)
    [ "$alive" -ge "$CLUSTER_WORKERS" ] && break
    sleep 1
  done
  [ "$alive" -ge "$CLUSTER_WORKERS" ] \
    || die "only $alive of $CLUSTER_WORKERS workers registered with $master_url within" \
           "${CLUSTER_START_TIMEOUT}s; see the logs in $SPARK_LOG_DIR"
  echo "cluster: up: master $master_url, web UI $master_ui, $alive workers x" \
       "$CLUSTER_WORKER_CORES core(s), logs in $SPARK_LOG_DIR"
  echo "cluster: submit with: $repo/.venv/bin/spark-submit --master $master_url" \
       "--conf spark.executor.cores=$CLUSTER_WORKER_CORES jobs/train.py --config conf/<x>.yaml"
}

cmd_down() {
  setup_env
  local i
  # Workers first, highest instance too even if CLUSTER_WORKERS shrank since `up`.
  for pidf in "$SPARK_PID_DIR"/spark-"$SPARK_IDENT_STRING"-"$WORKER_CLASS"-*.pid; do
    [ -e "$pidf" ] || continue
    i=${pidf##*-}; i=${i%.pid}
    stop_daemon "$WORKER_CLASS" "$i"
  done
  stop_daemon "$MASTER_CLASS" 1
  echo "cluster: down"
}

cmd_status() {
  setup_env
  local alive
  is_running "$MASTER_CLASS" 1 || { echo "cluster: master not running"; return 3; }
  alive=$(alive_workers)
  echo "cluster: master $master_url (web UI $master_ui), $alive of $CLUSTER_WORKERS workers alive"
  [ "$alive" -ge "$CLUSTER_WORKERS" ]
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status (settings: see the header of this script)" >&2; exit 2 ;;
esac
