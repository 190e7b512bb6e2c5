#!/usr/bin/env python3
"""Where guided SMC's mode-weight error comes from, and adaptive intermediate potentials, measured with the NumPy copy
of the filter in bench/smc_kernel_numpy.py (linear potentials N(a_k y; A x, v_k I), DDPM kernel, systematic
resampling at ESS < N / 2, exact Gaussian mutation, 2000 particles x 100 steps) on the instances of
bench/posterior_table.py (instances' seed 0).

Two measurements:

- --trace I[,I...]: on instance I, over --seeds runs, the Rao-Blackwellised estimate of the posterior mode weights
  carried by the particle system at step k: sum_i W_i p(m | x_k^i, y) with W_i proportional to the filter's weight
  times p(y | x_k^i) / g_k(x_k^i) (closed forms of the mixture: x_k | m ~ N(a mu_m, (a^2 + s^2) I), y | x_k, m ~
  N(A E[x0 | x_k, m], sigma_y^2 + (s^2 / (a^2 + s^2)) A A^T)), its total variation from the exact posterior weights
  at chosen steps (mean +- se over the runs; and that of the runs' average, the part common to the runs), and the
  ESS of those weights: what the particles at step k can still say about the final mode weights, so the steps where
  the error grows are where it is made;
- the default: adaptive potentials against the fixed ones, paired over --instances instances (one seed each, the
  same Philox-free NumPy streams for both). At each step the next potential's variance
  v_{k+1} = a_{k+1}^2 sigma_y^2 + s_{k+1}^2 c_{k+1} takes the sharpest c_{k+1} of the ladder c_def 2^(j / 2)
  (c_def = 4 trace(A A^T) / d_y, the library's default; j from --ladder LO,HI) whose weights keep
  ESS_after >= rho ESS_before (the first potential: ESS >= rho N), as adaptive tempering picks its exponents;
  --ladder 0,12 allows only flatter potentials than the default. The last point (s = 0) keeps the likelihood.

- --twisted: a twisted filter against the library's (linear potentials, exact Gaussian mutation), paired over
  --instances instances, SW (100 directions, against as many exact samples) and dw. Its potentials are the moment
  potentials of the library (`--potentials moment`), ghat_k(x) = N(y; A m(x), sigma_y^2 + A Cov(x0 | x) A^T) (m the
  denoiser, Cov(x0 | x) A^T = (s^2 / a) J A^T: d_y Jacobian-vector products for a neural prior; here the mixture's
  closed form of the same), and its proposal moves the particles by them, as the twisted diffusion sampler does
  (Wu et al. 2023): x' ~ N(mu(x) + sig^2 grad log ghat_k(x), sig^2 I), mu and sig the DDPM kernel's, with
  grad log ghat_k(x) = J A^T (y - A m(x)) / V (V's own dependence on x left out; J is symmetric, so the JVPs that
  give V give the gradient too); weights ghat_{k+1}(x') p(x' | x) / (ghat_k(x) q(x' | x)), resampling at ESS < N / 2,
  the last point (s = 0) the likelihood. Cost per particle and step: one denoiser and d_y JVPs, as the moment
  potentials. --dy sets d_y (instances as posterior_table.py builds them for that d_y). --multistep compares the
  twisted filter with the DDPM kernel against the same filter whose kernel mean (in p and q alike) takes the
  second-order multistep extrapolation of bench/smc_kernel_numpy.py, paired in the same way. --defensive
  KIND,EPS,KAPPA compares the twisted filter with the multistep kernel against the same filter with a defensive
  potential (1 - EPS) ghat_k + EPS gdef_k (see twisted_smc), scored against one set of reference samples and SW
  directions per run for every row, --runs seeds per instance (paired changes averaged per instance first), with each
  run's lowest ESS; with --instance, the runs with a collapse (lowest ESS below --ess-below) are counted.

usage: python3 bench/smc_spread_numpy.py [--dx 10] [--instances 20] [--rhos 0.98,0.99] [--ladder -12,10]
       python3 bench/smc_spread_numpy.py --trace 13,7 [--dx 10] [--seeds 8]
       python3 bench/smc_spread_numpy.py --twisted [--dx 10] [--instances 20] [--start gauss|exact] [--multistep]
       python3 bench/smc_spread_numpy.py --twisted --instance I [--seeds 8] [--dx 10] [--start gauss|exact]
       python3 bench/smc_spread_numpy.py --twisted --start exact --defensive inflate,0.1,16 [--dx 10] [--dy 1]
           [--particles 2000] [--runs 1] [--instance I --seeds 60 --ess-below 500]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from posterior_table import Instance, sliced_w1, tv  # noqa: E402
from smc_kernel_numpy import denoise, extrapolate, kernel, systematic, vp_linear  # noqa: E402


def ess(lw):
    w = np.exp(lw - lw.max())
    return w.sum() ** 2 / (w * w).sum()


def mode_of(inst, x):
    """Each sample's most probable component (p(k | x, y) = p(k | x) here)."""
    score = np.log(inst.w)[None, :] - 0.5 * (
        (x * x).sum(1)[:, None] - 2 * x @ inst.mu.T + (inst.mu * inst.mu).sum(1)[None, :])
    return np.argmax(score, 1)


