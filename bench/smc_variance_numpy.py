#!/usr/bin/env python3
"""The twisted filter's backward-kernel covariance: the DDPM kernel's sig^2 I against sig^2 I + c0^2 Cov(x0 | x)
restricted to the operator's directions (a NumPy prototype, d_y small).

The DDPM kernel from point k to k + 1 is N(c0 m + c1 x, sig^2 I): the forward process's bridge q(x' | x, x0) with x0
replaced by the denoiser m = E[x0 | x]. Its exact second moment given x is sig^2 I + c0^2 Cov(x0 | x) (the
optimal-variance kernel of Bao et al. 2022); the d_y JVPs the twisted potentials already take give Cov A^T and
A Cov A^T, hence the rank-d_y part B B^T, B = c0 Cov A^T L^-T (L L^T = A Cov A^T), which is the full term's
restriction to the directions A^T that the likelihood reads. "ov" runs the twisted filter with that kernel, N(c0 m +
c1 x, sig^2 I + B B^T), as the prior's transition and as the proposal's covariance (the proposal mean moved by
(sig^2 I + B B^T) grad log g_k); the weights carry the ratio of the two Gaussians. Rows: the twisted filter with the
multistep kernel (the library's default, order 2) and with the DDPM kernel (order 1), each with and without "ov";
exact start draws, ESS threshold 0.2, seed-002 instances as posterior_table.py builds them. Scores: SW and the mode
shares' total variation (dw) against the exact posterior, paired over the instances.

    python3 bench/smc_variance_numpy.py [--dx 10] [--dy 1] [--instances 20] [--particles 65536] [--steps 100]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from posterior_table import Instance, sliced_w1, tv  # noqa: E402
from smc_kernel_numpy import extrapolate, kernel, systematic, vp_linear  # noqa: E402
from smc_spread_numpy import ess, mode_of, moment_parts, start_draws  # noqa: E402


def twisted(inst, n, steps, rng, order=2, ov=False, ess_threshold=0.2, unconditional=False):
    A, y, sy = inst.A, inst.y, inst.sigma_y
    dy = A.shape[0]
    pts = [vp_linear(t) for t in np.linspace(1, 0, steps + 1)]

    def potential(x, k):
        a, s = pts[k]
        if s == 0:
            r = y[None] - x @ A.T
            lg = np.zeros(len(x)) if unconditional else -0.5 * (r * r).sum(1) / sy ** 2
            return lg, np.zeros_like(x), x, None, None
        m, a_cov_a, cov_a = moment_parts(inst, x, a, s)
        acv = 0.5 * (a_cov_a + a_cov_a.transpose(0, 2, 1))
        if unconditional:
            return np.zeros(len(x)), np.zeros_like(x), m, acv, cov_a
        V = sy * sy * np.eye(dy)[None] + acv
        r = y[None] - m @ A.T
        Vr = np.linalg.solve(V, r[:, :, None])[:, :, 0]
        lg = -0.5 * (r * Vr).sum(1) - 0.5 * np.linalg.slogdet(V)[1]
        grad = (a / (s * s)) * np.einsum("njo,no->nj", cov_a, Vr)
        return lg, grad, m, acv, cov_a

    x = start_draws(inst, n, pts, rng, "exact")
    lg, grad, m, acv, cov_a = potential(x, 0)
    lw = np.zeros(n)
    m_prev = None
    resamplings = 0
    for k in range(steps):
        c0, c1, sig2 = kernel(pts, k)
        mu = c0 * extrapolate(pts, k, m, m_prev, order) + c1 * x
        if ess(lw) < ess_threshold * n:
            idx = systematic(lw, rng)
            x, lg, grad, mu, m, lw = x[idx], lg[idx], grad[idx], mu[idx], m[idx], np.zeros(n)
            acv, cov_a = acv[idx], cov_a[idx]
            if m_prev is not None:
                m_prev = m_prev[idx]
            resamplings += 1
        if ov and sig2 > 0:
            L = np.linalg.cholesky(acv + 1e-12 * np.eye(dy)[None])
            # B = c0 Cov A^T L^-T (n x d x d_y): B B^T = c0^2 Cov A^T (A Cov A^T)^-1 A Cov
            B = c0 * np.linalg.solve(L, cov_a.transpose(0, 2, 1)).transpose(0, 2, 1)
            M = sig2 * np.eye(dy)[None] + np.einsum("njo,njc->noc", B, B)

            def sigma_inv(v):  # (sig^2 I + B B^T)^-1 v by Woodbury
                t = np.linalg.solve(M, np.einsum("njo,nj->no", B, v)[:, :, None])[:, :, 0]
                return (v - np.einsum("njo,no->nj", B, t)) / sig2

            shift = sig2 * grad + np.einsum("njo,no->nj", B, np.einsum("njo,nj->no", B, grad))
            noise = np.sqrt(sig2) * rng.standard_normal(mu.shape) + np.einsum(
                "njo,no->nj", B, rng.standard_normal((n, dy)))
            xp = mu + shift + noise
            dd = xp - mu
            log_p_over_q = 0.5 * (((dd - shift) * sigma_inv(dd - shift)).sum(1) - (dd * sigma_inv(dd)).sum(1))
        else:
            shift = sig2 * grad
            xp = mu + shift + np.sqrt(sig2) * rng.standard_normal(mu.shape)
            dd = xp - mu
            log_p_over_q = ((((dd - shift) ** 2).sum(1) - (dd * dd).sum(1)) / (2 * sig2)) if sig2 > 0 else 0.0
        lgp, gradp, mp, acvp, cov_ap = potential(xp, k + 1)
        lw = lw + lgp - lg + log_p_over_q
        x, lg, grad, m_prev, m, acv, cov_a = xp, lgp, gradp, m, mp, acvp, cov_ap
    return x[systematic(lw, rng)], resamplings


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dx", type=int, default=10)
    ap.add_argument("--dy", type=int, default=1)
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--particles", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rows", default="ms,ms_ov,ddpm,ddpm_ov")
    ap.add_argument("--unconditional", action="store_true",
                    help="flat potentials: the chain's own x0 marginal against the prior (mode shares, variance along A)")
    args = ap.parse_args()
    rng = np.random.default_rng([0, args.dx, args.dy])
    insts = [Instance(rng, args.dx, args.dy) for _ in range(max(args.instances, 20))]
    rows = args.rows.split(",")
    res = {r: [] for r in ["floor"] + rows}
    for i, inst in enumerate(insts[:args.instances]):
        line = f"instance {i} (sigma_y {inst.sigma_y:.3g}):"
        target_w = inst.w if args.unconditional else inst.post_w
        for r in ["floor"] + rows:
            srng = np.random.default_rng([1 + i, args.dx, args.dy, 7])
            if r == "floor":
                if args.unconditional:
                    x = inst.mu[srng.choice(25, size=args.particles, p=inst.w)] + srng.standard_normal(
                        (args.particles, args.dx))
                else:
                    x = inst.sample(args.particles, np.random.default_rng([1 + i, args.dx, args.dy, 8]))
            else:
                x, _ = twisted(inst, args.particles, args.steps, srng, 2 if r.startswith("ms") else 1,
                               r.endswith("_ov"), unconditional=args.unconditional)
            ref_rng = np.random.default_rng([1 + i, args.dx, args.dy, 9])
            dw = tv(np.bincount(mode_of(inst, x), minlength=25).astype(float), target_w)
            if args.unconditional:  # within-mode variance along A's first row (unit-variance components)
                k = mode_of(inst, x)
                a0 = inst.A[0] / np.linalg.norm(inst.A[0])
                sw = np.mean(((x - inst.mu[k]) @ a0) ** 2)
            else:
                sw = sliced_w1(x, inst.sample(len(x), ref_rng), 100, ref_rng)
            res[r].append((sw, dw))
            line += f"  {r}: {'var' if args.unconditional else 'SW'} {sw:.3f} dw {dw:.4f}"
        print(line, flush=True)
    print(f"d_x {args.dx}, d_y {args.dy}, {args.instances} instances, {args.particles} particles x {args.steps} steps"
          + (", unconditional (variance along A, exact 1)" if args.unconditional else ""))
    for r, v in res.items():
        v = np.array(v)
        print(f"{r}: {'var mean' if args.unconditional else 'SW median'} "
              f"{(v[:, 0].mean() if args.unconditional else np.median(v[:, 0])):.4f}, dw mean {v[:, 1].mean():.4f}")
    for base, alt in (("ms", "ms_ov"), ("ddpm", "ddpm_ov"), ("ms", "ddpm_ov")):
        if base in res and alt in res:
            a, b = np.array(res[alt]), np.array(res[base])
            for label, col in (("dw", 1), ("SW", 0)):
                dd = a[:, col] - b[:, col]
                print(f"paired {label} ({alt} - {base}): {dd.mean():+.4f} +- {dd.std(ddof=1) / np.sqrt(len(dd)):.4f},"
                      f" lower on {int(np.sum(dd < 0))} of {len(dd)}")


if __name__ == "__main__":
    main()
