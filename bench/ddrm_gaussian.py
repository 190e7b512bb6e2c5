#!/usr/bin/env python3
"""DDRM on a Gaussian prior, where the posterior is Gaussian and known: prior N(0, 1) in one dimension, observed
directly (A = [1]) with noise sigma_y, so p(x | y) = N(y / (1 + sigma_y^2), sigma_y^2 / (1 + sigma_y^2)). Prints the
sample mean and variance of guided_sample(..., sampler='ddrm') at the given steps (other options at their defaults:
eta 0.85, eta_b 1) beside the exact ones, with the standard errors of the sample mean and variance (normal theory,
sqrt(var / n) and var sqrt(2 / (n - 1))).

usage: python3 bench/ddrm_gaussian.py [--sigma-y 0.6] [--y 1.0] [--particles 100000] [--steps 20,100,1000] [--seed 1]
"""
import argparse

import numpy as np

import diffsample as ds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigma-y", type=float, default=0.6)
    p.add_argument("--y", type=float, default=1.0)
    p.add_argument("--particles", type=int, default=100000)
    p.add_argument("--steps", default="20,100,1000")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    prior = ds.GaussianMixture(weights=[1.0], means=[[0.0]], variances=[1.0])
    s2 = a.sigma_y ** 2
    print(f"exact posterior: mean {a.y / (1 + s2):.4f}, variance {s2 / (1 + s2):.4f}  "
          f"(sigma_y {a.sigma_y}, y {a.y}, {a.particles} samples per row)")
    print("steps  mean (se)            variance (se)")
    for steps in (int(s) for s in a.steps.split(",")):
        r = ds.guided_sample(prior, [[1.0]], [a.y], a.sigma_y, sampler="ddrm", particles=a.particles, seed=a.seed,
                             steps=steps)
        x = np.asarray(r["samples"], dtype=np.float64)[0, :, 0]
        n, m, v = x.size, x.mean(), x.var(ddof=1)
        print(f"{steps:5d}  {m:.4f} ({np.sqrt(v / n):.4f})  {v:.4f} ({v * np.sqrt(2 / (n - 1)):.4f})")


if __name__ == "__main__":
    main()