def rao_blackwell(inst, x, lw, log_g, a, s):
    """Posterior mode weights estimated from particles x with log-weights lw that target p_k g_k (log g_k(x) =
    log_g), and the ESS of the weights that retarget them to p_k(x) p(y | x) (d_y = 1)."""
    A, y = inst.A, inst.y
    v = a * a + s * s
    am = a * inst.mu
    lr = np.log(inst.w)[None] - 0.5 * ((x * x).sum(1)[:, None] - 2 * x @ am.T + (am * am).sum(1)[None]) / v
    mk = inst.mu[None] + (a / v) * (x[:, None, :] - am[None])
    vy = inst.sigma_y ** 2 + (s * s / v) * float(A[0] @ A[0])
    res = y[0] - mk @ A[0]
    lj = lr - 0.5 * res * res / vy
    mj, mr = lj.max(1, keepdims=True), lr.max(1, keepdims=True)
    pj = np.exp(lj - mj)
    log_py = mj[:, 0] + np.log(pj.sum(1)) - mr[:, 0] - np.log(np.exp(lr - mr).sum(1))
    lt = lw + log_py - log_g
    W = np.exp(lt - lt.max())
    W /= W.sum()
    return W @ (pj / pj.sum(1, keepdims=True)), 1.0 / float((W * W).sum())


def start_draws(inst, n, pts, rng, start):
    """The filter's first particles: N(0, s_0^2 I) (the library's), or exact draws of the prior diffused to the first
    point (what the library's start correction tends to)."""
    a0, s0 = pts[0]
    if start == "exact":
        return a0 * inst.mu[rng.choice(25, size=n, p=inst.w)] + np.sqrt(a0 * a0 + s0 * s0) * rng.standard_normal(
            (n, inst.d_x))
    return s0 * rng.standard_normal((n, inst.d_x))


