#!/usr/bin/env bash
# Compiler wrapper for building Horovod 0.28.1 against torch >= 2.1 (CXX, and
# CUDACXX with SPARKTRAIN_REAL_CXX=nvcc for the CUDA kernels).
# - Horovod's CMake asks for C++11/14, but torch's headers (and CUDA 13's CCCL)
#   need C++17 ("You need C++17 to compile PyTorch"). The upstream fix (horovod
#   PR #3998) was merged after 0.28.1 and never released, so we rewrite the flag.
# - gcc >= 13 no longer includes <string>/<stdexcept> transitively, and 0.28.1's
#   group_table.h and common.h rely on that; host compiles get them up front.
args=()
compiling=0
for a in "$@"; do
  case "$a" in
    -std=c++11|-std=c++14) args+=("-std=c++17") ;;
    -std=gnu++11|-std=gnu++14) args+=("-std=gnu++17") ;;
    -c) compiling=1; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
real=${SPARKTRAIN_REAL_CXX:-g++}
if [ "$compiling" = 1 ] && [ "$(basename "$real")" != nvcc ]; then
  args=(-include string -include stdexcept "${args[@]}")
fi
exec "$real" "${args[@]}"
