#!/bin/sh
# mpirun -np P diffsample sample|solve writes the samples of one process's run, bit for bit, and one report.
# Usage: program.sh DIFFSAMPLE MPIEXEC [MPIEXEC_FLAGS...]
set -eu
program=$1
shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1
for sampler in "mala" "ddim --eta 0.3" "walk_jump"; do
  # shellcheck disable=SC2086
  "$program" sample --sampler $sampler --chains 1001 --steps 20 --executor cpu --quiet --out "$dir/one.npy"
  for np in 2 3; do
    # shellcheck disable=SC2086
    "$@" -np "$np" "$program" sample --sampler $sampler --chains 1001 --steps 20 --executor cpu \
      --out "$dir/many.npy" --report "$dir/many.json" >"$dir/many.txt"
    cmp "$dir/one.npy" "$dir/many.npy"
    test "$(grep -c '^diffsample sample:' "$dir/many.txt")" = 1  # one report, from rank 0
    test "$(grep -c '^rank [0-9]*: ' "$dir/many.txt")" = "$np"
    grep -q '"gather_seconds"' "$dir/many.json"
  done
done
# solve: the SMC particles over the processes, the samples of one process byte for byte, one report (the default
# potentials: twisted with the start correction and the multistep kernel on this problem, d_y = 3, as the summary's
# potentials: line and the report's potentials_ran say), with the default final moves (4 on this problem, in one
# process and in the distributed filter, where each process moves its own rows of the samples).
problem=$(dirname "$0")/../../examples/posterior_d10.json
"$program" solve --problem "$problem" --particles 500 --steps 20 --executor cpu --quiet \
  --out "$dir/one.npy"
for np in 2 3; do
  "$@" -np "$np" "$program" solve --problem "$problem" --particles 500 --steps 20 --executor cpu \
    --out "$dir/many.npy" --report "$dir/many.json" >"$dir/many.txt"
  cmp "$dir/one.npy" "$dir/many.npy"
  test "$(grep -c '^diffsample solve:' "$dir/many.txt")" = 1
  test "$(grep -c '^rank [0-9]*: ' "$dir/many.txt")" = "$np"
  grep -q '"mpi_seconds"' "$dir/many.json"
  # What ran, from rank 0's report of the library's resolution.
  grep -qx 'potentials: automatic -> twisted (start correction, multistep kernel)' "$dir/many.txt"
  grep -q '"potentials_ran": "twisted"' "$dir/many.json"
  grep -qx 'final moves: automatic -> 4 per sample' "$dir/many.txt"
  grep -q '"final_moves_ran": 4' "$dir/many.json"
done
# solve --potentials twisted: the exchanged rows carry the proposals (mean, shift, pending weight); 301 particles
# split unevenly over 2 and 3 processes, the samples of one process byte for byte.
"$program" solve --problem "$problem" --potentials twisted --particles 301 --steps 20 --executor cpu --quiet \
  --out "$dir/one.npy"
for np in 2 3; do
  "$@" -np "$np" "$program" solve --problem "$problem" --potentials twisted --particles 301 --steps 20 \
    --executor cpu --quiet --out "$dir/many.npy"
  cmp "$dir/one.npy" "$dir/many.npy"
done
# solve --start-correction: each rank weights its own particles (the ranks' logsumexps of the log-ratios combined);
# the samples of one process byte for byte (linear potentials; the default run above has it with twisted ones).
"$program" solve --problem "$problem" --potentials linear --start-correction --particles 301 --steps 20 \
  --executor cpu --quiet --out "$dir/one.npy"
for np in 2 3; do
  "$@" -np "$np" "$program" solve --problem "$problem" --potentials linear --start-correction --particles 301 --steps 20 \
    --executor cpu --quiet --out "$dir/many.npy"
  cmp "$dir/one.npy" "$dir/many.npy"
