#!/usr/bin/env bash
# Fails setup early, with the fix, when the disk cannot hold it: a full disk otherwise
# surfaces minutes later as pip's "[Errno 28] No space left on device".
# Measured on a fresh machine: the virtualenv grows to 4.8 GB (PyPI's CUDA build of torch)
# while pip unpacks through $TMPDIR (2.6 GB at its peak); the whole setup took 6.9 GB.
# usage: docker/check-disk.sh VENV_DIR [GB_NEEDED]
set -euo pipefail
venv_dir=$1
need_gb=${2:-8}
parent=$(dirname "$(realpath -m "$venv_dir")")
tmp=${TMPDIR:-/tmp}
free_gb() { df -Pk "$1" | awk 'NR == 2 { print int($4 / 1048576) }'; }
if [ "$(df -P "$parent" | awk 'NR == 2 { print $1 }')" = "$(df -P "$tmp" | awk 'NR == 2 { print $1 }')" ]; then
  places=("$parent")
else
  places=("$parent" "$tmp")
fi
for place in "${places[@]}"; do
  have=$(free_gb "$place")
  if [ "$have" -lt "$need_gb" ]; then
    echo "error: ${have} GB free on the disk of $place; setup needs about ${need_gb} GB" \
         "(torch's PyPI build makes a 4.8 GB virtualenv and unpacks through ${tmp})." \
         "Free space there, or put VENV=... and TMPDIR=... on a larger disk" >&2
    exit 1
  fi
done
