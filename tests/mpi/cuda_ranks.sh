#!/bin/sh
# Under mpirun, a process on the CUDA executor (or automatic, with a device visible) selects its own GPU (its rank on
# the node mod the node's devices) before anything of it reaches a device: the grid prior built while the arguments
# or the problem file are read, the run's prior and posterior tables, the run's buffers. Checked without a GPU
# through a stand-in for the runtime's device calls (tests/mpi/runtime_probe.c, preloaded into the program's
# processes only) that reports 2 devices and logs, per rank, each cudaSetDevice and each call that would place
# something on the current device (or create a context there): rank r's first such call must come after it set
# device r mod 2, and every one of them must be on that device. The runs stop at their first kernel (the real
# runtime finds no driver here), after their tables and buffers are made.
# Seen failing before the program selected the device first: rank 1 built the grid prior's tables on device 0
# (cudaMemGetInfo, cudaMalloc, cudaMemcpyAsync) before it set device 1.
# The same without the launcher's local-rank variables (the device from MPI's node split), and with a variable that
# disagrees with MPI's node split (refused on every rank); each launcher's variable honoured, in the program's order.
# A bad argument, on every rank or on the last alone, without a local-rank variable (MPI started first): every rank
# exits with the same message and status, not through MPI_Abort; and the node split made whatever the executor.
# Also: a failure of the device on one rank alone stops every rank with its error (below).
# Usage: cuda_ranks.sh DIFFSAMPLE RUNTIME_PROBE MPIEXEC [MPIEXEC_FLAGS...]
set -eu
program=$1
probe=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1
unset CUDA_VISIBLE_DEVICES
probed="env LD_PRELOAD=$probe RUNTIME_PROBE_LOG=$dir/runtime.log RUNTIME_PROBE_DEVICES=2"
examples=$(dirname "$0")/../../examples
# One process: the stand-in is in use (the tables reach device 0, the current one; nothing selects another).
# shellcheck disable=SC2086
$probed "$program" sample --sampler ula --chains 101 --steps 5 --executor cuda --quiet --out "$dir/x.npy" \
  2>/dev/null || true
grep -q '^rank - touch cudaMalloc 0$' "$dir/runtime.log"
# check_ranks NP LAUNCH RUN: runs 'diffsample RUN' on NP ranks under the stand-in (LAUNCH: what comes between the
# launcher and the program, the stand-in's environment) and checks that each rank selected its device first.
check_ranks() {
  np=$1
  launch=$2
  run=$3
  shift 3
  rm -f "$dir/runtime.log"
  # The run itself fails at its first kernel, on every rank alike (timeout: nobody may hang).
  # shellcheck disable=SC2086
  timeout 120 "$@" -np "$np" $launch "$program" $run --quiet 2>"$dir/err.txt" || true
  if grep -q 'did not stop' "$dir/err.txt"; then
    echo "cuda_ranks.sh: 'diffsample $run' (np $np) did not fail on every rank alike:" >&2
    cat "$dir/err.txt" >&2
    exit 1
  fi
  r=0
  while [ "$r" -lt "$np" ]; do
    device=$((r % 2))
    grep "^rank $r " "$dir/runtime.log" >"$dir/rank.log" || true
    if ! grep -q ' touch ' "$dir/rank.log"; then
      echo "cuda_ranks.sh: rank $r of 'diffsample $run' (np $np) placed nothing on a device" >&2
      exit 1
    fi
    # The first line of the rank: selecting its device; then nothing on any other device.
    if [ "$(head -1 "$dir/rank.log")" != "rank $r set $device" ] ||
       grep ' touch ' "$dir/rank.log" | grep -v " $device\$" >/dev/null; then
      echo "cuda_ranks.sh: rank $r of 'diffsample $run' (np $np, $launch) reached a device before selecting" \
           "device $device, or another device:" >&2
      cat "$dir/rank.log" >&2
      exit 1
    fi
    r=$((r + 1))
  done
}
for np in 2 3; do
  for run in "sample --sampler ula --chains 101 --steps 5 --executor cuda --out $dir/x.npy" \
             "sample --sampler ddim --chains 101 --steps 5 --out $dir/x.npy" \
             "sample --problem $examples/grid2d_ddpm.json --chains 101 --steps 5 --executor cuda --out $dir/x.npy" \
             "demo --chains 101 --steps 5 --executor cuda" \
             "solve --problem $examples/posterior_d10.json --particles 101 --steps 5 --executor cuda --out $dir/x.npy" \
             "solve --problem $examples/posterior_d10.json --sampler dps --particles 101 --steps 5 --out $dir/x.npy"; do
    check_ranks "$np" "$probed" "$run" "$@"
  done
