"""The CPU executor under load: wall time of `diffsample sample` (ULA, DDPM) and `diffsample solve` (guided SMC)
idle and with 4 busy processes per core, beside the fair-share prediction.

Fair share: with T threads of the run and B busy single-threaded processes on C cores, the run's threads get
C T / (T + B) cores when T + B >= C, against min(T, C) idle; the prediction is idle time x (T + B) / T for T = C.
No environment variable is set for the runs (OMP_WAIT_POLICY, GOMP_SPINCOUNT and OMP_NUM_THREADS are removed).

usage: python3 bench/cpu_load.py [--build build] [--repeats 3] [--busy-per-core 4]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time


def run_once(cmd, env):
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy-per-core", type=int, default=4)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    prog = os.path.join(args.build, "diffsample")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    cores = os.cpu_count()
    runs = [
        ("sample ula 16384 x 200", [prog, "sample", "--sampler", "ula", "--chains", "16384", "--steps", "200",
                                    "--executor", "cpu", "--quiet"]),
        ("sample ddpm 16384 x 100", [prog, "sample", "--sampler", "ddpm", "--chains", "16384", "--steps", "100",
                                     "--executor", "cpu", "--quiet"]),
        ("solve smc 2000 x 100", [prog, "solve", "--problem", os.path.join(root, "examples", "posterior_d10.json"),
                                  "--particles", "2000", "--steps", "100", "--executor", "cpu", "--quiet"]),
    ]
    busy = args.busy_per_core * cores
    threads = cores  # the library uses one thread per core by default
    factor = (threads + busy) / threads
    print(f"# cpu_load: {cores} cores, {busy} busy processes under load; fair-share factor (T + B) / T = {factor:.1f}; "
          f"load average before the run {os.getloadavg()[0]:.2f}")
    print(f"# idle: best of {args.repeats}; loaded: median of {args.repeats}; idle and loaded rounds interleaved per run")
    print(f"{'run':<26} {'idle s':>8} {'loaded s':>9} {'fair share s':>13} {'loaded / fair':>14}")
    worst = 0.0
    for name, cmd in runs:
        run_once(cmd, env)  # warm the page cache
        idle_times, loaded_times = [], []
        for _ in range(args.repeats):
            idle_times.append(run_once(cmd, env))
            procs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(busy)]
            try:
                time.sleep(0.3)
                loaded_times.append(run_once(cmd, env))
            finally:
                for p in procs:
                    p.kill()
                for p in procs:
                    p.wait()
        idle, loaded = min(idle_times), statistics.median(loaded_times)
        fair = idle * factor
        worst = max(worst, loaded / fair)
        print(f"{name:<26} {idle:>8.3f} {loaded:>9.3f} {fair:>13.3f} {loaded / fair:>14.2f}")
    print(f"# worst loaded / fair share: {worst:.2f} (target: at most 1.5)")


if __name__ == "__main__":
    sys.exit(main())
