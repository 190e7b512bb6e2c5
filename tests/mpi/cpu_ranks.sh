#!/bin/sh
# Under mpirun, a rank on the CPU executor keeps off the node's GPUs: it hides them (CUDA_VISIBLE_DEVICES=-1) before
# anything starts the CUDA driver, so neither MPI nor the mixture's and the posterior's tables (which a
# gaussian_mixture copies to the current device whenever one is visible) open a context on device 0. Checked
# without a GPU through a stand-in driver (tests/mpi/driver_probe.c) whose cuInit records CUDA_VISIBLE_DEVICES.
# Seen failing before the program hid the devices: every rank started the driver with it unset.
# Usage: cpu_ranks.sh DIFFSAMPLE DRIVER_PROBE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -eu
program=$1
probe_dir=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1
unset CUDA_VISIBLE_DEVICES
# The stand-in goes to the program's processes only (not to the launcher).
probed="env DRIVER_PROBE_LOG=$dir/driver.log LD_LIBRARY_PATH=$probe_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
problem=$(dirname "$0")/../../examples/posterior_d10.json
# One process on the CPU executor still starts the driver (a gaussian_mixture asks whether a GPU is present), with
# the devices visible: the stand-in is in use, so the checks below can fail.
# shellcheck disable=SC2086
$probed "$program" sample --sampler mala --chains 101 --steps 5 --executor cpu --quiet --out "$dir/one.npy"
grep -q 'CUDA_VISIBLE_DEVICES=(unset)' "$dir/driver.log"
# The executor from the problem file's sampler.executor (its grid prior is read before the executor is resolved).
sed 's/"seed": 11}/"seed": 11, "executor": "cpu"}/' "$problem" >"$dir/on_cpu.json"
grep -q '"executor": "cpu"' "$dir/on_cpu.json"
for np in 2 3; do
  for run in "sample --sampler mala --chains 101 --steps 5 --executor cpu" \
             "solve --problem $problem --particles 101 --steps 5 --executor cpu" \
             "sample --problem $dir/on_cpu.json --chains 101 --steps 5" \
             "solve --problem $dir/on_cpu.json --particles 101 --steps 5"; do
    rm -f "$dir/driver.log"
    # shellcheck disable=SC2086
    "$@" -np "$np" $probed "$program" $run --quiet --out "$dir/many.npy"
    if grep -v 'CUDA_VISIBLE_DEVICES=-1$' "$dir/driver.log" 2>/dev/null; then
      echo "cpu_ranks.sh: a CPU rank of 'diffsample $run' (np $np) started the CUDA driver with the devices visible" >&2
      exit 1
    fi
  done
done
echo "cpu_ranks.sh: ok"
