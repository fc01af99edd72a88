#!/usr/bin/env bash
# Spark GPU resource discovery script: prints the GPUs of this host as
#   {"name":"gpu","addresses":["0","1"]}
# which is the ResourceInformation JSON Spark expects. Point a worker (standalone)
# or executor (YARN/Kubernetes) at it:
#   spark.worker.resource.gpu.discoveryScript=/app/docker/spark-gpu-discovery.sh
#   spark.executor.resource.gpu.discoveryScript=/app/docker/spark-gpu-discovery.sh
# Exits non-zero, with the reason on stderr, when no GPU can be listed, so the
# worker fails at start instead of advertising GPUs it does not have.
#
# SPARKTRAIN_GPU_ADDRESSES=0,1 restricts the answer to those GPUs (they must exist):
# docker/cluster.sh sets it per worker when several workers share one host, so
# that no two workers claim the same GPU.
set -euo pipefail
smi=${NVIDIA_SMI:-nvidia-smi}
if ! command -v "$smi" >/dev/null 2>&1; then
  echo "spark-gpu-discovery: '$smi' not found: install the NVIDIA driver (it ships nvidia-smi)" \
       "or do not request spark.*.resource.gpu.amount on this host" >&2
  exit 1
fi
if ! indexes=$("$smi" --query-gpu=index --format=csv,noheader); then
  echo "spark-gpu-discovery: '$smi --query-gpu=index' failed (driver not loaded?)" >&2
  exit 1
fi
addresses=""
while IFS= read -r line; do
  idx=${line//[[:space:]]/}
  [ -z "$idx" ] && continue
  case "$idx" in
    *[!0-9]*) echo "spark-gpu-discovery: unexpected GPU index '$idx' from $smi" >&2; exit 1 ;;
  esac
  addresses+="${addresses:+,}\"$idx\""
done <<< "$indexes"
if [ -n "${SPARKTRAIN_GPU_ADDRESSES:-}" ]; then
  wanted=""
  IFS=',' read -r -a asked <<< "$SPARKTRAIN_GPU_ADDRESSES"
  for idx in "${asked[@]}"; do
    idx=${idx//[[:space:]]/}
    [ -z "$idx" ] && continue
    case ",$addresses," in
      *",\"$idx\","*) wanted+="${wanted:+,}\"$idx\"" ;;
      *) echo "spark-gpu-discovery: SPARKTRAIN_GPU_ADDRESSES asks for GPU $idx, but $smi lists" \
              "only [$addresses]" >&2; exit 1 ;;
    esac
  done
  addresses=$wanted
fi
if [ -z "$addresses" ]; then
  echo "spark-gpu-discovery: $smi lists no GPU on this host" >&2
  exit 1
fi
printf '{"name":"gpu","addresses":[%s]}\n' "$addresses"
