#!/usr/bin/env bash
# Builds (once) and installs Horovod 0.28.1 into a Python environment that
# already has torch. Usage: build-horovod.sh PYTHON WHEELHOUSE
#
# The wheel is kept in WHEELHOUSE (by default ~/.cache/sparktrain/wheels/<variant>)
# so that later setups on the same machine reuse it instead of compiling again.
# Variant "cpu" = PyTorch + Gloo; "cuda" = PyTorch + Gloo + NCCL, chosen when
# nvcc is present and the installed torch is a CUDA build.
set -euo pipefail
PY=${1:?usage: build-horovod.sh PYTHON [WHEELHOUSE]}
here=$(cd "$(dirname "$0")" && pwd)
HVD_VERSION=0.28.1

if "$PY" -c "import horovod.torch" 2>/dev/null \
   && "$PY" -c "import horovod, sys; sys.exit(horovod.__version__ != '$HVD_VERSION')"; then
  echo "horovod $HVD_VERSION already installed"; exit 0
fi

variant=cpu
if command -v nvcc >/dev/null 2>&1 && "$PY" -c "import torch, sys; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
  variant=cuda
fi
WHEELHOUSE=${2:-${SPARKTRAIN_WHEELHOUSE:-$HOME/.cache/sparktrain/wheels}/$variant}
mkdir -p "$WHEELHOUSE"

wheel=$(ls "$WHEELHOUSE"/horovod-$HVD_VERSION-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  echo "building horovod $HVD_VERSION ($variant) - this takes 3-8 minutes once per machine"
  cmake_bin=$(command -v cmake || true)
  if [ -z "$cmake_bin" ]; then
    echo "error: cmake not found. Install it (apt-get install cmake) and run 'make setup' again." >&2
    exit 1
  fi
  export CXX="$here/cxx17.sh" SPARKTRAIN_REAL_CXX="${CXX_REAL:-g++}"
  export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
  export HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
  # CMake 4.x refuses Gloo's old cmake_minimum_required; this keeps it working.
  export CMAKE_POLICY_VERSION_MINIMUM=3.5
  export MAKEFLAGS="-j$(nproc)"
  if [ "$variant" = cuda ]; then
    export HOROVOD_GPU_OPERATIONS=NCCL
    # nvcc gets the same -std rewrite (CUDA 13's headers need C++17).
    real_nvcc=$(readlink -f "$(command -v nvcc)")
    export CUDACXX="$here/nvcc17.sh" SPARKTRAIN_REAL_NVCC="$real_nvcc"
    # The toolkit is no longer beside CMAKE_CUDA_COMPILER (the wrapper), so name it.
    cuda_home=${HOROVOD_CUDA_HOME:-$(dirname "$(dirname "$real_nvcc")")}
    export HOROVOD_CUDA_HOME="$cuda_home" CUDAToolkit_ROOT="$cuda_home"
    if [ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_INCLUDE:-}" ]; then
      # No NCCL named: use the one pip-installed CUDA torch brings (nvidia-nccl-cu*),
      # which ships only libnccl.so.2, so give CMake the unversioned name it looks for.
      nccl=$("$PY" -c "import nvidia.nccl as n; print(list(n.__path__)[0])" 2>/dev/null || true)
      if [ -n "$nccl" ] && [ -f "$nccl/include/nccl.h" ]; then
        shim=$(mktemp -d)
        mkdir -p "$shim/lib" && ln -s "$nccl/include" "$shim/include"
        ln -s "$nccl/lib/libnccl.so.2" "$shim/lib/libnccl.so"
        export HOROVOD_NCCL_HOME="$shim" HOROVOD_NCCL_LINK=SHARED
        echo "using torch's NCCL from $nccl"
      fi
    fi
  fi
  "$PY" -m pip wheel --no-build-isolation --no-deps --no-cache-dir \
        -w "$WHEELHOUSE" "horovod==$HVD_VERSION"
  wheel=$(ls "$WHEELHOUSE"/horovod-$HVD_VERSION-*.whl | head -1)
fi
"$PY" -m pip install --no-deps "$wheel"
"$PY" -m pip install "cloudpickle>=2.2" "psutil>=5.9" "pyyaml>=6" "packaging"
echo "installed $wheel"
