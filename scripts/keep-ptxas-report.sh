#!/usr/bin/env bash
# Compiler launcher of the library's CUDA objects: runs the compile command given after the report folder and keeps
# ptxas's resource report (-Xptxas=-v: registers, stack frame, spills, shared memory of every kernel) in
# <folder>/<object file name>.log, for scripts/static_record.py. The report lines are kept out of the build output;
# every other diagnostic is passed through. A compiler cache in front of nvcc replays the report on a hit.
set -u
folder=$1
shift
object=unknown.o
previous=
for arg in "$@"; do
  [ "$previous" = "-o" ] && object=$arg
  previous=$arg
done
mkdir -p "$folder"
report="$folder/$(basename "$object").log"
"$@" 2>"$report.tmp"
status=$?
grep -v -e '^ptxas info' -e '^    [0-9]* bytes stack frame' "$report.tmp" >&2
mv "$report.tmp" "$report"
exit $status
