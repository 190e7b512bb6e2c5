#!/usr/bin/env bash
# Builds (if needed) and runs the diffsample program: with no arguments, the embedded MALA demo. Arguments are
# passed through (e.g. `scripts/demo.sh --executor cpu --chains 4096`, `scripts/demo.sh info`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh
cmake --preset default >/dev/null
cmake --build --preset default --target diffsample_cli >/dev/null
exec ./build/diffsample "$@"
