#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test libdiffsample: CMake, a C++ compiler, OpenMP,
# GoogleTest, pkg-config, nlohmann-json (problem files of the diffsample program), Python 3 (the static performance
# record's check, scripts/static_record.py) with NumPy (bench/posterior_table.py), and Debian's pthreads OpenBLAS
# (libopenblas-pthread-dev: the CPU gemm path of large mixtures; the library parallelises over its own thread pool,
# sets the BLAS to one thread and calls it from every pool thread at once, which this build supports and the serial
# one, libopenblas-serial-dev, does not: under the serial one the library serialises its calls). The CUDA toolkit (nvcc,
# cudart, cuRAND, cuBLAS, CCCL) must already be
# installed (/usr/local/cuda); this script adds it to PATH for the caller's session if nvcc is not found.
# Optional, not installed here (CI does not fuzz): clang (apt-get install clang) for scripts/fuzz.sh, and
# librsvg2-bin (rsvg-convert) to view the program's SVG plots as PNG.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v doxygen >/dev/null 2>&1 || need+=(doxygen)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import numpy' >/dev/null 2>&1 || need+=(python3-numpy)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
[ -f /usr/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
dpkg -s libopenblas-pthread-dev >/dev/null 2>&1 || need+=(libopenblas-pthread-dev)
dpkg -s libopenmpi-dev >/dev/null 2>&1 || need+=(libopenmpi-dev)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The python3 on PATH may not be Debian's (pyenv, a virtual environment): Debian's python3-numpy then went elsewhere,
# so NumPy comes from PyPI into the interpreter that scripts/test.sh runs.
if ! python3 -c 'import numpy' >/dev/null 2>&1; then
  echo "install-deps: installing numpy into $(command -v python3) (pip)" >&2
  python3 -m pip install -q numpy 2>/dev/null || python3 -m pip install -q --break-system-packages numpy
fi
# The Python package's build and tests (PyPI): nanobind, scikit-build-core, pytest and mypy (tests/python/test_stubs.py
# type-checks a usage file against the stub with it; about 70 MB installed). PyTorch only with
# DIFFSAMPLE_WITH_TORCH=1, below: examples/python/neural_prior.py uses it when present and NumPy otherwise.
if ! python3 -c 'import nanobind, scikit_build_core, pytest, mypy' >/dev/null 2>&1; then
  echo "install-deps: installing nanobind, scikit-build-core, pytest and mypy (pip)" >&2
  python3 -m pip install -q nanobind scikit-build-core pytest mypy 2>/dev/null \
    || python3 -m pip install -q --break-system-packages nanobind scikit-build-core pytest mypy
fi
# PyTorch, when DIFFSAMPLE_WITH_TORCH=1 (.ci/run sets it): the Python example's network and the pytest suite's
# PyTorch cases (CPU tensors; CUDA tensors where a GPU is). PyPI's Linux wheel brings its CUDA libraries as
# dependencies: about 5 GB installed, 3 to 6 minutes. Without it the example trains in NumPy and those cases skip.
if [ "${DIFFSAMPLE_WITH_TORCH:-0}" = 1 ] && ! python3 -c 'import torch' >/dev/null 2>&1; then
  echo "install-deps: installing torch into $(command -v python3) (pip, about 5 GB with its CUDA libraries)" >&2
  python3 -m pip install -q torch 2>/dev/null || python3 -m pip install -q --break-system-packages torch
fi
if ! command -v nvcc >/dev/null 2>&1; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    echo "install-deps: nvcc is at /usr/local/cuda/bin (add it to PATH)" >&2
  else
    echo "install-deps: the CUDA toolkit (nvcc) is required and was not found" >&2
    exit 1
  fi
fi
