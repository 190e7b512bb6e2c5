"""Chain-steps per second of a plan-driven DDPM loop from Python against the fused sampler, CPU executor.

    python3 bench/python_plan.py [--rounds 3] [--steps 100] [--dim 2] [--chains 1,1000,100000]

Three loops per batch size n, interleaved in each round (the best round is reported):
  fused        diffsample.diffusion(): every step of every chain in one call, on the mixture's exact denoiser;
  plan+mixture a Python loop over DiffusionPlan.step() with the mixture's denoiser as the model
               (GaussianMixture.denoiser into a preallocated buffer): what a caller's model costs when it is as cheap
               as the library's own;
  plan+trivial the same loop with a trivial model (a constant buffer, no work): the plan's own cost per step, Python
               call, stream lookup and argument checks included;
  core+trivial the same through diffsample._core (no stream lookup).
The overhead per step is the plan+trivial time per step at the smallest n (its work is then negligible).
"""
import argparse
import time

import numpy as np

import diffsample as ds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--chains", default="1,1000,100000")
    args = ap.parse_args()
    d, steps = args.dim, args.steps
    mix = ds.GaussianMixture.grid(d, 5, 2.0, 0.05)
    sizes = [int(v) for v in args.chains.split(",")]
    best = {}

    def record(key, seconds):
        best[key] = min(best.get(key, float("inf")), seconds)

    for _ in range(args.rounds):
        for n in sizes:
            x = np.empty((n, d), dtype=np.float32)
            model = np.zeros((n, d), dtype=np.float32)
            plan = ds.DiffusionPlan(n, d, output="denoiser", sampler="ddpm", steps=steps, seed=1)
            ds.diffusion(mix, out=x, sampler="ddpm", steps=steps, seed=1)  # warm-up
            t0 = time.perf_counter()
            ds.diffusion(mix, out=x, sampler="ddpm", steps=steps, seed=1)
            record(("fused", n), time.perf_counter() - t0)

            t0 = time.perf_counter()
            plan.reset(x)
            for k in range(steps):
                a, s = plan.step_channel(k)
                mix.denoiser(x, a, s, out=model)
                plan.step(x, model)
            record(("plan+mixture", n), time.perf_counter() - t0)

            model[:] = 0
            t0 = time.perf_counter()
            plan.reset(x)
            for k in range(steps):
                plan.step_channel(k)
                plan.step(x, model)
            record(("plan+trivial", n), time.perf_counter() - t0)

            # The same through the low-level module (no stream lookup, positional arguments).
            core = plan._plan
            t0 = time.perf_counter()
            core.reset(x, 0)
            for k in range(steps):
                core.step_channel(k)
                core.step(x, model, 0)
            record(("core+trivial", n), time.perf_counter() - t0)

    print(f"DDPM, d = {d}, {steps} steps, K = 25 isotropic mixture, CPU executor ({ds.cpu_threads()} threads), "
          f"best of {args.rounds} interleaved rounds")
    print(f"{'chains':>8} {'loop':>13} {'chain-steps/s':>14} {'us/step':>9} {'vs fused':>9}")
    for n in sizes:
        fused = best[("fused", n)]
        for loop in ("fused", "plan+mixture", "plan+trivial", "core+trivial"):
            t = best[(loop, n)]
            print(f"{n:>8} {loop:>13} {n * steps / t:>14.3e} {1e6 * t / steps:>9.1f} {fused / t:>8.2f}x")
    for loop, what in (("plan+trivial", "DiffusionPlan.step"), ("core+trivial", "diffsample._core")):
        t1 = best[(loop, sizes[0])]
        print(f"overhead per plan step from Python through {what} (n = {sizes[0]}, trivial model, step_channel "
              f"included): {1e6 * t1 / steps:.1f} us")


if __name__ == "__main__":
    main()
