#!/usr/bin/env bash
# Compiler wrapper for building Horovod 0.28.1 against torch >= 2.1.
# Horovod's CMake asks for C++14, but torch's headers need C++17
# ("You need C++17 to compile PyTorch"). The upstream fix (horovod PR #3998)
# was merged after 0.28.1 and never released, so we rewrite the flag here.
args=()
for a in "$@"; do
  case "$a" in
    -std=c++11|-std=c++14) args+=("-std=c++17") ;;
    -std=gnu++11|-std=gnu++14) args+=("-std=gnu++17") ;;
    *) args+=("$a") ;;
  esac
done
exec "${SPARKTRAIN_REAL_CXX:-g++}" "${args[@]}"