done
# Under a launcher that sets none of the local-rank variables, the program starts MPI first and selects the device
# from MPI's node split (MPI_Comm_split_type), still before anything reaches a device. Seen failing before: rank 1
# built the grid prior on device 0 (cudaMemGetInfo, cudaMalloc) before it set device 1.
unlaunched="env -u OMPI_COMM_WORLD_LOCAL_RANK -u MV2_COMM_WORLD_LOCAL_RANK -u MPI_LOCALRANKID -u PALS_LOCAL_RANKID \
  -u PMI_LOCAL_RANK -u SLURM_LOCALID"
for np in 2 3; do
  for run in "sample --problem $examples/grid2d_ddpm.json --chains 101 --steps 5 --executor cuda --out $dir/x.npy" \
             "solve --problem $examples/posterior_d10.json --particles 101 --steps 5 --out $dir/x.npy"; do
    check_ranks "$np" "$unlaunched ${probed#env }" "$run" "$@"
  done
done
# A launcher's local rank that gives another device than MPI's node split (the ranks' variables swapped at np 2): the
# tables are on the launcher's device, MPI's would run the rank on the other. Every rank stops with rank 0's error
# naming the variable, status 1. Seen failing without the check: the ranks went on (and failed at their first kernel).
printf '%s\n' '#!/bin/sh' 'export OMPI_COMM_WORLD_LOCAL_RANK=$((OMPI_COMM_WORLD_SIZE - 1 - OMPI_COMM_WORLD_RANK))' \
  'exec "$@"' >"$dir/swap.sh"
set +e
# shellcheck disable=SC2086
timeout 120 "$@" -np 2 $probed sh "$dir/swap.sh" "$program" sample --problem "$examples/grid2d_ddpm.json" --chains 101 \
  --steps 5 --executor cuda --quiet --out "$dir/x.npy" 2>"$dir/err.txt"
status=$?
set -e
if [ "$status" != 1 ] ||
   [ "$(grep -c 'rank 0 of 2: OMPI_COMM_WORLD_LOCAL_RANK=1 selected device 1, but this process is rank 0 of its node' \
        "$dir/err.txt")" != 2 ]; then
  echo "cuda_ranks.sh: swapped OMPI_COMM_WORLD_LOCAL_RANK: status $status, not its error on every rank:" >&2
  cat "$dir/err.txt" >&2
  exit 1
fi
# The local-rank variables of the other launchers (MVAPICH2's mpirun_rsh, MPICH's and Intel MPI's Hydra, HPE Cray's
# PALS, Cray PMI, Slurm's srun), Open MPI's removed, set by local.sh from the rank (one node: the local rank is the
# rank): NAME=rank sets the right value, NAME=swapped the other rank's, NAME=V the value V. Each adjacent pair of the
# program's order with the earlier variable swapped and the later one right: the earlier one is honoured (rank 0's
# first runtime call sets device 1, before MPI starts) and every rank stops with rank 0's error naming it;
# SLURM_LOCALID, the last, alone. Seen failing before MV2_COMM_WORLD_LOCAL_RANK, PALS_LOCAL_RANKID and PMI_LOCAL_RANK
# were read: with each of them swapped the ranks went on (to their first kernel) on the next variable's device or
# MPI's; and with SLURM_LOCALID read before PMI_LOCAL_RANK: PMI_LOCAL_RANK swapped went on.
cat >"$dir/local.sh" <<'SH'
#!/bin/sh
while [ "$1" != -- ]; do
  name=${1%%=*}
  how=${1#*=}
  case $how in
    swapped) value=$((OMPI_COMM_WORLD_SIZE - 1 - OMPI_COMM_WORLD_RANK)) ;;
    rank) value=$OMPI_COMM_WORLD_RANK ;;
    *) value=$how ;;
  esac
  export "$name=$value"
  shift
