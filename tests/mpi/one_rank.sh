#!/bin/sh
# mpirun -np P diffsample when something fails on some processes only. solve's posterior checks: every process must
# stop with the lowest failing rank's message and the status of its kind; so must a process whose standard output
# fails, before any output changes. None left waiting (each run under a watchdog: 124 is a hang).
# Usage: one_rank.sh DIFFSAMPLE STDOUT_FAULT_LIBRARY MPIEXEC [MPIEXEC_FLAGS...]
set -eu
program=$1
fault=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1
problem=$(dirname "$0")/../../examples/posterior_d10.json
# ranks.sh ARGS_0 ARGS_1 ... -- PROGRAM ARGS...: rank r runs the program with ARGS_r after its arguments.
printf '%s\n' '#!/bin/sh' 'rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}' 'eval "extra=\${$((rank + 1))}"' \
  'while [ "$1" != "--" ]; do shift; done' 'shift' 'exec "$@" $extra' >"$dir/ranks.sh"
# expect NAME STATUS COUNT PATTERN: the last run ended with STATUS and PATTERN on COUNT lines of its stderr.
expect() {
  if [ "$status" != "$2" ] || [ "$(grep -c "$4" "$dir/err.txt")" != "$3" ]; then
    echo "one_rank.sh: $1: status $status (124: a hang), not $2 with '$4' from each of the $3 ranks:" >&2
    cat "$dir/err.txt" >&2
    exit 1
  fi
}

# A problem file that each process reads, bad on ranks 1 and 2 of 3 with different errors (sigma_y = 0, which the
# exact posterior takes and the guided samplers refuse; sigma_y = 1e-19, whose FP32 square is no normal number). The
# checks run after MPI has started (the prior's tables are built first): every rank stops with rank 1's message,
# exit status 1 (a file's value). Seen failing with solve's agreement on its checks replaced by each rank throwing its
# own failure: ranks 1 and 2 each ended the job through the MPI_Abort fallback with their own message, rank 0 with
# none.
sed 's/"sigma_y": 0.5/"sigma_y": 0/' "$problem" >"$dir/zero.json"
sed 's/"sigma_y": 0.5/"sigma_y": 1e-19/' "$problem" >"$dir/tiny.json"
set +e
timeout 120 "$@" -np 3 sh "$dir/ranks.sh" "--problem $problem" "--problem $dir/zero.json" "--problem $dir/tiny.json" \
  -- "$program" solve --particles 101 --steps 5 --executor cpu --quiet --out "$dir/x.npy" 2>"$dir/err.txt"
status=$?
set -e
expect "sigma_y bad on ranks 1 and 2" 1 3 \
  "^diffsample: rank 1 of 3: .*zero.json: observation.sigma_y: the guided samplers need sigma_y > 0, got 0"
# The same with the last rank alone failing: its message from every rank.
set +e
timeout 120 "$@" -np 2 sh "$dir/ranks.sh" "--problem $problem" "--problem $dir/tiny.json" \
  -- "$program" solve --particles 101 --steps 5 --executor cpu --quiet --out "$dir/x.npy" 2>"$dir/err.txt"
status=$?
set -e
expect "sigma_y bad on the last rank" 1 2 \
  "^diffsample: rank 1 of 2: .*tiny.json: observation.sigma_y: the guided samplers need sigma_y >= 1e-18"
# A guided setting on the command line that the library's check refuses on ranks 1 and 2 of 3 (a guidance scale above
# the FP32 bound, one below 0): rank 1's message naming the flag, exit status 2 (a bad command line).
set +e
timeout 120 "$@" -np 3 sh "$dir/ranks.sh" "" "--guidance-scale 1e30" "--guidance-scale -1" \
  -- "$program" solve --problem "$problem" --sampler dps --particles 101 --steps 5 --executor cpu --quiet \
  --out "$dir/x.npy" 2>"$dir/err.txt"
status=$?
set -e
expect "--guidance-scale bad on ranks 1 and 2" 2 3 "^diffsample: rank 1 of 3: --guidance-scale: 1e+30 is above 1e+18"
if [ -e "$dir/x.npy" ]; then
  echo "one_rank.sh: a failed run wrote its --out" >&2
  exit 1
fi

# Settings that each process accepts but that differ between them: every process must run its part of one run.
# sample with another seed on rank 1 and another again on rank 2 of 3 (each process would sample its slice of the
# chains with its own seed, the others' slices missing), and MALA on rank 1 of 2 beside ULA on rank 0; solve with a
# problem file whose y differs on rank 1 (the same path on another node can hold another file). Every process stops
# with rank 1's message, status 2 (a flag) or 1 (a file). The same problem file at another path on rank 1 runs, its
# samples those of one process. Seen failing before the comparison: each run exited 0 (sample wrote the slices of
# different runs as one sample).
set +e
timeout 120 "$@" -np 3 sh "$dir/ranks.sh" "--seed 1" "--seed 2" "--seed 3" \
  -- "$program" sample --sampler ula --chains 101 --steps 5 --executor cpu --quiet --out "$dir/x.npy" 2>"$dir/err.txt"
