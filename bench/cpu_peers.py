"""The CPU executor beside its peers on the same CPU: the same loops in JAX (jit, lax.fori_loop), NumPy, and PyTorch
(eager and torch.compile) when torch is installed, interleaved in rounds with the library's own benchmarks
(bench_langevin, bench_diffusion), printing chain-steps/s per configuration and the library's ratio to each peer
(median over rounds of the ratio within a round), plus the machine's measured FP32 peak and the library's fraction.

Configurations (the library's benchmark mixture: 25 isotropic unit-variance components on a 5 x 5 grid of spacing 8
repeated across coordinates, equal weights): ULA and MALA (step 0.05) at d = 2, 10, 100; DDPM, DDIM (eta 0) and the
probability-flow ODE with Heun's corrector on the vp_linear schedule (beta 0.1 .. 20, uniform grid t = 1 .. 0) at
d = 10. 65536 chains at d <= 10, 16384 at d = 100 (as bench_langevin / bench_diffusion are called here).

Checks that each peer computes the same thing:
  - its FP32 score / denoiser against the FP64 NumPy reference at points of every scale (max error / max |value|),
  - its samples against the library's (`diffsample sample`, same mixture, start, step size and steps; DDPM/DDIM/Heun
    from the schedule's own start): pooled coordinate mean and second moment within 4 standard errors of the
    difference of two independent samples of that many chains.

usage: python3 bench/cpu_peers.py [--build build] [--rounds 3] [--steps 20] [--quick]
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_platforms", "cpu")
except Exception:  # noqa: BLE001
    jax = None
try:
    import torch
except Exception:  # noqa: BLE001
    torch = None

GRID, SPACING, VAR, GAMMA = 5, 8.0, 1.0, 0.05


def grid_means(d):
    K = GRID * GRID
    m = np.zeros((K, d))
    for k in range(K):
        for j in range(d):
            g = k // GRID if j % 2 == 0 else k % GRID
            m[k, j] = SPACING * (g - 0.5 * (GRID - 1))
    return m


def vp_table(steps, beta_min=0.1, beta_max=20.0):
    """(a, s, da/dt, ds/dt) at t_k = 1 - k / steps, k = 0 .. steps, as src/schedule.cpp."""
    t = 1.0 - np.arange(steps + 1) / steps
    log_abar = -(beta_min * t + 0.5 * (beta_max - beta_min) * t * t)
    dlog = -(beta_min + (beta_max - beta_min) * t)
    a = np.exp(0.5 * log_abar)
    s = np.sqrt(-np.expm1(log_abar))
    da = 0.5 * a * dlog
    ds = np.where(s > 0, -a * a * dlog / (2 * np.where(s > 0, s, 1)), 0.0)
    return t, a, s, da, ds


def diffusion_coefficients(sampler, steps):
    """Per step: channel (a, s), update x <- cx x + cm m + cn z, Heun (a2, s2, hx1, hm1, hx2, hm2), as
    src/diffusion.cu builds them in FP64."""
    t, a, s, da, ds = vp_table(steps)
    rows = []
    for k in range(steps):
        p, q = k, k + 1
        dt = t[q] - t[p]
        row = dict(a=a[p], s=s[p], cx=1.0, cm=0.0, cn=0.0, heun=0.0, a2=0.0, s2=0.0, hx1=0.0, hm1=0.0, hx2=0.0,
                   hm2=0.0)
        s2 = s[p] ** 2
        if sampler in ("ddpm", "ddim"):
            r = a[p] / a[q]
            v = max(0.0, s2 - r * r * s[q] ** 2)
            post_var = s[q] ** 2 * v / s2
            if sampler == "ddpm":
                row.update(cx=r * s[q] ** 2 / s2, cm=a[q] * v / s2, cn=math.sqrt(post_var))
            else:
                c = s[q]
                row.update(cx=c / s[p], cm=a[q] - c * a[p] / s[p])
        else:  # ode_heun
            fx, fm = ds[p] / s[p], da[p] - ds[p] * a[p] / s[p]
            row.update(cx=1 + dt * fx, cm=dt * fm)
            if s[q] > 0:
                fx2, fm2 = ds[q] / s[q], da[q] - ds[q] * a[q] / s[q]
                row.update(heun=1.0, a2=a[q], s2=s[q], hx1=0.5 * dt * fx, hm1=0.5 * dt * fm, hx2=0.5 * dt * fx2,
                           hm2=0.5 * dt * fm2)
        rows.append(row)
    cols = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    return cols, s[0]


# --- FP64 reference --------------------------------------------------------------------------------------------

def score_fp64(x, means):
    diff = means[None] - x[:, None]
    logits = -0.5 * (diff ** 2).sum(-1) / VAR
    r = np.exp(logits - logits.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return np.einsum("nk,nkd->nd", r, diff) / VAR


def denoiser_fp64(x, means, a, s):
    c = a * a * VAR + s * s
    diff = a * means[None] - x[:, None]
    logits = -0.5 * (diff ** 2).sum(-1) / c
    r = np.exp(logits - logits.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return (s * s * (r @ means) + a * VAR * x) / c


# --- NumPy (FP32, chunks of 8192 chains so that n x K x d stays in cache-sized pieces) -----------------------------

def np_logits_and_diff(x, am, c):
    diff = am[None] - x[:, None]
    logits = (-0.5 / c) * np.einsum("nkd,nkd->nk", diff, diff)
    logits -= logits.max(1, keepdims=True)
    r = np.exp(logits)
    norm = r.sum(1, keepdims=True)
    return r / norm, diff, logits, norm


def np_score(x, means):
    r, diff, _, _ = np_logits_and_diff(x, means, np.float32(VAR))
    return np.einsum("nk,nkd->nd", r, diff) / np.float32(VAR)


def np_score_logp(x, means):
    r, diff, logits, norm = np_logits_and_diff(x, means, np.float32(VAR))
    # log p up to a constant: max + log sum exp
    mx = (-0.5 / np.float32(VAR)) * np.einsum("nkd,nkd->nk", diff, diff).max(1)
    return np.einsum("nk,nkd->nd", r, diff) / np.float32(VAR), mx + np.log(norm[:, 0])


def np_denoiser(x, means, a, s):
    a, s = np.float32(a), np.float32(s)
    c = a * a * np.float32(VAR) + s * s
    r, _, _, _ = np_logits_and_diff(x, a * means, c)
    return (s * s * (r @ means) + a * np.float32(VAR) * x) / c


def numpy_run(kind, x0, means, steps, seed, chunk=8192):
    rng = np.random.default_rng(seed)
    out = []
    for c0 in range(0, x0.shape[0], chunk):
        x = x0[c0:c0 + chunk].copy()
        out.append(numpy_chunk(kind, x, means, steps, rng))
    return np.concatenate(out)


def numpy_chunk(kind, x, means, steps, rng):
    f32 = np.float32
    if kind in ("ula", "mala"):
        g = f32(GAMMA)
        noise = f32(math.sqrt(2 * GAMMA))
        if kind == "ula":
            for _ in range(steps):
                x = x + g * np_score(x, means) + noise * rng.standard_normal(x.shape, dtype=f32)
            return x
        sc, lp = np_score_logp(x, means)
        for _ in range(steps):
            z = rng.standard_normal(x.shape, dtype=f32)
            xp = x + g * sc + noise * z
            scp, lpp = np_score_logp(xp, means)
            back = ((x - xp - g * scp) ** 2).sum(1) / (4 * g)
            log_alpha = lpp - lp - back + 0.5 * (z * z).sum(1)
            acc = np.log(rng.random(x.shape[0], dtype=f32)) < log_alpha
            x = np.where(acc[:, None], xp, x)
            sc = np.where(acc[:, None], scp, sc)
            lp = np.where(acc, lpp, lp)
        return x
    co, _ = diffusion_coefficients(kind, steps)
    for k in range(steps):
        m = np_denoiser(x, means, co["a"][k], co["s"][k])
        if co["heun"][k]:
            xe = f32(co["cx"][k]) * x + f32(co["cm"][k]) * m
            m2 = np_denoiser(xe, means, co["a2"][k], co["s2"][k])
            x = (x + f32(co["hx1"][k]) * x + f32(co["hm1"][k]) * m + f32(co["hx2"][k]) * xe
                 + f32(co["hm2"][k]) * m2)
        else:
            x = f32(co["cx"][k]) * x + f32(co["cm"][k]) * m
            if co["cn"][k] != 0:
                x = x + f32(co["cn"][k]) * rng.standard_normal(x.shape, dtype=f32)
    return x


# --- JAX (jit of the whole loop, lax.fori_loop) -------------------------------------------------------------------

def jax_functions():
    def logits_r(x, am, c):
        diff = am[None] - x[:, None]
        logits = (-0.5 / c) * jnp.sum(diff * diff, -1)
        return jax.nn.softmax(logits, axis=1), diff, jax.scipy.special.logsumexp(logits, axis=1)

    def score(x, means):
        r, diff, _ = logits_r(x, means, VAR)
        return jnp.einsum("nk,nkd->nd", r, diff) / VAR

    def score_logp(x, means):
        r, diff, lse = logits_r(x, means, VAR)
        return jnp.einsum("nk,nkd->nd", r, diff) / VAR, lse

    def denoiser(x, means, a, s):
        c = a * a * VAR + s * s
        r, _, _ = logits_r(x, a * means, c)
        return (s * s * (r @ means) + a * VAR * x) / c

    def ula(x, means, key, steps):
        noise = math.sqrt(2 * GAMMA)
        def body(k, x):
            z = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
            return x + GAMMA * score(x, means) + noise * z
        return jax.lax.fori_loop(0, steps, body, x)

    def mala(x, means, key, steps):
        noise = math.sqrt(2 * GAMMA)
        sc, lp = score_logp(x, means)
        def body(k, state):
            x, sc, lp = state
            kz, ku = jax.random.split(jax.random.fold_in(key, k))
            z = jax.random.normal(kz, x.shape, x.dtype)
            xp = x + GAMMA * sc + noise * z
            scp, lpp = score_logp(xp, means)
            back = jnp.sum((x - xp - GAMMA * scp) ** 2, 1) / (4 * GAMMA)
            log_alpha = lpp - lp - back + 0.5 * jnp.sum(z * z, 1)
            acc = jnp.log(jax.random.uniform(ku, (x.shape[0],), x.dtype)) < log_alpha
            return (jnp.where(acc[:, None], xp, x), jnp.where(acc[:, None], scp, sc), jnp.where(acc, lpp, lp))
        return jax.lax.fori_loop(0, steps, body, (x, sc, lp))[0]

    def diffusion(x, means, key, co, heun):
        def body(k, x):
            m = denoiser(x, means, co["a"][k], co["s"][k])
            if heun:
                xe = co["cx"][k] * x + co["cm"][k] * m
                m2 = denoiser(xe, means, co["a2"][k], co["s2"][k])
                xh = x + co["hx1"][k] * x + co["hm1"][k] * m + co["hx2"][k] * xe + co["hm2"][k] * m2
                return jnp.where(co["heun"][k] > 0, xh, xe)
            z = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
            return co["cx"][k] * x + co["cm"][k] * m + co["cn"][k] * z
        return jax.lax.fori_loop(0, co["a"].shape[0], body, x)

    return dict(score=jax.jit(score), denoiser=jax.jit(denoiser),
                ula=jax.jit(ula, static_argnums=3), mala=jax.jit(mala, static_argnums=3),
                diffusion=jax.jit(diffusion, static_argnums=4))


def jax_run(fns, kind, x0, means, steps, seed):
    x = jnp.asarray(x0)
    m = jnp.asarray(means, dtype=jnp.float32)
    key = jax.random.PRNGKey(seed)
    if kind in ("ula", "mala"):
        out = fns[kind](x, m, key, steps)
    else:
        co, _ = diffusion_coefficients(kind, steps)
        co = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in co.items()}
        out = fns["diffusion"](x, m, key, co, kind == "ode_heun")
    return np.asarray(out.block_until_ready())


# --- PyTorch (eager and torch.compile), when installed ------------------------------------------------------------

def torch_chunk(kind, x, means, steps, gen):
    if kind not in ("ula",):
        return None
    noise = math.sqrt(2 * GAMMA)
    for _ in range(steps):
        diff = means.unsqueeze(0) - x.unsqueeze(1)
        r = torch.softmax(-0.5 * (diff * diff).sum(-1) / VAR, dim=1)
        x = x + GAMMA * torch.einsum("nk,nkd->nd", r, diff) / VAR + noise * torch.randn(x.shape, generator=gen)
    return x


# --- the library ------------------------------------------------------------------------------------------------

def library_rates(build, steps, env):
    """chain-steps/s per (method, d) from bench_langevin / bench_diffusion, and the measured peak."""
    rates, flops, peak = {}, {}, None
    for prog, n, ds_wanted in (("bench_langevin", 65536, (2, 10)), ("bench_langevin", 16384, (100,)),
                               ("bench_diffusion", 65536, (10,))):
        out = subprocess.run([os.path.join(build, "bench", prog), str(n), str(steps), "cpu"], capture_output=True,
                             text=True, env=env, check=True).stdout
        for line in out.splitlines():
            m = re.match(r"# measured FP32 peak: ([0-9.e+]+) GFLOP/s", line)
            if m:
                peak = float(m.group(1))
            f = line.split()
            if len(f) >= 5 and f[0] in ("ula", "mala", "ddpm", "ddim", "ode_heun") and int(f[1]) in ds_wanted:
                rates[(f[0], int(f[1]))] = float(f[2])
                flops[(f[0], int(f[1]))] = float(f[4])
    return rates, flops, peak


def library_samples(build, kind, d, n, steps, seed, env):
    with tempfile.TemporaryDirectory() as tmp:
        problem = os.path.join(tmp, "p.json")
        with open(problem, "w") as fh:
            json.dump({"prior": {"grid": {"dim": d, "size": GRID, "spacing": SPACING, "variance": VAR},
                                 "weights": [1] * (GRID * GRID)}}, fh)
        out = os.path.join(tmp, "x.npy")
        cmd = [os.path.join(build, "diffsample"), "sample", "--problem", problem, "--sampler", kind, "--chains",
               str(n), "--steps", str(steps), "--seed", str(seed), "--out", out, "--quiet", "--executor", "cpu"]
        if kind in ("ula", "mala"):
            cmd += ["--step-size", str(GAMMA)]
        subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        return np.load(out)


def langevin_start(d, n, seed):
    means = grid_means(d)
    var = (means ** 2).mean(0).max() + VAR  # the CLI's broad start: the prior's largest per-coordinate variance
    return (np.random.default_rng(seed).standard_normal((n, d)) * math.sqrt(var)).astype(np.float32)


def same_law(a, b):
    """Pooled coordinate mean and second moment of a and b agree within 4 standard errors of their difference."""
    ok, worst = True, 0.0
    for f in (lambda x: x.mean(1), lambda x: (x * x).mean(1)):
        fa, fb = f(a.astype(np.float64)), f(b.astype(np.float64))
        se = math.sqrt(fa.var() / fa.size + fb.var() / fb.size)
        z = abs(fa.mean() - fb.mean()) / se
        worst = max(worst, z)
        ok &= z < 4
    return ok, worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="d = 100 with fewer chains for the peers' checks")
    args = ap.parse_args()
    env = dict(os.environ)
    threads = os.cpu_count()
    print(f"# cpu_peers: {threads} CPUs, {args.rounds} rounds x {args.steps} steps; numpy {np.__version__}, "
          f"jax {jax.__version__ if jax else 'absent'}, torch {torch.__version__ if torch else 'absent'}")
    if torch is None:
        print("# PyTorch: not installed here (the CPU wheel index is unreachable from this machine and PyPI's Linux "
              "wheel brings ~3 GB of CUDA libraries), so its columns are empty")
    configs = [("ula", 2), ("mala", 2), ("ula", 10), ("mala", 10), ("ula", 100), ("mala", 100), ("ddpm", 10),
               ("ddim", 10), ("ode_heun", 10)]
    fns = jax_functions() if jax else None

    # Checks: FP32 score / denoiser against FP64, then sample statistics against the library.
    print("## checks")
    for d in (2, 10, 100):
        means = grid_means(d)
        x = (np.random.default_rng(d).standard_normal((512, d)) * 12).astype(np.float32)
        ref = score_fp64(x.astype(np.float64), means)
        scale = np.abs(ref).max()
        err_np = np.abs(np_score(x, means.astype(np.float32)) - ref).max() / scale
        line = f"score d={d}: numpy fp32 max err / max|score| {err_np:.1e}"
        if fns:
            err_jax = np.abs(np.asarray(fns["score"](jnp.asarray(x), jnp.asarray(means, jnp.float32))) - ref).max()
            line += f", jax {err_jax / scale:.1e}"
        refd = denoiser_fp64(x.astype(np.float64), means, 0.6, 0.8)
        line += f"; denoiser (a 0.6, s 0.8): numpy {np.abs(np_denoiser(x, means.astype(np.float32), 0.6, 0.8) - refd).max() / np.abs(refd).max():.1e}"
        print(line)
    n_check = 16384
    for kind, d in configs:
        if args.quick and d == 100:
            continue
        means32 = grid_means(d).astype(np.float32)
        steps = args.steps
        lib = library_samples(args.build, kind, d, n_check, steps, 3, env)
        if kind in ("ula", "mala"):
            x0 = langevin_start(d, n_check, 5)
        else:
            _, s0 = diffusion_coefficients(kind, steps)
            x0 = (np.random.default_rng(5).standard_normal((n_check, d)) * s0).astype(np.float32)
        results = [("numpy", numpy_run(kind, x0, means32, steps, 6))]
        if fns:
            results.append(("jax", jax_run(fns, kind, x0, means32, steps, 6)))
        for name, xs in results:
            ok, z = same_law(xs, lib)
            print(f"samples {kind} d={d}: {name} vs library {'same law' if ok else 'DIFFERENT'} "
                  f"(largest |difference| {z:.1f} standard errors, {n_check} chains, {steps} steps)")

    # Throughput, interleaved rounds.
    print("## throughput (chain-steps/s; ratios are library / peer, median over rounds of the in-round ratio)")
    table = {c: {"library": [], "jax": [], "numpy": []} for c in configs}
    peak, flops = None, {}
    for rnd in range(args.rounds):
        rates, flops, peak_r = library_rates(args.build, args.steps, env)
        peak = peak_r or peak
        for c in configs:
            table[c]["library"].append(rates.get(c, float("nan")))
        for kind, d in configs:
            n = 65536 if d <= 10 else 16384
            means32 = grid_means(d).astype(np.float32)
            x0 = (np.random.default_rng(rnd).standard_normal((n, d)) * 4).astype(np.float32)
            if fns:
                jax_run(fns, kind, x0[:256], means32, 2, 0)  # compile for this shape class
                jax_run(fns, kind, x0, means32, args.steps, 0)  # compile for the timed shape
                t0 = time.perf_counter()
                jax_run(fns, kind, x0, means32, args.steps, rnd)
                table[(kind, d)]["jax"].append(n * args.steps / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            numpy_run(kind, x0, means32, args.steps, rnd)
            table[(kind, d)]["numpy"].append(n * args.steps / (time.perf_counter() - t0))
    print(f"{'config':<12} {'library':>10} {'jax jit':>10} {'numpy':>10} {'lib/jax':>8} {'lib/numpy':>9} "
          f"{'GFLOP/s':>8} {'% peak':>7}")
    for c in configs:
        row = table[c]
        lib = np.median(row["library"])

        def ratio(peer):
            r = [a / b for a, b in zip(row["library"], row[peer])] if row[peer] else []
            return np.median(r) if r else float("nan")

        gflops = lib * flops.get(c, float("nan")) * 1e-9
        frac = 100 * gflops / peak if peak else float("nan")
        jr = np.median(row["jax"]) if row["jax"] else float("nan")
        print(f"{c[0] + ' d=' + str(c[1]):<12} {lib:>10.3g} {jr:>10.3g} {np.median(row['numpy']):>10.3g} "
              f"{ratio('jax'):>8.2f} {ratio('numpy'):>9.2f} {gflops:>8.1f} {frac:>7.1f}")
    if peak:
        print(f"# measured FP32 peak (bench_langevin): {peak:.1f} GFLOP/s")


if __name__ == "__main__":
    sys.exit(main())
