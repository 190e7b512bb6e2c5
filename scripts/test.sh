#!/usr/bin/env bash
# Configures, builds everything (library, tests, benchmarks, program) and runs the test suite.
# GPU tests skip cleanly on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh
cmake --workflow --preset default