done
# solve --multistep-kernel: each particle's denoiser output of the last weighting travels with it between the
# processes; linear and twisted potentials, the samples of one process byte for byte.
for potentials in linear twisted; do
  "$program" solve --problem "$problem" --multistep-kernel --potentials "$potentials" --particles 301 --steps 20 \
    --executor cpu --quiet --out "$dir/one.npy"
  for np in 2 3; do
    "$@" -np "$np" "$program" solve --problem "$problem" --multistep-kernel --potentials "$potentials" \
      --particles 301 --steps 20 --executor cpu --quiet --out "$dir/many.npy"
    cmp "$dir/one.npy" "$dir/many.npy"
  done
done
# solve's other samplers: each rank's particles on their own streams, the same samples.
for sampler in dps dcps; do
  "$program" solve --problem "$problem" --sampler "$sampler" --particles 300 --steps 20 --executor cpu --quiet \
    --out "$dir/one.npy"
  "$@" -np 3 "$program" solve --problem "$problem" --sampler "$sampler" --particles 300 --steps 20 --executor cpu \
    --quiet --out "$dir/many.npy"
  cmp "$dir/one.npy" "$dir/many.npy"
done
# The exact reference runs as one process: refused on every rank.
if "$@" -np 2 "$program" solve --problem "$problem" --sampler exact --quiet 2>"$dir/err.txt"; then
  echo "program.sh: solve --sampler exact under mpirun succeeded" >&2
  exit 1
fi
grep -q "runs as one process" "$dir/err.txt"
# The discrete samplers run as one process: refused on every rank, exit status 2. Seen failing before: both processes
# ran every chain, printed a report each and wrote the same --out.
set +e
"$@" -np 2 "$program" sample --problem "$(dirname "$0")/../../examples/binary_d8.json" --chains 101 --steps 5 \
  --executor cpu --out "$dir/binary.npy" >"$dir/out.txt" 2>"$dir/err.txt"
status=$?
set -e
if [ "$status" != 2 ] || ! grep -q "a Bernoulli-mixture prior .* runs as one process" "$dir/err.txt" || [ -s "$dir/out.txt" ] ||
   [ -e "$dir/binary.npy" ]; then
  echo "program.sh: sample with a Bernoulli-mixture prior under mpirun: status $status, not refused" >&2
  cat "$dir/out.txt" "$dir/err.txt" >&2
  exit 1
fi
# last.sh EXTRA PROGRAM ARGS...: the last rank runs the program with EXTRA after its arguments, the others without.
printf '%s\n' '#!/bin/sh' 'rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}' 'size=${OMPI_COMM_WORLD_SIZE:-${PMI_SIZE:-1}}' \
  'extra=$1' 'shift' 'if [ "$rank" = "$((size - 1))" ]; then exec "$@" $extra; fi' 'exec "$@"' >"$dir/last.sh"
