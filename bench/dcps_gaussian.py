#!/usr/bin/env python3
"""Where DCPS's data misfit comes from, on a Gaussian prior (README "DCPS", "At small sigma_y"): this library's form
of DCPS (bench/dcps_numpy.py's denoiser and bridge; the library's grid and blocks) in FP64, with the variational fit
of each twisted kernel done three ways:

  sgd        the algorithm: G normalised stochastic gradient steps on the one-draw KL (mean by rho sig sqrt(d),
             log-scales by rho sqrt(d)), started at the DDPM kernel (seed 002, published posterior_samplers/dcps.py)
  meanfield  the KL's exact optimum over mean-field Gaussians (what the fit tends to as its steps converge): on a
             Gaussian prior the twisted kernel is N(m, P^-1), and the optimum is N(m, diag(P)^-1)
  full       the twisted kernel itself (no variational error: the point-mass potentials' own bias only)

The problem is GuidedSamplers.SmallSigmaYResidualKeepsTheDataMisfit's kind (N(mu, I) in d = 32, mu_j integers in
[5, 10], two rows of A in multiples of 1/8 in [1, 2], y = A x of a prior draw: |y| about 350; NumPy's own draws, not
the test's). Printed per sigma_y and setting: the mean |A x - y|^2 of the samples and its ratio to the exact
posterior's (closed form).

usage: python3 bench/dcps_gaussian.py [--samples 1024] [--sigma-y 1,0.1,1e-3] [--seed 1]
"""
import argparse
import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcps_numpy as dn  # noqa: E402


def problem(sigma_y, seed=7, d=32, dy=2):
    g = np.random.default_rng(seed)
    mu = np.round(5 + 5 * g.random(d))
    A = np.round(8 + 8 * g.random((dy, d))) / 8
    y = A @ (np.round(4 * (mu + g.standard_normal(d))) / 4)
    inst = types.SimpleNamespace(d_x=d, mu=mu[None, :], w=np.array([1.0]), A=A, y=y, sigma_y=sigma_y)
    C = np.linalg.inv(np.eye(d) + A.T @ A / sigma_y ** 2)
    m = C @ (mu + A.T @ y / sigma_y ** 2)
    return inst, float(np.sum((A @ m - y) ** 2) + np.trace(A @ C @ A.T))


def dcps(inst, n, rng, steps=50, blocks=4, langevin=50, gamma=1e-3, grad_steps=2, rho=0.1, fit="sgd"):
    d = inst.d_x
    A, y, sy2, mu0 = inst.A, inst.y, inst.sigma_y ** 2, inst.mu[0]
    pts = dn.dp.library_grid(steps)
    per = steps // blocks
    x = pts[0][1] * rng.standard_normal((n, d))
    for b in range(blocks):
        U, T = b * per, (steps if b == blocks - 1 else (b + 1) * per)
        (aT, sT), (aU, sU) = pts[T], pts[U]
        ys = aT * y
        cx, cm, _ = dn.bridge(aU, sU, aT, sT)
        for _ in range(langevin):
            m, _ = dn.denoiser_jvp(inst, x, aU, sU)
            g = (ys[None] - (cx * x + cm * m) @ A.T) @ A / sy2
            _, jg = dn.denoiser_jvp(inst, x, aU, sU, g)
            G = (aU * m - x) / sU ** 2 + cx * g + cm * jg
            x = x + gamma / (1 + gamma * np.linalg.norm(G, axis=1, keepdims=True)) * G + \
                np.sqrt(2 * gamma) * rng.standard_normal(x.shape)
        for j in range(U, T):
            (at, st), (ap, sp) = pts[j], pts[j + 1]
            m, _ = dn.denoiser_jvp(inst, x, at, st)
            c1, c0, sig = dn.bridge(at, st, ap, sp)
            mu_p = c0 * m + c1 * x
            if sig == 0:
                x = mu_p
                continue
            bx, bm, _ = dn.bridge(ap, sp, aT, sT)
            if fit == "sgd":
                mean, ls = mu_p.copy(), np.full_like(mu_p, np.log(sig))
                for _ in range(grad_steps):
                    eps = rng.standard_normal(x.shape)
                    sd = np.exp(ls)
                    q = mean + sd * eps
                    mq, _ = dn.denoiser_jvp(inst, q, ap, sp)
                    gq = (ys[None] - (bx * q + bm * mq) @ A.T) @ A / sy2
                    gq = bx * gq + (bm * dn.denoiser_jvp(inst, q, ap, sp, gq)[1] if bm != 0 else 0)
                    gm = -gq + (mean - mu_p) / sig ** 2
                    gl = -gq * sd * eps + sd * sd / sig ** 2 - 1
                    mean = mean - rho * sig * np.sqrt(d) * gm / (1e-30 + np.linalg.norm(gm, axis=1, keepdims=True))
                    ls = ls - rho * np.sqrt(d) * gl / (1e-30 + np.linalg.norm(gl, axis=1, keepdims=True))
                x = mean + np.exp(ls) * rng.standard_normal(x.shape)
                continue
            k = ap / (ap * ap + sp * sp)  # on N(mu0, I): m(x') = (1 - k ap) mu0 + k x', the bridge mean c x' + b
            c, off = bx + bm * k, bm * (1 - k * ap) * mu0
            P = np.eye(d) / sig ** 2 + c * c * A.T @ A / sy2
            mean = np.linalg.solve(P, (mu_p / sig ** 2 + (c * (ys - A @ off) @ A / sy2)[None]).T).T
            if fit == "meanfield":
                x = mean + rng.standard_normal(x.shape) / np.sqrt(np.diag(P))[None]
            else:
                x = mean + rng.standard_normal(x.shape) @ np.linalg.cholesky(np.linalg.inv(P)).T
    return x


SETTINGS = [("defaults (K = 50, L = 4, M = 50, G = 2, rho = 0.1)", {}), ("G = 8", dict(grad_steps=8)),
            ("G = 32", dict(grad_steps=32)), ("G = 128", dict(grad_steps=128)),
            ("G = 128, rho = 0.02", dict(grad_steps=128, rho=0.02)), ("M = 0", dict(langevin=0)),
            ("M = 500", dict(langevin=500)), ("L = 1", dict(blocks=1)), ("L = 10", dict(blocks=10)),
            ("K = 200", dict(steps=200)), ("K = 200, G = 32", dict(steps=200, grad_steps=32)),
            ("the fits at the mean-field optimum", dict(fit="meanfield")),
            ("the twisted kernels exactly", dict(fit="full"))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--sigma-y", default="1,0.1,1e-3")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print("| sigma_y | setting | misfit | / exact |\n|---|---|---|---|")
    for sy in [float(v) for v in args.sigma_y.split(",")]:
        inst, exact = problem(sy)
        for label, kw in SETTINGS:
            x = dcps(inst, args.samples, np.random.default_rng(args.seed), **kw)
            mf = float(np.mean(np.sum((x @ inst.A.T - inst.y[None]) ** 2, 1)))
            print(f"| {sy:g} | {label} | {mf:.4g} | {mf / exact:.3g} |", flush=True)
        print(f"| {sy:g} | exact posterior | {exact:.3g} | 1 |", flush=True)


if __name__ == "__main__":
    main()