status=$?
set -e
expect "--seed differing on ranks 1 and 2" 2 3 "^diffsample: rank 1 of 3: --seed: '2' on this process, '1' on rank 0"
set +e
timeout 120 "$@" -np 2 sh "$dir/ranks.sh" "--sampler ula" "--sampler mala" \
  -- "$program" sample --chains 101 --steps 5 --executor cpu --quiet --out "$dir/x.npy" 2>"$dir/err.txt"
status=$?
set -e
expect "--sampler differing on rank 1" 2 2 "^diffsample: rank 1 of 2: --sampler: 'mala' on this process, 'ula' on rank 0"
sed 's/"y": \[1.5/"y": [1.6/' "$problem" >"$dir/other_y.json"
set +e
timeout 120 "$@" -np 2 sh "$dir/ranks.sh" "--problem $problem" "--problem $dir/other_y.json" \
  -- "$program" solve --particles 101 --steps 5 --executor cpu --quiet --out "$dir/x.npy" 2>"$dir/err.txt"
status=$?
set -e
expect "a problem file whose y differs on rank 1" 1 2 \
  "^diffsample: rank 1 of 2: .*other_y.json: its content differs from rank 0's copy"
if [ -e "$dir/x.npy" ]; then
  echo "one_rank.sh: a failed run wrote its --out" >&2
  exit 1
fi
cp "$problem" "$dir/copy.json"
# The distributed filter runs the same final moves as one process (4 by default on this problem).
"$program" solve --problem "$problem" --particles 101 --steps 5 --executor cpu --quiet --out "$dir/one.npy"
timeout 120 "$@" -np 2 sh "$dir/ranks.sh" "--problem $problem" "--problem $dir/copy.json" \
  -- "$program" solve --particles 101 --steps 5 --executor cpu --quiet --out "$dir/x.npy"
cmp "$dir/one.npy" "$dir/x.npy"

# Standard output failing on one process only (stdout_fault.c, preloaded there), after MPI has started: rank 1 of 2
# or 3, which prints nothing (the program's check of its standard output fails), or rank 0, which prints the results
# and writes the outputs. The run must fail on every process alike, each exiting with status 1 and the failing
# rank's message (no MPI_Abort), and leave the outputs as they were: --out and --report, which exist beforehand, keep
# their contents, --plot (and solve's --ess-plot), which do not, are not created, and no temporary is left in their
# folder. Seen failing, rank 1: before every process's standard output was agreed on ahead of rank 0's renames, rank
# 1 failed at the program's end, after rank 0 had renamed the new outputs over the old ones, and ended the job
# (MPI_Abort) with its message alone; rank 0: with solve's and sample's standard-output check moved after the
# outputs' renames (the run failed, with the new files over the old ones).
printf '%s\n' '#!/bin/sh' 'rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}' \
  'if [ "$rank" = "$FAULT_RANK" ]; then LD_PRELOAD=$FAULT "$@"; else "$@"; fi' \
  's=$?; echo "$s" >"$STATUS_DIR/status.$rank"; exit $s' >"$dir/fault.sh"
mkdir "$dir/outputs"
for failing in 1 0; do
  for np in 2 3; do
    for run in "sample --sampler ula --chains 101 --steps 5" \
      "solve --problem $problem --particles 101 --steps 5 --ess-plot $dir/outputs/e.svg"; do
      printf 'earlier samples\n' >"$dir/outputs/x.npy"
      printf 'earlier report\n' >"$dir/outputs/r.json"
      rm -f "$dir"/status.*
      set +e
      # shellcheck disable=SC2086
      FAULT=$fault FAULT_RANK=$failing STATUS_DIR=$dir timeout 120 "$@" -np "$np" sh "$dir/fault.sh" "$program" $run \
        --executor cpu --out "$dir/outputs/x.npy" --report "$dir/outputs/r.json" --plot "$dir/outputs/p.svg" \
        2>"$dir/err.txt" >/dev/null
      status=$?
      set -e
      expect "'$run' with standard output failing on rank $failing of $np" 1 "$np" \
        "^diffsample: rank $failing of $np: standard output: write failed: Input/output error$"
      # Each process's status as it exited (mpirun may end the others once one has exited non-zero: a process
      # ended so writes none; each message above was printed after the agreement).
      statuses=$(cat "$dir"/status.* 2>/dev/null | tr '\n' ' ')
      if [ -z "$statuses" ] || [ -n "$(echo "$statuses" | tr -d '1 ')" ]; then
        echo "one_rank.sh: '$run' with standard output failing on rank $failing of $np: exit statuses '$statuses'," \
             "not 1 on each rank" >&2
        cat "$dir/err.txt" >&2
        exit 1
      fi
      left=$(cd "$dir/outputs" && ls -A | tr '\n' ' ')
      if [ "$left" != "r.json x.npy " ] || [ "$(cat "$dir/outputs/x.npy")" != "earlier samples" ] ||
        [ "$(cat "$dir/outputs/r.json")" != "earlier report" ]; then
        echo "one_rank.sh: '$run' with standard output failing on rank $failing of $np changed the outputs: $left" >&2
        head -c 200 "$dir/outputs/x.npy" "$dir/outputs/r.json" >&2
        exit 1
      fi
    done
  done
done
echo "one_rank.sh: ok"