# A bad argument, given to every rank or to the last alone, is agreed on (the arguments and the problem file are read
# before anything collective, and MPI then starts whatever the launcher gave): every rank exits 2 with the lowest
# failing rank's message, after MPI_Finalize, not MPI_Abort. Seen failing before: each rank printed its own message
# without "rank r of P" (every rank) and mpirun ended the others (the last alone: one message).
for run in "sample --sampler ula --chains 101 --steps 5" "solve --problem $problem --particles 101 --steps 5"; do
  for extra in "" "--seed x"; do
    set +e
    if [ -z "$extra" ]; then
      # shellcheck disable=SC2086
      timeout 60 "$@" -np 2 "$program" $run --seed -1 --executor cpu --quiet 2>"$dir/err.txt"
    else
      # shellcheck disable=SC2086
      timeout 60 "$@" -np 2 sh "$dir/last.sh" "$extra" "$program" $run --executor cpu --quiet 2>"$dir/err.txt"
    fi
    status=$?
    set -e
    failing=0 given="every rank"
    [ -z "$extra" ] || failing=1 given="the last rank alone"
    if [ "$status" != 2 ] || grep -q 'ending every process\|MPI_ABORT' "$dir/err.txt" ||
       [ "$(grep -c "^diffsample: rank $failing of 2: --seed: expected an integer in \[0, " "$dir/err.txt")" != 2 ]; then
      echo "program.sh: '$run' with a bad --seed on $given: status $status, not" \
           "2 with rank $failing's message from both ranks:" >&2
      cat "$dir/err.txt" >&2
      exit 1
    fi
  done
done
# --help on the last rank alone: every rank exits 0, the usage printed once. Seen failing before --help was agreed
# on: a hang (status 124, the last rank gone before MPI started while the other waited in the agreement; in a run of
# sample, status 1: mpirun ended the job).
set +e
timeout 60 "$@" -np 2 sh "$dir/last.sh" --help "$program" solve --problem "$problem" --executor cpu >"$dir/out.txt" \
  2>"$dir/err.txt"
status=$?
set -e
if [ "$status" != 0 ] || [ "$(grep -c '^usage: diffsample solve' "$dir/out.txt")" != 1 ]; then
  echo "program.sh: solve --help on the last rank alone: status $status, not 0 with the usage once:" >&2
  cat "$dir/out.txt" "$dir/err.txt" >&2
  exit 1
fi
# A failure on one process only, after MPI has started (the last rank alone gets a step size the library refuses,
# which the program's check before the run reports with the flag): every rank stops with that rank's message, none
# waits for the other. Seen failing: a hang (killed by the timeout) with the other rank in MPI_Gatherv, and again
# with the check before the run made on each rank alone.
if timeout 120 "$@" -np 2 sh "$dir/last.sh" "--step-size 1e30" "$program" sample --sampler ula --chains 101 --steps 5 \
  --executor cpu --quiet --out "$dir/many.npy" 2>"$dir/err.txt"; then
  echo "program.sh: a failure on the last rank under mpirun succeeded" >&2
  exit 1
fi
test "$(grep -c 'rank 1 of 2: --step-size: 1e+30 is above 1e+18' "$dir/err.txt")" = 2  # the same message from both ranks
# The same for solve, whose guided settings are read after MPI has started: --potential-scale 0 on the last rank
# alone. Every rank stops with that rank's message, exit status 2. Seen failing: a hang (killed by the timeout), the
# last rank waiting in MPI_Finalize and the others in the check before the run.
set +e
timeout 120 "$@" -np 2 sh "$dir/last.sh" "--potential-scale 0" "$program" solve --problem "$problem" --particles 101 \
  --steps 5 --executor cpu --quiet --out "$dir/many.npy" 2>"$dir/err.txt"
status=$?
set -e
if [ "$status" != 2 ] || [ "$(grep -c 'rank 1 of 2: --potential-scale: must be > 0, got 0' "$dir/err.txt")" != 2 ]; then
  echo "program.sh: --potential-scale 0 on the last rank: status $status (124: a hang), not its error on every rank" >&2
  cat "$dir/err.txt" >&2
  exit 1
fi
# A failure on one process only after the run, where rank 0 writes the gathered samples: a file-size limit on rank 0
# alone (ulimit -f, SIGXFSZ ignored, so the write fails with EFBIG; Open MPI over TCP here, whose shared-memory
# segment the limit would refuse) makes its --out fail. Every rank must stop with rank 0's error and a non-zero
# status, none wait, and no output or temporary be left. Seen failing before rank 0's outputs were agreed on: the
# other ranks exited 0 (only rank 0 reported the error).
printf '%s\n' '#!/bin/sh' 'rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}' 'export OMPI_MCA_btl=self,tcp' \
  'if [ "$rank" = 0 ]; then trap "" XFSZ; ulimit -f 4; fi' '"$@"; s=$?; echo "$s" >"$STATUS_DIR/status.$rank"; exit $s' \
  >"$dir/first.sh"
mkdir "$dir/out"
for run in "sample --sampler ula --chains 1001 --steps 5" "solve --problem $problem --particles 301 --steps 5"; do
  rm -f "$dir"/status.*
  # shellcheck disable=SC2086
  if STATUS_DIR=$dir timeout 120 "$@" -np 3 sh "$dir/first.sh" "$program" $run --executor cpu --quiet \
    --out "$dir/out/many.npy" 2>"$dir/err.txt"; then
    echo "program.sh: '$run' with an --out that rank 0 cannot write succeeded" >&2
    exit 1
  fi
  if [ "$(grep -c 'rank 0 of 3: .*many.npy: write failed: File too large' "$dir/err.txt")" != 3 ] ||
     grep -qv '^1$' "$dir"/status.*; then
    echo "program.sh: '$run' with an --out that rank 0 cannot write: not every rank stopped with its error" >&2
    cat "$dir/err.txt" "$dir"/status.* >&2
    exit 1
  fi
  if [ -n "$(ls -A "$dir/out")" ]; then
    echo "program.sh: '$run' left files behind: $(ls -A "$dir/out")" >&2
    exit 1
  fi
done
# A failure of the last process alone after MPI has started: DIFFSAMPLE_CHUNKS in its environment only, which it
# reads after the other checks. Every rank stops with its message (status 2). Seen failing: a hang, the last rank
# waiting in MPI_Finalize and the others in the run's first agreement.
printf '%s\n' '#!/bin/sh' 'rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}' 'size=${OMPI_COMM_WORLD_SIZE:-${PMI_SIZE:-1}}' \
  'if [ "$rank" = "$((size - 1))" ]; then export DIFFSAMPLE_CHUNKS=0; fi' 'exec "$@"' >"$dir/chunks.sh"
set +e
timeout 120 "$@" -np 2 sh "$dir/chunks.sh" "$program" sample --sampler ula --chains 101 --steps 5 --executor cpu \
  --quiet --out "$dir/many.npy" 2>"$dir/err.txt"
status=$?
set -e
if [ "$status" = 0 ] || [ "$status" = 124 ] ||
   [ "$(grep -c "rank 1 of 2: DIFFSAMPLE_CHUNKS: expected an integer >= 1, got '0'" "$dir/err.txt")" != 2 ]; then
  echo "program.sh: DIFFSAMPLE_CHUNKS=0 on the last rank: status $status (124: a hang), not the same error on every rank" >&2
  cat "$dir/err.txt" >&2
  exit 1
fi
# srun with PMIx sets neither OMPI_COMM_WORLD_SIZE nor PMI_SIZE: a process there has PMIX_RANK, and the step's size
# is SLURM_STEP_NUM_TASKS. Emulated under a launcher that sets PMIX_RANK (Open MPI) with its own size variable
# removed: one run spread over the processes, the samples of one process. Seen failing before the rule: each process
# ran every chain and printed its own report.
if "$@" -np 1 sh -c 'test -n "${PMIX_RANK:-}"' 2>/dev/null; then
  "$program" sample --sampler mala --chains 1001 --steps 20 --executor cpu --quiet --out "$dir/one.npy"
  "$@" -np 2 env -u OMPI_COMM_WORLD_SIZE SLURM_STEP_NUM_TASKS=2 "$program" sample --sampler mala --chains 1001 \
    --steps 20 --executor cpu --out "$dir/many.npy" >"$dir/many.txt"
  cmp "$dir/one.npy" "$dir/many.npy"
  test "$(grep -c '^diffsample sample:' "$dir/many.txt")" = 1
  test "$(grep -c '^rank [0-9]*: ' "$dir/many.txt")" = 2
else
  echo "program.sh: the launcher sets no PMIX_RANK; the srun-with-PMIx rule is not exercised here"
fi
echo "program.sh: ok"
