#!/usr/bin/env bash
# Fuzzes the program's input readers with libFuzzer, AddressSanitizer and UBSan (clang).
#
#   scripts/fuzz.sh [seconds] [target...]      targets: npy, problem, c_api (default: all); seconds per target (60)
#
#   npy      fuzz/fuzz_npy.cpp: the .npy reader (src/cli/npy.cpp), from numpy-style seeds written below plus
#            tests/data/fuzz/. Crashing inputs are written to tests/data/fuzz/ (crash-*), replayed by test_npy.
#   problem  fuzz/fuzz_problem.cpp: the JSON problem-file reader (parse_problem in src/cli/problem.cpp), from
#            examples/*.json plus tests/data/fuzz-problem/. Crashing inputs are written to tests/data/fuzz-problem/,
#            replayed by test_cli. It links libdiffsample.so: from $DIFFSAMPLE_LIB_DIR if set, else build/ if it
#            holds one, else the library alone is built with CMake under $FUZZ_WORK/lib (a few minutes, once).
#   c_api    fuzz/fuzz_c_api.cpp: the C API's create and sample entry points, schedules with custom times, guided
#            problems and grid mixtures (src/c_api/*.cpp compiled into the harness with the sanitizers, over
#            libdiffsample.so found as for problem), from tests/data/fuzz-c-api/.
#            Crashing inputs are written there, replayed by ctest's test_c_api_fuzz (CApiFuzzRegressions.*).
#
# A crash stops the run of that target: fix the reader, then commit the input next to the others.
# Environment: CXX_FUZZ (clang++), FUZZ_WORK (build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
targets=()
for a in "$@"; do
  case "$a" in
    ''|*[!0-9]*) case "$a" in
                   npy|problem|c_api) targets+=("$a") ;;
                   *) echo "usage: scripts/fuzz.sh [seconds] [npy] [problem] [c_api]" >&2; exit 2 ;;
                 esac ;;
    *) seconds=$a ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(npy problem c_api)
CXX_FUZZ=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14 || true)}
if [ -z "$CXX_FUZZ" ]; then
  echo "fuzz.sh: clang++ not found (apt-get install clang)" >&2
  exit 1
fi
work=${FUZZ_WORK:-build-fuzz}
flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

fuzz_npy() {
  mkdir -p "$work/corpus" tests/data/fuzz
  "$CXX_FUZZ" "${flags[@]}" -I include -I . fuzz/fuzz_npy.cpp src/cli/npy.cpp src/cli/output.cpp -o "$work/fuzz_npy"

  # Seeds: numpy-style headers for each version, dtype and rank (data 64-byte aligned, as numpy.save writes them).
  seed() {  # seed NAME MAJOR DICT DATA-BYTES
    local name=$1 major=$2 dict=$3 nbytes=$4 prefix=10
    [ "$major" = 1 ] || prefix=12
    local total=$(( (prefix + ${#dict} + 1 + 63) / 64 * 64 ))
    local len=$(( total - prefix ))
    {
      printf '\x93NUMPY'
      printf "\\x$(printf %02x "$major")\\x00"
      printf "\\x$(printf %02x $((len & 255)))\\x$(printf %02x $((len >> 8)))"
      [ "$prefix" = 12 ] && printf '\x00\x00'
      printf '%s' "$dict"
      printf '%*s\n' $((len - ${#dict} - 1)) ''
      head -c "$nbytes" /dev/urandom
    } >"$work/corpus/$name"
  }
  seed f4_2d_v1 1 "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }" 24
  seed f8_1d_v1 1 "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }" 32
  seed f4_2d_v2 2 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }" 16
  seed f8_2d_v3 3 "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 3), }" 24
  seed fortran 1 "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }" 16
  seed empty 1 "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }" 0

  "$work/fuzz_npy" -max_total_time="$seconds" -max_len=4096 -artifact_prefix=tests/data/fuzz/ \
    "$work/corpus" tests/data/fuzz
  echo "fuzz_npy: no crash in ${seconds} s (corpus: $work/corpus)"
}

library_dir() {
  local lib=${DIFFSAMPLE_LIB_DIR:-}
  if [ -z "$lib" ]; then
    if [ -e build/libdiffsample.so ]; then
      lib=build
    else
      lib=$work/lib
      cmake -S . -B "$lib" -DCMAKE_BUILD_TYPE=Release -DDIFFSAMPLE_BUILD_TESTS=OFF -DDIFFSAMPLE_BUILD_BENCH=OFF \
        -DDIFFSAMPLE_BUILD_CLI=OFF >/dev/null
      cmake --build "$lib" --target diffsample -j "$(nproc)" >&2
    fi
  fi
  (cd "$lib" && pwd)
}

fuzz_problem() {
  local lib
  lib=$(library_dir)
  mkdir -p "$work/corpus-problem" tests/data/fuzz-problem
  "$CXX_FUZZ" "${flags[@]}" -I include -I src -I . fuzz/fuzz_problem.cpp src/cli/problem.cpp src/cli/npy.cpp src/cli/output.cpp \
    -L "$lib" -ldiffsample -Wl,-rpath,"$lib" -o "$work/fuzz_problem"
  cp examples/*.json "$work/corpus-problem/"
  # The reader refuses 256 MiB and more in one array it builds (a grid prior of 2^24 doubles is 128 MiB).
  "$work/fuzz_problem" -max_total_time="$seconds" -max_len=8192 -malloc_limit_mb=512 \
    -dict=fuzz/problem.dict -artifact_prefix=tests/data/fuzz-problem/ "$work/corpus-problem" tests/data/fuzz-problem
  echo "fuzz_problem: no crash in ${seconds} s (corpus: $work/corpus-problem)"
}

fuzz_c_api() {
  local lib
  lib=$(library_dir)
  mkdir -p "$work/corpus-c-api" tests/data/fuzz-c-api
  "$CXX_FUZZ" "${flags[@]}" -I include -I . fuzz/fuzz_c_api.cpp src/c_api/*.cpp \
    -L "$lib" -ldiffsample -Wl,-rpath,"$lib" -o "$work/fuzz_c_api"
  "$work/fuzz_c_api" -max_total_time="$seconds" -max_len=512 -malloc_limit_mb=512 -timeout=20 \
    -artifact_prefix=tests/data/fuzz-c-api/ "$work/corpus-c-api" tests/data/fuzz-c-api
  echo "fuzz_c_api: no crash in ${seconds} s (corpus: $work/corpus-c-api)"
}

for t in "${targets[@]}"; do
  "fuzz_$t"
done
