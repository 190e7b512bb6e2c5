#!/usr/bin/env bash
# Builds (if needed) and runs the diffsample program: with no arguments, the embedded MALA demo. Arguments are
# passed through (e.g. `scripts/demo.sh --executor cpu --chains 4096`, `scripts/demo.sh info`).
# The first run compiles the library's CUDA kernels (several minutes on 2 cores): it says so on stderr and shows the
# build's progress there; later runs rebuild quietly what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh
if [ ! -x build/diffsample ]; then
  echo "demo.sh: first run: building libdiffsample and the diffsample program (several minutes; progress below)" >&2
  cmake --preset default >&2
  cmake --build --preset default --target diffsample_cli >&2
  echo "demo.sh: built; running the demo" >&2
else
  cmake --preset default >/dev/null
  cmake --build --preset default --target diffsample_cli >/dev/null
fi
exec ./build/diffsample "$@"
