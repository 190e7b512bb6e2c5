#!/usr/bin/env bash
# Lays out what scripts/gpu-check.sh --prebuilt needs from a finished build (default build/): the shared library,
# the test and benchmark programs and the commit, in gpu-bundle/ (git-ignored), to carry to a GPU machine that
# cannot build (no GoogleTest there, no package downloads). Prints the bundle's size.
# Usage: scripts/gpu-bundle.sh [build dir] [bundle dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bundle=${2:-gpu-bundle}
[ -f "$build/libdiffsample.so" ] || { echo "gpu-bundle: no $build/libdiffsample.so (build first)" >&2; exit 1; }
rm -rf "$bundle"
mkdir -p "$bundle/tests" "$bundle/bench"
cp -P "$build"/libdiffsample.so* "$bundle/"
for t in "$build"/tests/test_*; do [ -f "$t" ] && [ -x "$t" ] && cp "$t" "$bundle/tests/"; done
for b in "$build"/bench/bench_*; do [ -f "$b" ] && [ -x "$b" ] && cp "$b" "$bundle/bench/"; done
git rev-parse HEAD >"$bundle/COMMIT" 2>/dev/null || echo unknown >"$bundle/COMMIT"
# Debug sections are not needed to run; strip them to stay inside a carried tree's size limit.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$bundle"/libdiffsample.so.* "$bundle"/tests/* "$bundle"/bench/* 2>/dev/null || true
fi
du -sh "$bundle"
