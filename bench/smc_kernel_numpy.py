#!/usr/bin/env python3
"""NumPy copy of guided SMC (linear potentials, the library's defaults) on the 25-component benchmark of
bench/posterior_table.py, to measure backward kernels before building them: the DDPM kernel the library runs
(order 1) against a second-order multistep kernel (order 2: SDE-DPM-Solver++(2M), midpoint form), which replaces the
denoiser m_k in the kernel mean c0 m + c1 x by m_k + (m_k - m_{k-1}) / (2 r_k), r_k = h_{k-1} / h_k, h the steps in
lambda = log(a / s), m_{k-1} the particle's own previous denoiser output (carried through resampling with its
ancestor). Same variance, same number of denoiser evaluations; the first step and the last (to s = 0) stay order 1.

Two measurements:
- --prior: unconditional sampling of the prior only, reduced to its exact 2-D part (the means span two directions
  with coordinates 8 sqrt(d_x / 2) (i, j); the other d_x - 2 coordinates are N(0, 1), independent of the mode, and
  do not move the mode weights), many samples: the total variation of the mode shares against the prior's weights;
- the filter (default): 2000 particles x 100 steps, systematic resampling at ESS < N / 2, the exact Gaussian
  mutation of the linear potentials N(a_k y; A x, (a_k^2 sigma_y^2 + s_k^2 c) I), c = 4 trace(A A^T) / d_y, on the
  instances and seeds of posterior_table.py (instances' seed 0), scored as it scores (SW, dw against the exact
  posterior), with a paired comparison of the orders.

usage: python3 bench/smc_kernel_numpy.py [--dx 10] [--instances 20] [--start gauss|exact]
           [--prior --samples 20000 --kernels 1,2,analytic,analytic_plane]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from posterior_table import Instance, sliced_w1, tv  # noqa: E402


def vp_linear(t):
    ab = np.exp(-(0.1 * t + 9.95 * t * t))
    return np.sqrt(ab), np.sqrt(1 - ab)


def denoise(mu, w, x, a, s):
    v = a * a + s * s
    d2 = (x * x).sum(1)[:, None] - 2 * a * x @ mu.T + a * a * (mu * mu).sum(1)[None]
    lc = np.log(w)[None] - 0.5 * d2 / v
    lc -= lc.max(1, keepdims=True)
    r = np.exp(lc)
    r /= r.sum(1, keepdims=True)
    return (1 - a * a / v) * (r @ mu) + (a / v) * x


def kernel(pts, k):
    """DDPM kernel N(c0 m + c1 x, sig2 I) from point k to k + 1."""
    (a, s), (an, sn) = pts[k], pts[k + 1]
    r = a / an
    vr = s * s - r * r * sn * sn
    return an * vr / (s * s), r * sn * sn / (s * s), sn * sn * vr / (s * s)


def extrapolate(pts, k, m, m_prev, order):
    if order == 1 or m_prev is None or pts[k + 1][1] == 0:
        return m
    lam = [np.log(a / s) for a, s in pts[k - 1:k + 2]]
    r = (lam[1] - lam[0]) / (lam[2] - lam[1])
    return m + (m - m_prev) / (2 * r)


def systematic(lw, rng):
    w = np.exp(lw - lw.max())
    w /= w.sum()
    n = len(w)
    return np.minimum(np.searchsorted(np.cumsum(w), (rng.uniform() + np.arange(n)) / n), n - 1)


def smc(inst, n, steps, rng, order, start):
    A, y, sy = inst.A, inst.y, inst.sigma_y
    c = 4 * np.trace(A @ A.T) / A.shape[0]
    pts = [vp_linear(t) for t in np.linspace(1, 0, steps + 1)]
    var = [a * a * sy * sy + s * s * c for a, s in pts]

    def log_g(k, x):
        r = pts[k][0] * y[None] - x @ A.T
        return -0.5 * (r * r).sum(1) / var[k]

    a0, s0 = pts[0]
    if start == "exact":  # exact draws of the diffused prior (what the start correction weights towards)
        x = a0 * inst.mu[rng.choice(25, size=n, p=inst.w)] + rng.standard_normal((n, inst.d_x))
    else:
        x = s0 * rng.standard_normal((n, inst.d_x))
    lw = log_g(0, x)
    m_prev = None
    for k in range(steps):
        a, s = pts[k]
        an = pts[k + 1][0]
        m = denoise(inst.mu, inst.w, x, a, s)
        c0, c1, sig2 = kernel(pts, k)
        mean = c0 * extrapolate(pts, k, m, m_prev, order) + c1 * x
        S_inv = np.linalg.inv(var[k + 1] * np.eye(A.shape[0]) + sig2 * A @ A.T)
        res = an * y[None] - mean @ A.T
        lw = lw - 0.5 * np.einsum("ni,ij,nj->n", res, S_inv, res) - log_g(k, x)
        w = np.exp(lw - lw.max())
        if w.sum() ** 2 / (w * w).sum() < 0.5 * n:
            idx = systematic(lw, rng)
            mean, m, lw = mean[idx], m[idx], np.zeros(n)
        xp = mean + np.sqrt(sig2) * rng.standard_normal(mean.shape)
        t = an * y[None] - xp @ A.T - np.sqrt(var[k + 1]) * rng.standard_normal((n, A.shape[0]))
        x = xp + sig2 * (t @ S_inv) @ A
        m_prev = m
    return x[systematic(lw, rng)]


def prior_2d(w, d_x, n, steps, rng, order, start):
    """Mode-weight TV of unconditional sampling. order: 1, 2, "analytic" (DDPM with the variance
    sig^2 + c0^2 gamma_k, gamma_k = E tr Cov(x0 | x_k) / d_x over the samples: the optimal scalar variance of Bao et al.
    2022, which the d_x - 2 Gaussian coordinates enter with s^2 / (a^2 + s^2) each) or "analytic_plane" (the
    between-mode part of that variance put in the means' plane only, as a full Cov(x0 | x) would)."""
    grid = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], float)
    mu = 8 * np.sqrt(d_x / 2) * grid
    pts = [vp_linear(t) for t in np.linspace(1, 0, steps + 1)]
    a0, s0 = pts[0]
    if start == "exact":
        x = a0 * mu[rng.choice(25, size=n, p=w)] + rng.standard_normal((n, 2))
    else:
        x = s0 * rng.standard_normal((n, 2))
    m_prev = None
    for k in range(steps):
        a, s = pts[k]
        m = denoise(mu, w, x, a, s)
        c0, c1, sig2 = kernel(pts, k)
        if order in ("analytic", "analytic_plane"):
            # tr Cov(x0 | x) in the plane: the within-mode part 2 s^2 / v plus the responsibilities' spread of the
            # component means (mean of |m_j|^2 minus |m|^2), from the same denoiser's parts
            v = a * a + s * s
            d2 = (x * x).sum(1)[:, None] - 2 * a * x @ mu.T + a * a * (mu * mu).sum(1)[None]
            lc = np.log(w)[None] - 0.5 * d2 / v
            r = np.exp(lc - lc.max(1, keepdims=True))
            r /= r.sum(1, keepdims=True)
            mk = mu[None] + (a / v) * (x[:, None, :] - a * mu[None])
            plane = 2 * s * s / v + (r * (mk * mk).sum(-1)).sum(1) - (m * m).sum(1)
            if order == "analytic":
                sig2 = sig2 + c0 * c0 * (plane.mean() + (d_x - 2) * s * s / v) / d_x
            else:
                sig2 = sig2 + c0 * c0 * plane.mean() / 2
            order_used = 1
        else:
            order_used = order
        x = c0 * extrapolate(pts, k, m, m_prev, order_used) + c1 * x + np.sqrt(sig2) * rng.standard_normal(x.shape)
        m_prev = m
    d2 = (x * x).sum(1)[:, None] - 2 * x @ mu.T + (mu * mu).sum(1)[None]
    counts = np.bincount(np.argmax(np.log(w)[None] - 0.5 * d2, 1), minlength=25)
    return tv(counts, w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dx", type=int, default=10)
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--start", default="gauss", choices=["gauss", "exact"])
    ap.add_argument("--prior", action="store_true", help="unconditional 2-D reduction of the prior only")
    ap.add_argument("--samples", type=int, default=20000, help="with --prior: samples per instance")
    ap.add_argument("--kernels", default="1,2", help="with --prior: kernels to run (1, 2, analytic, analytic_plane)")
    args = ap.parse_args()
    d_x = args.dx
    rng = np.random.default_rng([0, d_x, 1])
    insts = [Instance(rng, d_x, 1) for _ in range(args.instances)]
    if args.prior:
        floor = [tv(np.random.default_rng([i, 3]).multinomial(args.samples, x.w), x.w) for i, x in enumerate(insts)]
        print(f"d_x {d_x}, prior only, {args.samples} samples, start {args.start}: floor {np.mean(floor):.4f}")
        for order in [int(v) if v.isdigit() else v for v in args.kernels.split(",")]:
            e = [prior_2d(x.w, d_x, args.samples, args.steps, np.random.default_rng([i, 5]), order, args.start)
                 for i, x in enumerate(insts)]
            print(f"order {order}: mode-weight TV {np.mean(e):.4f} +- {np.std(e, ddof=1) / np.sqrt(len(e)):.4f}",
                  flush=True)
        return
    res = {1: [], 2: []}
    for i, inst in enumerate(insts):
        seed = 1 + i
        for order in (1, 2):
            srng = np.random.default_rng([seed, d_x, 1, 7])
            x = smc(inst, args.particles, args.steps, srng, order, args.start)
            res[order].append((sliced_w1(x, inst.sample(len(x), srng), 100, srng), tv(inst.shares(x), inst.post_w)))
        print(f"instance {i}: " + "  ".join(f"order {o} SW {res[o][-1][0]:.3f} dw {res[o][-1][1]:.4f}" for o in (1, 2)),
              flush=True)
    for o in (1, 2):
        v = np.array(res[o])
        print(f"order {o}: SW {np.median(v[:, 0]):.3f} / {v[:, 0].mean():.3f} +- {v[:, 0].std(ddof=1):.3f}, "
              f"dw {v[:, 1].mean():.4f} +- {v[:, 1].std(ddof=1):.4f}")
    for j, name in ((1, "dw"), (0, "SW")):
        dd = np.array(res[2])[:, j] - np.array(res[1])[:, j]
        print(f"paired {name} change (order 2 - order 1): {dd.mean():+.4f} +- {dd.std(ddof=1) / np.sqrt(len(dd)):.4f} "
              f"(se over {len(dd)} instances); lower on {int(np.sum(dd < 0))}")


if __name__ == "__main__":
    main()