def smc(inst, n, steps, rng, rho=None, ladder=(-12, 10), trace=(), start="gauss"):
    """The filter; rho: adaptive potentials (None: the fixed default). Returns the equally weighted samples, the
    number of resamplings and, for each step in trace, (RB mode weights, ESS)."""
    A, y, sy = inst.A, inst.y, inst.sigma_y
    dy = A.shape[0]
    c_def = 4 * np.trace(A @ A.T) / dy
    pts = [vp_linear(t) for t in np.linspace(1, 0, steps + 1)]
    var = [a * a * sy * sy + s * s * c_def for a, s in pts]
    cs = c_def * 2.0 ** (np.arange(ladder[0], ladder[1] + 1) / 2.0)

    def log_g(v, k, x):
        r = pts[k][0] * y[None] - x @ A.T
        return -0.5 * (r * r).sum(1) / v

    a0, s0 = pts[0]
    x = start_draws(inst, n, pts, rng, start)
    if rho is not None:
        for c in cs:
            var[0] = a0 * a0 * sy * sy + s0 * s0 * c
            if ess(log_g(var[0], 0, x)) >= rho * n:
                break
    lw = log_g(var[0], 0, x)
    resamplings, traced = 0, []
    for k in range(steps):
        (a, s), (an, sn) = pts[k], pts[k + 1]
        if k in trace:
            traced.append(rao_blackwell(inst, x, lw, log_g(var[k], k, x), a, s))
        c0, c1, sig2 = kernel(pts, k)
        mean = c0 * denoise(inst.mu, inst.w, x, a, s) + c1 * x
        res = an * y[None] - mean @ A.T
        base = lw - log_g(var[k], k, x)

        def weights(v):
            S_inv = np.linalg.inv(v * np.eye(dy) + sig2 * A @ A.T)
            return base - 0.5 * np.einsum("ni,ij,nj->n", res, S_inv, res), S_inv

        if rho is not None and sn > 0:
            before = ess(lw)
            for c in cs:
                var[k + 1] = an * an * sy * sy + sn * sn * c
                if ess(weights(var[k + 1])[0]) >= rho * before:
                    break
        lw, S_inv = weights(var[k + 1])
        if ess(lw) < 0.5 * n:
            idx = systematic(lw, rng)
            mean, lw = mean[idx], np.zeros(n)
            resamplings += 1
        xp = mean + np.sqrt(sig2) * rng.standard_normal(mean.shape)
        t = an * y[None] - xp @ A.T - np.sqrt(var[k + 1]) * rng.standard_normal((n, dy))
        x = xp + sig2 * (t @ S_inv) @ A
    return x[systematic(lw, rng)], resamplings, traced


