#!/usr/bin/env bash
# Builds and installs the diffsample Python package against the library already built in build/ (no CUDA
# compilation: only the extension compiles, about 40 s of CPU), for scripts/test.sh and for development:
#   bash scripts/py-dev.sh [build-dir]
# The extension finds that library through an absolute RUNPATH, so the build directory must stay where it is;
# `pip install .` alone builds the library too and ships it in the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(cd "${1:-build}" && pwd)
args=(-q --no-build-isolation --no-deps . --config-settings=cmake.define.DIFFSAMPLE_PYTHON_PREBUILT="$build"
      --config-settings=build-dir=build/python/prebuilt)
# DIFFSAMPLE_PY_BUILD_TYPE: another CMake build type than pyproject's Release (RelWithDebInfo: a debugger's backtrace
# names the extension's functions and lines).
[ -z "${DIFFSAMPLE_PY_BUILD_TYPE:-}" ] || args+=(--config-settings=cmake.build-type="$DIFFSAMPLE_PY_BUILD_TYPE")
[ -z "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ] || args+=(--config-settings=cmake.define.CMAKE_CXX_COMPILER_LAUNCHER="$CMAKE_CXX_COMPILER_LAUNCHER")
python3 -m pip install "${args[@]}" 2>/dev/null || python3 -m pip install --break-system-packages "${args[@]}"
