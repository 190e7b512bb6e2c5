#!/usr/bin/env python3
"""The guided SMC's ask/tell plan (the neural-prior route: the caller's model answers every ask) with and without
final moves, on the 25-component mixture benchmark of bench/posterior_table.py, scored as that table scores: sliced W1
(100 directions) to as many exact posterior samples, its median over instances against the exact-vs-exact floor, the
mode-weight error dw, and the within-mode SW.

The model is the mixture's own score (GaussianMixture.score, direct path), standing in for a network that answers
scores, or with --output denoiser its denoiser (a network answering x0; the moves then ask at the last transition's
channel and target the prior smoothed to that noise): the plan sees nothing but its answers at the points and
channels it asks for, so the rows measure what such a model's caller gets. Rows (each on the same instances and seeds): the plan's default potentials (linear in a
plan) without moves, and with K moves for each K of --moves (final_move_curvature 1, the components' unit
variances). Seconds are the plan's wall time per run (model calls included) on the executor of the installed package.

usage: python3 bench/plan_final_moves.py [--dx 100] [--dy 1,16] [--instances 10] [--particles 2000] [--steps 100]
           [--moves 4,20] [--seed 0] [--output score|denoiser]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import posterior_table as pt  # noqa: E402  (the benchmark's instances and scores)

import diffsample as ds  # noqa: E402


def plan_samples(inst, mix, particles, steps, moves, seed, output):
    plan = ds.SamplingPlan.guided(inst.d_x, inst.A, inst.y, inst.sigma_y, sampler="smc", output=output,
                                  particles=particles, steps=steps, seed=seed, final_moves=moves,
                                  **({"final_move_curvature": 1.0} if moves > 0 else {}))
    model = mix.score if output == "score" else mix.denoiser
    t0 = time.perf_counter()
    plan.run(lambda x, a, s: model(np.ascontiguousarray(x), a, s, path="direct"))
    x = np.asarray(plan.outputs(("samples",))["samples"], dtype=np.float64).reshape(-1, inst.d_x)
    return x, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dx", type=int, default=100)
    ap.add_argument("--dy", default="1,16")
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--moves", default="4,20")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", choices=("score", "denoiser"), default="score")
    args = ap.parse_args()
    moves = [0] + [int(v) for v in args.moves.split(",")]
    print(f"guided SMC plan, output='{args.output}' (the mixture's own as the model), linear potentials (the plan's "
          f"default); d_x = {args.dx}, {args.particles} particles, {args.steps} steps, {args.instances} instances")
    for d_y in (int(v) for v in args.dy.split(",")):
        rng = np.random.default_rng(args.seed)
        rows = {k: [] for k in ["floor"] + moves}
        secs = {k: [] for k in moves}
        for i in range(args.instances):
            inst = pt.Instance(rng, args.dx, d_y)
            mix = ds.GaussianMixture(inst.w, inst.mu, [1.0] * 25)
            srng = np.random.default_rng(1000 + i)
            ref = inst.sample(args.particles, srng)
            rows["floor"].append(pt.score(inst, inst.sample(args.particles, srng), srng, (ref, 77 + i)))
            for k in moves:
                x, t = plan_samples(inst, mix, args.particles, args.steps, k, args.seed + 1 + i, args.output)
                rows[k].append(pt.score(inst, x, srng, (ref, 77 + i)))
                secs[k].append(t)
        floor = np.median([r[0] for r in rows["floor"]])
        print(f"\nd_y = {d_y}")
        print("| row | SW median (x floor) | SW mean | dw mean | SW within (median) | seconds per run |")
        print("|---|---|---|---|---|---|")
        for k in ["floor"] + moves:
            sw = np.array([r[0] for r in rows[k]])
            dw = np.array([r[1] for r in rows[k]])
            within = np.array([r[2] for r in rows[k]])
            label = "exact (floor)" if k == "floor" else f"plan, {k} final moves"
            t = f"{np.mean(secs[k]):.2f}" if k != "floor" else ""
            print(f"| {label} | {np.median(sw):.3f} ({np.median(sw) / floor:.2f}x) | {sw.mean():.3f} | "
                  f"{dw.mean():.4f} | {np.median(within):.3f} | {t} |")


if __name__ == "__main__":
    main()