def moment_parts(inst, x, a, s):
    """The denoiser m(x) (n x d), A Cov(x0 | x) A^T (n x d_y x d_y) and Cov(x0 | x) A^T (n x d x d_y): the mixture's
    closed form of what d_y JVPs give."""
    v = a * a + s * s
    am = a * inst.mu
    lr = np.log(inst.w)[None] - 0.5 * ((x * x).sum(1)[:, None] - 2 * x @ am.T + (am * am).sum(1)[None]) / v
    r = np.exp(lr - lr.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    A = inst.A
    mu_s = (s * s / v) * inst.mu  # E[x0 | x, k] = mu_s[k] + (a / v) x
    m = r @ mu_s + (a / v) * x
    mA_k = (mu_s @ A.T)[None] + (a / v) * (x @ A.T)[:, None, :]  # n x K x d_y: E[x0 | x, k] . A_o
    mA = np.einsum("nk,nko->no", r, mA_k)
    # Cov A_o = (s^2 / v) A_o + sum_k r_k E_k (E_k . A_o) - m (m . A_o), E_k = mu_s[k] + (a / v) x
    rmA = r[:, :, None] * mA_k
    cov_a = ((s * s / v) * A.T[None] + np.einsum("nko,kj->njo", rmA, mu_s)
             + (a / v) * x[:, :, None] * rmA.sum(1)[:, None, :] - m[:, :, None] * mA[:, None, :])
    a_cov_a = ((s * s / v) * (A @ A.T))[None] + np.einsum("nko,nkc->noc", rmA, mA_k) - mA[:, :, None] * mA[:, None, :]
    return m, a_cov_a, cov_a


def twisted_smc(inst, n, steps, rng, start="gauss", order=1, defensive=None, info=None, ess_threshold=0.5):
    """The twisted filter of --twisted. order 2: the kernel mean c0 m + c1 x takes the second-order multistep
    extrapolation of bench/smc_kernel_numpy.py (m_k + (m_k - m_{k-1}) / (2 r_k), the particle's previous denoiser
    output carried with its ancestor through resampling; the first and the last step order 1) in the prior kernel p
    and in the proposal q alike. defensive: None, or (kind, eps, kappa): the potential is the two-component mixture
    (1 - eps) ghat_k + eps gdef_k, gdef_k the moment potential with its predictive variance sigma_y^2 + A Cov A^T
    inflated to sigma_y^2 + kappa A Cov A^T (kind "inflate"), or the linear potential N(y; A x / a, (sigma_y^2 +
    s^2 c / a^2) I), c = 4 trace(A A^T) / d_y (kind "linear"); both components are the likelihood at s = 0, so the
    target stays exact; the twisted shift follows the mixture's gradient (each component's, weighted by its share of
    the mixture at x). info: None, or a dict that receives the lowest ESS ("min_ess"). ess_threshold: resample before
    a move when the ESS is below it times n (0: only the final resampling). Returns the equally weighted samples and
    the resamplings."""
    A, y, sy = inst.A, inst.y, inst.sigma_y
    dy = A.shape[0]
    pts = [vp_linear(t) for t in np.linspace(1, 0, steps + 1)]
    c_lin = 4 * np.trace(A @ A.T) / dy

    def potential(x, k):
        a, s = pts[k]
        if s == 0:
            r = y[None] - x @ A.T
            return -0.5 * (r * r).sum(1) / sy ** 2, np.zeros_like(x), x
        m, a_cov_a, cov_a = moment_parts(inst, x, a, s)
        acv = 0.5 * (a_cov_a + a_cov_a.transpose(0, 2, 1))
        V = sy * sy * np.eye(dy)[None] + acv
        r = y[None] - m @ A.T
        Vr = np.linalg.solve(V, r[:, :, None])[:, :, 0]
        lg = -0.5 * (r * Vr).sum(1) - 0.5 * np.linalg.slogdet(V)[1]
        grad = (a / (s * s)) * np.einsum("njo,no->nj", cov_a, Vr)
        if defensive is None:
            return lg, grad, m
        kind, eps, kappa = defensive
        if kind == "inflate":
            V2 = sy * sy * np.eye(dy)[None] + kappa * acv
            Vr2 = np.linalg.solve(V2, r[:, :, None])[:, :, 0]
            lg2 = -0.5 * (r * Vr2).sum(1) - 0.5 * np.linalg.slogdet(V2)[1]
            grad2 = (a / (s * s)) * np.einsum("njo,no->nj", cov_a, Vr2)
        else:  # linear: N(y; A x / a, (sigma_y^2 + s^2 c / a^2) I)
            v2 = sy * sy + s * s * c_lin / (a * a)
            r2 = y[None] - (x @ A.T) / a
            lg2 = -0.5 * (r2 * r2).sum(1) / v2 - 0.5 * dy * np.log(v2)
            grad2 = (r2 @ A) / (a * v2)
        l1, l2 = np.log1p(-eps) + lg, np.log(eps) + lg2
        lmix = np.logaddexp(l1, l2)
        p1 = np.exp(l1 - lmix)[:, None]
        return lmix, p1 * grad + (1 - p1) * grad2, m

    x = start_draws(inst, n, pts, rng, start)
    lg, grad, m = potential(x, 0)
    lw = lg.copy()
    resamplings = 0
    m_prev = None
    lowest = n
    for k in range(steps):
        c0, c1, sig2 = kernel(pts, k)
        mu = c0 * extrapolate(pts, k, m, m_prev, order) + c1 * x
        lowest = min(lowest, ess(lw))
        if ess(lw) < ess_threshold * n:
            idx = systematic(lw, rng)
            x, lg, grad, mu, m, lw = x[idx], lg[idx], grad[idx], mu[idx], m[idx], np.zeros(n)
            resamplings += 1
        shift = sig2 * grad
        xp = mu + shift + np.sqrt(sig2) * rng.standard_normal(mu.shape)
        lgp, gradp, mp = potential(xp, k + 1)
        d = xp - mu
        log_p_over_q = ((((d - shift) ** 2).sum(1) - (d * d).sum(1)) / (2 * sig2)) if sig2 > 0 else 0.0
        lw = lw + lgp - lg + log_p_over_q
        x, lg, grad, m, m_prev = xp, lgp, gradp, mp, m
    if info is not None:
        info["min_ess"] = min(lowest, ess(lw))
    return x[systematic(lw, rng)], resamplings


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dx", type=int, default=10)
    ap.add_argument("--dy", type=int, default=1, help="with --twisted (the trace and the adaptive rows need 1)")
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rhos", default="0.98,0.99", help="ESS ratios kept per step by the adaptive potentials")
    ap.add_argument("--ladder", default="-12,10", help="exponents j of c = c_def 2^(j / 2) the potentials may take")
    ap.add_argument("--trace", default="", help="instances to trace (Rao-Blackwellised mode weights per step)")
    ap.add_argument("--seeds", type=int, default=8, help="with --trace: runs per instance")
    ap.add_argument("--twisted", action="store_true", help="the twisted filter against the library's")
    ap.add_argument("--instance", type=int, default=None, help="with --twisted: one instance over --seeds seeds")
    ap.add_argument("--start", default="gauss", choices=["gauss", "exact"], help="with --twisted: the first draws")
    ap.add_argument("--multistep", action="store_true",
                    help="with --twisted: the twisted filter with the DDPM kernel against the multistep kernel")
    ap.add_argument("--defensive", default="",
                    help="KIND,EPS,KAPPA with --twisted: the twisted filter with the multistep kernel (as --multistep's "
                         "second row) against the same with the defensive potential (1 - EPS) g + EPS g_def, g_def "
                         "the moment potential with its A Cov A^T times KAPPA (KIND inflate) or the linear potential "
                         "(KIND linear); with --instance: the lowest ESS of each run too")
    ap.add_argument("--runs", type=int, default=1, help="with --twisted over instances: seeds per instance")
    ap.add_argument("--ess-below", type=float, default=500, help="with --defensive --instance: count runs whose "
                                                                  "lowest ESS falls below this")
    args = ap.parse_args()
    defensive = None
    if args.defensive:
        kind, eps, kappa = args.defensive.split(",")
        defensive = (kind, float(eps), float(kappa))
    d_x = args.dx
    rng = np.random.default_rng([0, d_x, args.dy])
    insts = [Instance(rng, d_x, args.dy) for _ in range(max(args.instances, 20))]
    if args.trace:
        steps = [k for k in (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99) if k < args.steps]
        for i in [int(v) for v in args.trace.split(",")]:
            inst = insts[i]
            err, esses, final, carried = [], [], [], []
            for seed in range(args.seeds):
                x, _, tr = smc(inst, args.particles, args.steps, np.random.default_rng([seed, i, 99]), trace=steps)
                err.append([tv(w, inst.post_w) for w, _ in tr])
                carried.append([w for w, _ in tr])
                esses.append([e for _, e in tr])
                final.append(tv(np.bincount(mode_of(inst, x), minlength=25).astype(float), inst.post_w))
            err, esses, mean_w = np.array(err), np.array(esses), np.array(carried).mean(0)
            floor = np.mean([tv(np.random.default_rng([r, 5]).multinomial(args.particles, inst.post_w).astype(float),
                                inst.post_w) for r in range(200)])
            print(f"d_x {d_x}, instance {i}, {args.seeds} runs, {args.particles} particles; independent samples' "
                  f"mode-weight TV {floor:.4f}")
            print("| step | RB mode-weight TV (mean +- se) | TV of the runs' mean weights | ESS of p(y | x_k) / g_k "
                  "weights |")
            print("|---|---|---|---|")
            for j, k in enumerate(steps):
                print(f"| {k} | {err[:, j].mean():.4f} +- {err[:, j].std(ddof=1) / np.sqrt(len(err)):.4f} | "
                      f"{tv(mean_w[j], inst.post_w):.4f} | {esses[:, j].mean():.0f} |")
            print(f"| samples | {np.mean(final):.4f} +- {np.std(final, ddof=1) / np.sqrt(len(final)):.4f} | | |",
                  flush=True)
        return
    if args.twisted and args.instance is not None and defensive is not None:
        inst = insts[args.instance]
        rows = {"twisted_ms": None, "defensive": defensive}
        dw, low = {name: [] for name in rows}, {name: [] for name in rows}
        for seed in range(args.seeds):
            line = f"seed {seed}:"
            for name, dfn in rows.items():
                info = {}
                x, nres = twisted_smc(inst, args.particles, args.steps, np.random.default_rng([seed, args.instance, 99]),
                                      args.start, 2, dfn, info)
                dw[name].append(tv(np.bincount(mode_of(inst, x), minlength=25).astype(float), inst.post_w))
                low[name].append(info["min_ess"])
                line += f"  {name}: dw {dw[name][-1]:.4f} lowest ESS {low[name][-1]:.0f} ({nres} resamplings)"
            print(line, flush=True)
        print(f"d_x {d_x}, instance {args.instance} (sigma_y {inst.sigma_y:.4g}), {args.seeds} seeds, "
              f"{args.particles} particles, start {args.start}, multistep kernel; defensive {args.defensive}")
        for name in rows:
            v, e = np.array(dw[name]), np.array(low[name])
            print(f"  {name}: dw {v.mean():.4f} +- {v.std(ddof=1) / np.sqrt(len(v)):.4f} (se; {v.min():.4f} .. "
                  f"{v.max():.4f}), {int(np.sum(v > 0.08))} runs above 0.08; lowest ESS < {args.ess_below:.0f} on "
                  f"{int(np.sum(e < args.ess_below))} runs (lowest {e.min():.0f}, median {np.median(e):.0f})")
        dd = np.array(dw["defensive"]) - np.array(dw["twisted_ms"])
        print(f"  paired dw change (defensive - twisted_ms): {dd.mean():+.4f} +- {dd.std(ddof=1) / np.sqrt(len(dd)):.4f}"
              f", lower on {int(np.sum(dd < 0))} of {len(dd)}")
        return
    if args.twisted and args.instance is not None:
        inst = insts[args.instance]
        dw = {"linear": [], "twisted": []}
        for seed in range(args.seeds):
            for name in dw:
                srng = np.random.default_rng([seed, args.instance, 99])
                if name == "linear":
                    x = smc(inst, args.particles, args.steps, srng, start=args.start)[0]
                else:
                    x = twisted_smc(inst, args.particles, args.steps, srng, args.start)[0]
                dw[name].append(tv(np.bincount(mode_of(inst, x), minlength=25).astype(float), inst.post_w))
        floor = [tv(np.random.default_rng([r, 5]).multinomial(args.particles, inst.post_w).astype(float), inst.post_w)
                 for r in range(200)]
        print(f"d_x {d_x}, instance {args.instance}, {args.seeds} seeds, start {args.start}: independent samples "
              f"{np.mean(floor):.4f} +- {np.std(floor, ddof=1):.4f}")
        for name, v in dw.items():
            print(f"  {name}: dw {np.mean(v):.4f} +- {np.std(v, ddof=1):.4f} (sd over seeds; {min(v):.4f} .. "
                  f"{max(v):.4f})")
        return
    if args.twisted:
        # with --multistep: the twisted filter with the DDPM kernel against the same with the multistep kernel
        names = (["floor", "twisted_ms", "defensive"] if defensive is not None
                 else ["floor", "twisted", "twisted_ms"] if args.multistep else ["floor", "linear", "twisted"])
        # runs[name][i]: (SW, dw, lowest ESS) of each run on instance i; run r of instance i has the seeds
        # [1 + i + 1000 r, ...] (r = 0: the earlier single-run measurements' seeds).
        runs = {name: [[] for _ in range(args.instances)] for name in names}
        for i, inst in enumerate(insts[:args.instances]):
            for r in range(args.runs):
                line = f"instance {i}" + (f" run {r}" if args.runs > 1 else "") + ":"
                for name in names:
                    srng = np.random.default_rng([1 + i + 1000 * r, d_x, args.dy, 7])
                    info = {"min_ess": np.nan}
                    if name == "floor":  # a second exact sample set
                        x, nres = inst.sample(args.particles,
                                              np.random.default_rng([1 + i + 1000 * r, d_x, args.dy, 8])), 0
                    elif name == "linear":
                        x, nres, _ = smc(inst, args.particles, args.steps, srng, start=args.start)
                    else:
                        x, nres = twisted_smc(inst, args.particles, args.steps, srng, args.start,
                                              1 if name == "twisted" else 2, defensive if name == "defensive" else None,
                                              info)
                    if defensive is not None:  # one reference sample set and direction draw for every row
                        ref_rng = np.random.default_rng([1 + i + 1000 * r, d_x, args.dy, 9])
                        sw = sliced_w1(x, inst.sample(len(x), ref_rng), 100, ref_rng)
                    else:
                        sw = sliced_w1(x, inst.sample(len(x), srng), 100, srng)
                    dw = tv(np.bincount(mode_of(inst, x), minlength=25).astype(float), inst.post_w)
                    runs[name][i].append((sw, dw, info["min_ess"]))
                    line += f"  {name}: SW {sw:.3f} dw {dw:.4f} ({nres} resamplings"
                    line += f", lowest ESS {info['min_ess']:.0f})" if name not in ("floor", "linear") else ")"
                print(line, flush=True)
        print(f"d_x {d_x}, d_y {args.dy}, {args.instances} instances x {args.runs} runs, {args.particles} particles x "
              f"{args.steps} steps, start {args.start}" + (f", defensive {args.defensive}" if defensive else ""))
        for name in names:
            v = np.array([t for per in runs[name] for t in per])
            print(f"{name}: SW {np.median(v[:, 0]):.3f} / {v[:, 0].mean():.3f} +- {v[:, 0].std(ddof=1):.3f}, dw "
                  f"{v[:, 1].mean():.4f} +- {v[:, 1].std(ddof=1):.4f}"
                  + (f", lowest ESS < {args.ess_below:.0f} on {int(np.sum(v[:, 2] < args.ess_below))} of {len(v)} runs"
                     if name not in ("floor", "linear") else ""))
        # Paired changes averaged over an instance's runs first; se over the instances.
        a, b = np.array(runs[names[2]]), np.array(runs[names[1]])
        for label, col in (("dw", 1), ("SW", 0)):
            dd = (a[:, :, col] - b[:, :, col]).mean(1)
            print(f"paired {label} change ({names[2]} - {names[1]}): {dd.mean():+.4f} +- "
                  f"{dd.std(ddof=1) / np.sqrt(len(dd)):.4f} (se over {len(dd)} instances), lower on {int(np.sum(dd < 0))}")
        return
    rhos = [float(v) for v in args.rhos.split(",")]
    ladder = tuple(int(v) for v in args.ladder.split(","))
    dw = {r: [] for r in [None] + rhos}
    for i, inst in enumerate(insts[:args.instances]):
        line = f"instance {i}:"
        for r in dw:
            x, nres, _ = smc(inst, args.particles, args.steps, np.random.default_rng([1 + i, d_x, 1, 7]), r, ladder)
            dw[r].append(tv(np.bincount(mode_of(inst, x), minlength=25).astype(float), inst.post_w))
            line += f"  {'fixed' if r is None else f'rho {r}'}: dw {dw[r][-1]:.4f} ({nres} resamplings)"
        print(line, flush=True)
    for r, v in dw.items():
        line = f"{'fixed' if r is None else f'adaptive rho {r}'}: dw {np.mean(v):.4f} +- {np.std(v, ddof=1):.4f}"
        if r is not None:
            dd = np.array(v) - np.array(dw[None])
            line += (f"; paired change {dd.mean():+.4f} +- {dd.std(ddof=1) / np.sqrt(len(dd)):.4f} (se over "
                     f"{len(dd)} instances), lower on {int(np.sum(dd < 0))}")
        print(line)


if __name__ == "__main__":
    main()