done
shift
exec "$@"
SH
previous=OMPI_COMM_WORLD_LOCAL_RANK
for name in MV2_COMM_WORLD_LOCAL_RANK MPI_LOCALRANKID PALS_LOCAL_RANKID PMI_LOCAL_RANK SLURM_LOCALID -; do
  if [ "$name" = - ]; then
    set_vars="$previous=swapped"  # the last of the order, alone
  else
    set_vars="$previous=swapped $name=rank"
  fi
  rm -f "$dir/runtime.log"
  set +e
  # shellcheck disable=SC2086
  timeout 60 "$@" -np 2 $unlaunched ${probed#env } sh "$dir/local.sh" $set_vars -- "$program" sample \
    --problem "$examples/grid2d_ddpm.json" --chains 101 --steps 5 --executor cuda --quiet --out "$dir/x.npy" \
    2>"$dir/err.txt"
  status=$?
  set -e
  if [ "$status" != 1 ] || [ "$(grep '^rank 0 ' "$dir/runtime.log" | head -1)" != "rank 0 set 1" ] ||
     [ "$(grep -c "rank 0 of 2: $previous=1 selected device 1, but this process is rank 0 of its node" \
          "$dir/err.txt")" != 2 ]; then
    echo "cuda_ranks.sh: $set_vars: status $status, rank 0's device not the variable's or not its error on every" \
         "rank:" >&2
    cat "$dir/err.txt" "$dir/runtime.log" >&2
    exit 1
  fi
  previous=$name
done
# A launcher started inside a Slurm allocation passes on the SLURM_LOCALID of its step (0 in a batch script) to every
# process it starts: under MVAPICH2's variable the ranks still select devices 0 and 1. Seen failing before
# MV2_COMM_WORLD_LOCAL_RANK was read: rank 1 set device 0 (from SLURM_LOCALID) first.
check_ranks 2 "$unlaunched ${probed#env } sh $dir/local.sh SLURM_LOCALID=0 MV2_COMM_WORLD_LOCAL_RANK=rank --" \
  "sample --problem $examples/grid2d_ddpm.json --chains 101 --steps 5 --executor cuda --out $dir/x.npy" "$@"
# Arguments refused after MPI has started: without the launcher's local rank MPI starts first thing (the device from
# MPI's node split), before the arguments and the problem file are read. Every rank must exit with the lowest
# failing rank's message and the program's status (2 for an argument, 1 for a problem file it cannot open) through
# the agreement and MPI_Finalize: not MPI_Abort ("ending every process", the fallback for a failure the ranks did
# not agree on) and not a hang (the 60 s watchdog). The argument refused by every rank (--steps -5), or given to the
# last rank alone (--seed x: sample and solve), or the problem file the last rank alone cannot open. Seen failing
# before the arguments were agreed on: status 2 (or 1) from MPI_Abort, each rank's "ending every process" and Open
# MPI's MPI_ABORT notice.
printf '%s\n' '#!/bin/sh' 'rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}' 'size=${OMPI_COMM_WORLD_SIZE:-${PMI_SIZE:-1}}' \
  'extra=$1' 'shift' 'if [ "$rank" = "$((size - 1))" ]; then exec "$@" $extra; fi' 'exec "$@"' >"$dir/alone.sh"
# check_agreed NP STATUS MESSAGE RUN...: runs RUN (what follows the launcher's flags) on NP ranks without the
# launcher's local rank and checks the status and MESSAGE (a grep pattern) once from every rank.
check_agreed() {
  np=$1
  expected_status=$2
  message=$3
  shift 3
  set +e
  # shellcheck disable=SC2086
  timeout 60 $launcher -np "$np" $unlaunched ${probed#env } "$@" --quiet --out "$dir/x.npy" 2>"$dir/err.txt"
  status=$?
  set -e
  if [ "$status" != "$expected_status" ] || [ "$(grep -c "$message" "$dir/err.txt")" != "$np" ] ||
     grep -q 'ending every process\|MPI_ABORT' "$dir/err.txt"; then
    echo "cuda_ranks.sh: '$*' (np $np, no local rank from the launcher): status $status (124: a hang), not" \
         "$expected_status with '$message' from every rank through the agreement:" >&2
    cat "$dir/err.txt" >&2
    exit 1
  fi
}
launcher="$*"  # the launcher and its flags (check_agreed's own arguments are the run)
for np in 2 3; do
  last=$((np - 1))
  check_agreed "$np" 2 "^diffsample: rank 0 of $np: --steps: expected an integer >= 0, got '-5'\$" \
    "$program" sample --steps -5 --executor cuda
  check_agreed "$np" 2 "^diffsample: rank $last of $np: --seed: expected an integer" \
    sh "$dir/alone.sh" "--seed x" "$program" sample --problem "$examples/grid2d_ddpm.json" --chains 101 --steps 5 \
    --executor cuda
  check_agreed "$np" 1 "^diffsample: rank $last of $np: .*none.json: cannot open" \
    sh "$dir/alone.sh" "--problem $dir/none.json" "$program" sample --chains 101 --steps 5 --executor cuda
done
check_agreed 3 2 "^diffsample: rank 2 of 3: --seed: expected an integer" \
  sh "$dir/alone.sh" "--seed x" "$program" solve --problem "$examples/posterior_d10.json" --particles 101 --steps 5 \
  --executor cuda
# --help without the launcher's local rank, on every rank or on the last alone (sample, np 2): every rank exits 0 and
# the usage is printed once. Seen failing before --help was agreed on: the usage twice (every rank) and a hang (the
# last alone: it exited, and waited in MPI_Finalize, while the other waited in the agreement).
for how in every last; do
  set +e
  if [ "$how" = every ]; then
    # shellcheck disable=SC2086
    timeout 60 "$@" -np 2 $unlaunched ${probed#env } "$program" sample --help --executor cuda >"$dir/out.txt" \
      2>"$dir/err.txt"
  else
    # shellcheck disable=SC2086
    timeout 60 "$@" -np 2 $unlaunched ${probed#env } sh "$dir/alone.sh" --help "$program" sample --executor cuda \
      >"$dir/out.txt" 2>"$dir/err.txt"
  fi
  status=$?
  set -e
  if [ "$status" != 0 ] || [ "$(grep -c '^usage: diffsample sample' "$dir/out.txt")" != 1 ]; then
    echo "cuda_ranks.sh: sample --help on $how rank (np 2, no local rank from the launcher): status $status" \
         "(124: a hang), not 0 with the usage once:" >&2
    cat "$dir/out.txt" "$dir/err.txt" >&2
    exit 1
  fi
done
# Without the launcher's local rank every process makes MPI's node split first thing, whatever executor it asks for:
# here the last rank alone on the CPU executor, the others on CUDA (the stand-in's), which stop at their first kernel.
# Every rank must exit with rank 0's error (status 1). Seen failing when a process on the CPU executor skipped the
# split: status 15 (Open MPI's "Data unpack would read past end of buffer", the others' split meeting its next
# collective).
set +e
# shellcheck disable=SC2086
timeout 60 "$@" -np 2 $unlaunched ${probed#env } sh "$dir/alone.sh" "--executor cpu" "$program" sample --sampler ula \
  --chains 101 --steps 5 --quiet 2>"$dir/err.txt"
status=$?
set -e
if [ "$status" != 1 ] || [ "$(grep -c '^diffsample: rank 0 of 2: ' "$dir/err.txt")" != 2 ]; then
  echo "cuda_ranks.sh: the last rank alone on the CPU executor, no local rank from the launcher: status $status," \
       "not rank 0's error on both ranks:" >&2
  cat "$dir/err.txt" >&2
  exit 1
fi
# A device whose memory others hold on the last rank alone (the stand-in reports no free memory there): the run's
# prior (sample: a problem file's explicit mixture, built after MPI has started) or the prior and posterior (solve)
# cannot be placed on it. Every rank must stop with that rank's error, status 1, none wait. Seen failing: a hang
# (killed by the timeout), the last rank waiting in MPI_Finalize and the others in the check before the run.
cat >"$dir/explicit.json" <<'JSON'
{"prior": {"means": [[-1, 0], [1, 0.5]], "variances": [0.3, 0.4], "weights": [0.4, 0.6]},
 "observation": {"A": [[1, 0]], "sigma_y": 0.5, "y": [0.3]}}
JSON
printf '%s\n' '#!/bin/sh' 'rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}' 'size=${OMPI_COMM_WORLD_SIZE:-${PMI_SIZE:-1}}' \
  'if [ "$rank" = "$((size - 1))" ]; then export RUNTIME_PROBE_FREE_BYTES=0; fi' 'exec "$@"' >"$dir/last.sh"
for np in 2 3; do
  for run in "sample --problem $examples/mixture_from_npy.json --chains 101 --steps 5 --executor cuda" \
             "solve --problem $dir/explicit.json --particles 101 --steps 5 --executor cuda"; do
    set +e
    # shellcheck disable=SC2086
    timeout 120 "$@" -np "$np" $probed sh "$dir/last.sh" "$program" $run --quiet --out "$dir/x.npy" 2>"$dir/err.txt"
    status=$?
    set -e
    expected="rank $((np - 1)) of $np: gaussian_mixture: needs .* bytes of device memory but only 0 of"
    if [ "$status" = 0 ] || [ "$status" = 124 ] || [ "$(grep -c "$expected" "$dir/err.txt")" != "$np" ]; then
      echo "cuda_ranks.sh: 'diffsample $run' (np $np) with no device memory on the last rank: status $status" \
           "(124: a hang), not its error on every rank:" >&2
      cat "$dir/err.txt" >&2
      exit 1
    fi
  done
done
# Ranks on different executors without --chains: one run of the smallest default (the CPU's 16384), not each
# rank's own. Rank 0 on the stand-in's device (automatic executor: CUDA), rank 1 on the CPU (no device); rank 0
# prints the run's chain count before the run, which stops at rank 0's first kernel. Seen failing before: rank 0
# announced and sharded its own 1048576 chains, rank 1 its 16384 (their rows gathered into one output of neither).
# shellcheck disable=SC2086
timeout 120 "$@" -np 1 $probed "$program" sample --sampler ula --steps 5 --out "$dir/x.npy" : \
  -np 1 "$program" sample --sampler ula --steps 5 --out "$dir/x.npy" >"$dir/out.txt" 2>"$dir/err.txt" || true
if ! grep -q ', 16384 chains$' "$dir/out.txt"; then
  echo "cuda_ranks.sh: a CUDA and a CPU rank without --chains did not run the smallest default, 16384 chains:" >&2
  cat "$dir/out.txt" "$dir/err.txt" >&2
  exit 1
fi
# With a real device (no stand-in; skipped, and said so, without one; not run here): sample and solve on 2 CUDA
# ranks, which share the device on a machine of one, succeed and write one output of every chain's row.
if "$program" info 2>/dev/null | grep -q '^CUDA executor: device '; then
  for run in "sample --sampler mala --chains 1001 --steps 20" "solve --problem $examples/posterior_d10.json --particles 301 --steps 20"; do
    rm -f "$dir/x.npy"
    # shellcheck disable=SC2086
    if ! timeout 300 "$@" -np 2 "$program" $run --executor cuda --quiet --out "$dir/x.npy" 2>"$dir/err.txt"; then
      echo "cuda_ranks.sh: 'diffsample $run' on 2 CUDA ranks failed:" >&2
      cat "$dir/err.txt" >&2
      exit 1
    fi
    rows=$(echo "$run" | sed 's/.*--\(chains\|particles\) \([0-9]*\).*/\2/')
    dim=2
    case "$run" in solve*) dim=10 ;; esac
    test "$(wc -c <"$dir/x.npy")" = "$((128 + rows * dim * 4))"
  done
  echo "cuda_ranks.sh: the program on 2 CUDA ranks of a real device: ok"
else
  echo "cuda_ranks.sh: no CUDA device here: the runs on real CUDA ranks skipped"
fi
echo "cuda_ranks.sh: ok"
