#!/usr/bin/env bash
# Configures, builds everything (library, tests, benchmarks, program) and runs the test suite.
# GPU tests skip cleanly on machines without a GPU. Then the Python package (built against that library) and its
# pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh
cmake --workflow --preset default
# The Python package against the library just built (seconds: only the extension compiles), then its tests.
bash scripts/py-dev.sh build
python3 -m pytest -q tests/python
