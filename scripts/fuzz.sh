#!/usr/bin/env bash
# Fuzzes the .npy reader with libFuzzer and AddressSanitizer (clang). Usage: scripts/fuzz.sh [seconds] (default 60).
# Starts from a seed corpus of valid and near-valid files written below, plus tests/data/fuzz/. Inputs that crash
# are written to tests/data/fuzz/ (crash-*), where test_npy replays every file as a regression test: fix the
# reader, then commit the input.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CXX_FUZZ=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14)}
work=${FUZZ_WORK:-build-fuzz}
mkdir -p "$work/corpus" tests/data/fuzz

"$CXX_FUZZ" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I include -I . fuzz/fuzz_npy.cpp src/npy.cpp -o "$work/fuzz_npy"

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
