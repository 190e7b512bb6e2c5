"""Chain-steps per second of a plan-driven DDPM loop from Python against the fused sampler, CPU executor.

    python3 bench/python_plan.py [--rounds 3] [--steps 100] [--dim 2] [--chains 1,1000,100000]
                                 [--arrays numpy,torch]

Three loops per batch size n, interleaved in each round (the best round is reported):
  fused        diffsample.diffusion(): every step of every chain in one call, on the mixture's exact denoiser;
  plan+mixture a Python loop over DiffusionPlan.step() with the mixture's denoiser as the model
               (GaussianMixture.denoiser into a preallocated buffer): what a caller's model costs when it is as cheap
               as the library's own;
  plan+trivial the same loop with a trivial model (a constant buffer, no work): the plan's own cost per step, Python
               call, stream lookup and argument checks included;
  core+trivial the same through diffsample._core (no stream lookup).
The overhead per step is the plan+trivial time per step at the smallest n (its work is then negligible).
--arrays names the arrays the loops run on (the state, the model's buffer, the fused sampler's output): NumPy
arrays, PyTorch CPU tensors (each crosses by DLPack, read in place), or both, interleaved within each round.
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
    ap.add_argument("--arrays", default="numpy", help="numpy, torch or numpy,torch (PyTorch CPU tensors)")
    args = ap.parse_args()
    frameworks = args.arrays.split(",")
    torch = None
    if "torch" in frameworks:
        import torch

    def empty(fw, n, d):
        return np.empty((n, d), dtype=np.float32) if fw == "numpy" else torch.empty(n, d)

    d, steps = args.dim, args.steps
    mix = ds.GaussianMixture.grid(d, 5, 2.0, 0.05)
    sizes = [int(v) for v in args.chains.split(",")]
    best = {}

    for _ in range(args.rounds):
        for n, fw in [(n, fw) for n in sizes for fw in frameworks]:
            x = empty(fw, n, d)
            model = empty(fw, n, d)
            model[:] = 0

            def record(key, seconds, fw=fw):
                best[(fw,) + key] = min(best.get((fw,) + key, float("inf")), seconds)

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

    versions = f"NumPy {np.__version__}" + (f", PyTorch {torch.__version__}" if torch else "")
    print(f"DDPM, d = {d}, {steps} steps, K = 25 isotropic mixture, CPU executor ({ds.cpu_threads()} threads), "
          f"best of {args.rounds} interleaved rounds, {versions}")
    print(f"{'arrays':>6} {'chains':>8} {'loop':>13} {'chain-steps/s':>14} {'us/step':>9} {'vs fused':>9}")
    for n in sizes:
        for fw in frameworks:
            fused = best[(fw, "fused", n)]
            for loop in ("fused", "plan+mixture", "plan+trivial", "core+trivial"):
                t = best[(fw, loop, n)]
                print(f"{fw:>6} {n:>8} {loop:>13} {n * steps / t:>14.3e} {1e6 * t / steps:>9.1f} {fused / t:>8.2f}x")
    for fw in frameworks:
        for loop, what in (("plan+trivial", "DiffusionPlan.step"), ("core+trivial", "diffsample._core")):
            t1 = best[(fw, loop, sizes[0])]
            print(f"overhead per plan step from Python through {what} on {fw} arrays (n = {sizes[0]}, trivial "
                  f"model, step_channel included): {1e6 * t1 / steps:.1f} us")


if __name__ == "__main__":
    main()
