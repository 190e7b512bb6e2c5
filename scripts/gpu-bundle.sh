#!/usr/bin/env bash
# Lays out what scripts/gpu-check.sh --prebuilt needs from a finished build (default build/): the shared library,
# the test and benchmark programs, the commit, and in lib/ every shared library they load from this machine's system
# folders that a bare GPU machine may lack (OpenBLAS and its Fortran runtime, OpenMP's runtime), in gpu-bundle/
# (git-ignored), then packs it as gpu-bundle.tar.xz (git-ignored too) to carry to a GPU machine that cannot build
# (no GoogleTest there, no package downloads). Not bundled: the C library and the compiler's C++ runtime (a newer one
# is there) and the CUDA libraries (runtime, cuBLAS, cuRAND: the GPU machine has them; gpu-check.sh finds them in its
# CUDA toolkit's folders, else in Python's nvidia-* wheels). Prints the bundle's and the archive's size and the working tree's: what travels to a
# GPU machine of the device tool (the tree plus the carried archive) must stay under 64 MiB.
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
# Only what gpu-check.sh runs: every test program but test_cli (it drives the diffsample program through this
# machine's paths, so --prebuilt skips it), and the benchmarks of the CUDA executor it names (gpu_benches, gpu_bench_extra).
for t in "$build"/tests/test_*; do
  [ -f "$t" ] && [ -x "$t" ] && [ "$(basename "$t")" != test_cli ] && cp "$t" "$bundle/tests/"
done
gpu_benches=$(sed -n 's/^gpu_benches="\(.*\)"$/\1/p' scripts/gpu-check.sh)
[ -n "$gpu_benches" ] || { echo "gpu-bundle: no gpu_benches list in scripts/gpu-check.sh" >&2; exit 1; }
gpu_benches="$gpu_benches $(sed -n 's/^gpu_bench_extra="\(.*\)"$/\1/p' scripts/gpu-check.sh)"
for name in $gpu_benches; do
  [ -f "$build/bench/$name" ] && [ -x "$build/bench/$name" ] && cp "$build/bench/$name" "$bundle/bench/"
done
# The diffsample program: gpu-check.sh runs its main job (the README's demo) on the GPU. It loads the MPI layer,
# libdiffsample_mpi (the file and its soname link), which goes beside libdiffsample.
if [ -f "$build/diffsample" ] && [ -x "$build/diffsample" ]; then
  cp "$build/diffsample" "$bundle/"
  mpi_lib=$(ldd "$build/diffsample" 2>/dev/null | awk '$1 ~ /^libdiffsample_mpi\.so/ && $3 ~ /^\// {print $1, $3}')
  if [ -n "$mpi_lib" ]; then
    real_mpi=$(readlink -f "${mpi_lib#* }")
    cp "$real_mpi" "$bundle/"
    ln -sf "$(basename "$real_mpi")" "$bundle/${mpi_lib%% *}"
  fi
fi
git rev-parse HEAD >"$bundle/COMMIT" 2>/dev/null || echo unknown >"$bundle/COMMIT"
# A build of uncommitted code says so (the results file's commit line reads this file).
changed=$(git diff --name-only HEAD -- src include kernels bench tests python CMakeLists.txt 2>/dev/null | xargs)
[ -z "$changed" ] || echo "(built with uncommitted changes to: $changed)" >>"$bundle/COMMIT"
# Libraries resolved from the system's folders, less those every Linux with a CUDA toolkit has: in lib/ those of the
# library and the programs that do not use MPI, in lib/mpi/ those only the MPI programs (test_mpi, test_mpi_c) load
# (Open MPI, hwloc, libevent, zlib, udev ...), which gpu-check.sh gives to those programs alone, so that PyTorch, the
# Python package's build and the other tools there keep the machine's own copies.
resolved() {  # resolved FILE...: "name path" of each system library the files load
  for f in "$@"; do ldd "$f" 2>/dev/null || true; done |
    awk '$2 == "=>" && $3 ~ /^\// && $3 !~ /^\/usr\/local\/cuda/ {print $1, $3}' | sort -u |
    while read -r name path; do
      case "$name" in
        libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libgcc_s.so.*|libstdc++.so.*) continue ;;
        libcu*|libnv*|libdiffsample.so.*|libdiffsample_mpi.so.*) continue ;;  # the GPU machine's CUDA toolkit has the CUDA libraries
      esac
      echo "$name $path"
    done
}
plain=() mpi=()
for f in "$bundle"/libdiffsample.so.* "$bundle"/libdiffsample_mpi.so.* "$bundle"/diffsample "$bundle"/tests/* "$bundle"/bench/*; do
  [ -f "$f" ] || continue
  case "$(ldd "$f" 2>/dev/null || true)" in *libmpi.so*|*libmpi_*) mpi+=("$f") ;; *) plain+=("$f") ;; esac
done
resolved "${plain[@]}" | while read -r name path; do cp -L "$path" "$bundle/lib/$name"; done
if [ ${#mpi[@]} -gt 0 ]; then
  mkdir -p "$bundle/lib/mpi"
  resolved "${mpi[@]}" | while read -r name path; do
    [ -e "$bundle/lib/$name" ] || cp -L "$path" "$bundle/lib/mpi/$name"
  done
fi
# Debug sections are not needed to run; strip them to stay inside a carried tree's size limit.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$bundle"/libdiffsample.so.* "$bundle"/libdiffsample_mpi.so.* "$bundle"/diffsample "$bundle"/tests/* "$bundle"/bench/* "$bundle"/lib/*.so* \
    "$bundle"/lib/mpi/*.so* 2>/dev/null || true
fi
# Packed from the bundle's parent folder, so that the archive holds gpu-bundle/... (gpu-check.sh looks for tests/
# two levels down at most) whatever path the bundle was given as.
tar -C "$(dirname "$bundle")" -cJf "$bundle.tar.xz" "$(basename "$bundle")"
# What travels to a GPU machine of the device tool: the tracked files (and any untracked file git does not ignore)
# plus the carried archive, 64 MiB in all.
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
archive=$(stat -c %s "$bundle.tar.xz")
unpacked=$(du -sb "$bundle" | cut -f1)
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } 2>/dev/null |
  { xargs -0 -r stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
echo "gpu-bundle: $bundle/ $(mib "$unpacked"), $bundle.tar.xz $(mib "$archive"); working tree (tracked and" \
  "untracked files git does not ignore) $(mib "$tree"); tree and archive $(mib $((archive + tree))) of the 64 MiB" \
  "a device call carries"
# The newest C library the bundle asks for: the GPU machine's must be at least that (a lower one fails at load time,
# which gpu-check.sh's library check reports).
glibc_of() { for f in "$@"; do objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_2\.[0-9]*' || true; done | sort -u -V | tail -1; }
echo "gpu-bundle: needs $(glibc_of "$bundle"/libdiffsample.so.* "$bundle"/tests/* "$bundle"/bench/* "$bundle"/lib/*.so* \
  "$bundle"/lib/mpi/*.so*) or newer on the GPU machine ($(glibc_of "$bundle"/libdiffsample.so.* "${plain[@]}" \
  "$bundle"/lib/*.so*) without the MPI programs and lib/mpi/)"
[ $((archive + tree)) -lt $((56 * 1048576)) ] ||
  echo "gpu-bundle: WARNING: less than 8 MiB left under the 64 MiB a device call carries" >&2
