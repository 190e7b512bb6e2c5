#!/usr/bin/env bash
# Lays out what scripts/gpu-check.sh --prebuilt needs from a finished build (default build/): the shared library,
# the test and benchmark programs, the commit, and in lib/ every shared library they load from this machine's system
# folders that a bare GPU machine may lack (OpenBLAS and its Fortran runtime, OpenMP's runtime), in gpu-bundle/
# (git-ignored), then packs it as gpu-bundle.tar.xz (git-ignored too) to carry to a GPU machine that cannot build
# (no GoogleTest there, no package downloads). Not bundled: the C library and the compiler's C++ runtime (a newer one
# is there) and the CUDA libraries (runtime, cuBLAS, cuRAND: the machine's CUDA toolkit has them; gpu-check.sh puts
# its lib64 on the library path). Prints the bundle's and the archive's size: what travels must stay under the carry limit (64 MiB
# with the repository).
# Usage: scripts/gpu-bundle.sh [build dir] [bundle dir]
#   then on the GPU machine: bash scripts/gpu-check.sh --prebuilt gpu-bundle.tar.xz --out "$OUT"
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bundle=${2:-gpu-bundle}
[ -f "$build/libdiffsample.so" ] || { echo "gpu-bundle: no $build/libdiffsample.so (build first)" >&2; exit 1; }
rm -rf "$bundle" "$bundle.tar.xz"
mkdir -p "$bundle/tests" "$bundle/bench" "$bundle/lib"
# The library the build links (its soname link and the file it points to), not older versions left in the folder.
real=$(readlink -f "$build/libdiffsample.so")
soname=$(objdump -p "$real" 2>/dev/null | awk '$1 == "SONAME" {print $2}')
cp "$real" "$bundle/"
soname=${soname:-$(basename "$real" | sed 's/\.[0-9]*$//')}  # libdiffsample.so.0.4.0 -> libdiffsample.so.0.4
ln -s "$(basename "$real")" "$bundle/$soname"
ln -sf "$soname" "$bundle/libdiffsample.so"
for t in "$build"/tests/test_*; do [ -f "$t" ] && [ -x "$t" ] && cp "$t" "$bundle/tests/"; done
for b in "$build"/bench/bench_*; do [ -f "$b" ] && [ -x "$b" ] && cp "$b" "$bundle/bench/"; done
git rev-parse HEAD >"$bundle/COMMIT" 2>/dev/null || echo unknown >"$bundle/COMMIT"
# Libraries resolved from the system's folders, less those every Linux with a CUDA toolkit has.
for f in "$bundle"/libdiffsample.so.* "$bundle"/tests/* "$bundle"/bench/*; do ldd "$f" 2>/dev/null || true; done |
  awk '$2 == "=>" && $3 ~ /^\// && $3 !~ /^\/usr\/local\/cuda/ {print $1, $3}' | sort -u |
  while read -r name path; do
    case "$name" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libgcc_s.so.*|libstdc++.so.*) continue ;;
      libcu*|libnv*|libdiffsample.so.*) continue ;;  # the GPU machine's CUDA toolkit has the CUDA libraries
    esac
    cp -L "$path" "$bundle/lib/$name"
  done
# Debug sections are not needed to run; strip them to stay inside a carried tree's size limit.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$bundle"/libdiffsample.so.* "$bundle"/tests/* "$bundle"/bench/* "$bundle"/lib/* 2>/dev/null || true
fi
tar -cJf "$bundle.tar.xz" "$bundle"
du -sh "$bundle" "$bundle.tar.xz"
