"""Chain-steps per second of a plan-driven DDPM loop from Python against the fused sampler, on the CPU executor (NumPy
arrays, PyTorch CPU tensors) or the CUDA executor (PyTorch CUDA tensors: --arrays cuda).

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
arrays, PyTorch CPU tensors (each crosses by DLPack, read in place), PyTorch CUDA tensors ("cuda": the loops run on
the CUDA executor on PyTorch's current stream, each timed to a torch.cuda.synchronize()), or several, interleaved within each round (the
same n on both, one after the other). With both, it also prints each loop's torch / numpy time ratio within a round
(median over the rounds, and their range) and, at the smallest n, the per-step difference: on a shared machine these
hold better than the absolute times, which move with the load.
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
    ap.add_argument("--arrays", default="numpy",
                    help="comma-separated: numpy, torch (PyTorch CPU tensors), cuda (PyTorch CUDA tensors)")
    args = ap.parse_args()
    frameworks = args.arrays.split(",")
    torch = None
    if "torch" in frameworks or "cuda" in frameworks:
        import torch

    def empty(fw, n, d):
        if fw == "numpy":
            return np.empty((n, d), dtype=np.float32)
        return torch.empty(n, d, device="cuda" if fw == "cuda" else "cpu")

    def now(fw):
        """The time, after the GPU's queued work where the loop runs on it."""
        if fw == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    d, steps = args.dim, args.steps
    mix = ds.GaussianMixture.grid(d, 5, 2.0, 0.05)
    sizes = [int(v) for v in args.chains.split(",")]
    best = {}
    times = {}  # every round's time, for the ratios within a round

    for _ in range(args.rounds):
        for n, fw in [(n, fw) for n in sizes for fw in frameworks]:
            x = empty(fw, n, d)
            model = empty(fw, n, d)
            model[:] = 0

            def record(key, seconds, fw=fw):
                best[(fw,) + key] = min(best.get((fw,) + key, float("inf")), seconds)
                times.setdefault((fw,) + key, []).append(seconds)

            plan = ds.DiffusionPlan(n, d, output="denoiser", sampler="ddpm", steps=steps, seed=1,
                                    device="cuda" if fw == "cuda" else "cpu")
            ds.diffusion(mix, out=x, sampler="ddpm", steps=steps, seed=1)  # warm-up
            t0 = now(fw)
            ds.diffusion(mix, out=x, sampler="ddpm", steps=steps, seed=1)
            record(("fused", n), now(fw) - t0)

            t0 = now(fw)
            plan.reset(x)
            for k in range(steps):
                a, s = plan.step_channel(k)
                mix.denoiser(x, a, s, out=model)
                plan.step(x, model)
            record(("plan+mixture", n), now(fw) - t0)

            model[:] = 0
            t0 = now(fw)
            plan.reset(x)
            for k in range(steps):
                plan.step_channel(k)
                plan.step(x, model)
            record(("plan+trivial", n), now(fw) - t0)

            # The same through the low-level module (no stream lookup, positional arguments).
            core = plan._plan
            t0 = now(fw)
            core.reset(x, 0)
            for k in range(steps):
                core.step_channel(k)
                core.step(x, model, 0)
            record(("core+trivial", n), now(fw) - t0)

    loops = ("fused", "plan+mixture", "plan+trivial", "core+trivial")

    def per_step_difference(a, b):
        """Round by round, the per-step time of a minus b, in us."""
        return 1e6 * (np.array(times[a]) - np.array(times[b])) / steps

    versions = f"NumPy {np.__version__}" + (f", PyTorch {torch.__version__}" if torch else "")
    where = ("CUDA executor (cuda arrays), " if "cuda" in frameworks else "") + (
        f"CPU executor ({ds.cpu_threads()} threads)" if frameworks != ["cuda"] else "")
    print(f"DDPM, d = {d}, {steps} steps, K = 25 isotropic mixture, {where}, "
          f"best of {args.rounds} interleaved rounds, {versions}")
    print(f"{'arrays':>6} {'chains':>8} {'loop':>13} {'chain-steps/s':>14} {'us/step':>9} {'vs fused':>9}")
    for n in sizes:
        for fw in frameworks:
            fused = best[(fw, "fused", n)]
            for loop in loops:
                t = best[(fw, loop, n)]
                print(f"{fw:>6} {n:>8} {loop:>13} {n * steps / t:>14.3e} {1e6 * t / steps:>9.1f} {fused / t:>8.2f}x")
    if "numpy" in frameworks and "torch" in frameworks:
        print(f"torch / numpy time ratio within a round: median over {args.rounds} rounds [min .. max]")
        for n in sizes:
            for loop in loops:
                r = np.array(times[("torch", loop, n)]) / np.array(times[("numpy", loop, n)])
                print(f"{n:>8} {loop:>13} {np.median(r):>6.2f}x  [{r.min():.2f} .. {r.max():.2f}]")
        for loop in ("plan+mixture", "plan+trivial", "core+trivial"):
            diff = per_step_difference(("torch", loop, sizes[0]), ("numpy", loop, sizes[0]))
            print(f"torch - numpy per step at n = {sizes[0]}, {loop}: median {np.median(diff):.1f} us "
                  f"[{diff.min():.1f} .. {diff.max():.1f}]")
    # What the package's step adds to the binding's (argument checks, stream lookup), within each round.
    for fw in frameworks:
        diff = per_step_difference((fw, "plan+trivial", sizes[0]), (fw, "core+trivial", sizes[0]))
        print(f"DiffusionPlan.step - diffsample._core step on {fw} at n = {sizes[0]}: median {np.median(diff):.1f} us "
              f"[{diff.min():.1f} .. {diff.max():.1f}]")
    for fw in frameworks:
        for loop, what in (("plan+trivial", "DiffusionPlan.step"), ("core+trivial", "diffsample._core")):
            t1 = best[(fw, loop, sizes[0])]
            print(f"overhead per plan step from Python through {what} on {fw} arrays (n = {sizes[0]}, trivial "
                  f"model, step_channel included): {1e6 * t1 / steps:.1f} us")


if __name__ == "__main__":
    main()
