#!/usr/bin/env bash
# CUDACXX for building Horovod 0.28.1: nvcc with the C++17 rewrite of cxx17.sh.
SPARKTRAIN_REAL_CXX=${SPARKTRAIN_REAL_NVCC:-nvcc} exec "$(dirname "$0")/cxx17.sh" "$@"
