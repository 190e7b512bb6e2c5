"""The CPU executor beside its peers on the same CPU: the same loops in JAX (jit, lax.fori_loop), NumPy, and PyTorch
(eager and torch.compile) when torch is installed, interleaved in rounds with the library's own benchmarks
(bench_langevin, bench_diffusion), printing chain-steps/s per configuration and the library's ratio to each peer
(median over rounds of the ratio within a round), plus the machine's measured FP32 peak and the library's fraction.

Configurations (the library's benchmark mixture: 25 isotropic unit-variance components on a 5 x 5 grid of spacing 8
repeated across coordinates, equal weights): ULA and MALA (step 0.05) at d = 2, 10, 100; DDPM, DDIM (eta 0) and the
probability-flow ODE with Heun's corrector on the vp_linear schedule (beta 0.1 .. 20, uniform grid t = 1 .. 0) at
d = 10. The library is timed on 65536 chains at d <= 10 and 16384 at d = 100 (bench_langevin / bench_diffusion with
that dimension only); the peers run chunks of 8192 chains one after another (n x K x d intermediates of a few MB)
and are timed on --peer-chains of them. Peers: JAX (jit of the whole loop with lax.fori_loop), PyTorch eager and
torch.compile of one step (default inductor, the Python loop calls it), NumPy; all FP32, each with its own
generator. OMP_WAIT_POLICY=PASSIVE for the peers' OpenMP threads unless set (spinning waits collapse under load).

Checks that each peer computes the same thing (the script exits 1 if one fails):
  - its FP32 score and denoiser against the FP64 NumPy reference at 512 points of scale 12 (max error / max
    |value| < 1e-4),
  - its samples against the library's (`diffsample sample`, same mixture, start law, step size and steps; DDPM,
    DDIM and Heun from the schedule's own start): pooled coordinate mean and second moment within 4 standard errors
    of the difference of two independent samples of 16384 chains.

Throughput: rounds; in each, the library's benchmark for one dimension, then every peer on the same configurations.
Printed: chain-steps/s (median over rounds), the library / peer ratio (median over rounds of the in-round ratio), the
library's fraction of the FP32 peak measured by the same benchmark run (FLOPs per chain-step counted in the
benchmark sources), and the targets (>= 2x every peer everywhere; >= 15% of peak for ULA d = 10), met or missed by
how much.

usage: python3 bench/cpu_peers.py [--build build] [--rounds 3] [--steps 20] [--peer-chains 16384]
                                  [--only ula10,ddpm10] [--peers jax,torch,torch_compile,numpy] [--no-checks]
Peers: python3 -m pip install -r bench/requirements-peers.txt (missing ones are reported and their columns empty).
"""
import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

# PyTorch's and NumPy's OpenMP threads wait passively: spinning waits (libgomp's default) collapse on a loaded
# machine (measured here: PyTorch eager 4x slower at load ~20 on 2 cores). Set before the imports load libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

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
CHUNK = 8192  # chains per peer call: n x K x d intermediates of a few MB


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
    """Softmax weights r, differences a mu_k - x, and log sum_k exp(logit_k)."""
    diff = am[None] - x[:, None]
    logits = (-0.5 / c) * np.einsum("nkd,nkd->nk", diff, diff)
    mx = logits.max(1, keepdims=True)
    r = np.exp(logits - mx)
    norm = r.sum(1, keepdims=True)
    return r / norm, diff, mx[:, 0] + np.log(norm[:, 0])


def np_score(x, means):
    r, diff, _ = np_logits_and_diff(x, means, np.float32(VAR))
    return np.einsum("nk,nkd->nd", r, diff) / np.float32(VAR)


def np_score_logp(x, means):
    """The score and log p up to a constant (equal weights and variances: log sum_k exp(logit_k))."""
    r, diff, lse = np_logits_and_diff(x, means, np.float32(VAR))
    return np.einsum("nk,nkd->nd", r, diff) / np.float32(VAR), lse


def np_denoiser(x, means, a, s):
    a, s = np.float32(a), np.float32(s)
    c = a * a * np.float32(VAR) + s * s
    r, _, _ = np_logits_and_diff(x, a * means, c)
    return (s * s * (r @ means) + a * np.float32(VAR) * x) / c


def numpy_run(kind, x0, means, steps, seed, chunk=CHUNK):
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
            acc = np.log(f32(1) - rng.random(x.shape[0], dtype=f32)) < log_alpha  # u in (0, 1]
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


# --- JAX (jit of the whole loop, lax.fori_loop; chunks of CHUNK chains, one compiled program for all) -------------

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

    def diffusion(x, means, key, co, kind):
        def body(k, x):
            m = denoiser(x, means, co["a"][k], co["s"][k])
            xe = co["cx"][k] * x + co["cm"][k] * m
            if kind == "ode_heun":
                m2 = denoiser(xe, means, co["a2"][k], co["s2"][k])
                xh = x + co["hx1"][k] * x + co["hm1"][k] * m + co["hx2"][k] * xe + co["hm2"][k] * m2
                return jnp.where(co["heun"][k] > 0, xh, xe)
            if kind == "ddim":  # deterministic: no noise drawn
                return xe
            return xe + co["cn"][k] * jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
        return jax.lax.fori_loop(0, co["a"].shape[0], body, x)

    return dict(score=jax.jit(score), denoiser=jax.jit(denoiser),
                ula=jax.jit(ula, static_argnums=3), mala=jax.jit(mala, static_argnums=3),
                diffusion=jax.jit(diffusion, static_argnums=4))


def jax_run(fns, kind, x0, means, steps, seed, chunk=CHUNK):
    m = jnp.asarray(means, dtype=jnp.float32)
    key = jax.random.PRNGKey(seed)
    if kind not in ("ula", "mala"):
        co, _ = diffusion_coefficients(kind, steps)
        co = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in co.items()}
    outs = []
    for i, c0 in enumerate(range(0, x0.shape[0], chunk)):
        x = jnp.asarray(x0[c0:c0 + chunk])
        ck = jax.random.fold_in(key, 1000003 + i)
        if kind in ("ula", "mala"):
            outs.append(fns[kind](x, m, ck, steps))
        else:
            outs.append(fns["diffusion"](x, m, ck, co, kind))
    return np.concatenate([np.asarray(o.block_until_ready()) for o in outs])


# --- PyTorch: eager, and torch.compile of one step (the Python loop calls the compiled step) ----------------------

def torch_functions():
    noise = math.sqrt(2 * GAMMA)

    def logits_diff(x, am, c):
        diff = am.unsqueeze(0) - x.unsqueeze(1)
        return (-0.5 / c) * (diff * diff).sum(-1), diff

    def score(x, means):
        logits, diff = logits_diff(x, means, VAR)
        r = torch.softmax(logits, dim=1)
        return torch.einsum("nk,nkd->nd", r, diff) / VAR

    def score_logp(x, means):
        logits, diff = logits_diff(x, means, VAR)
        lse = torch.logsumexp(logits, dim=1)
        r = torch.exp(logits - lse.unsqueeze(1))
        return torch.einsum("nk,nkd->nd", r, diff) / VAR, lse

    def denoiser(x, means, a, s):
        c = a * a * VAR + s * s
        logits, _ = logits_diff(x, a * means, c)
        r = torch.softmax(logits, dim=1)
        return (s * s * (r @ means) + a * VAR * x) / c

    def ula_step(x, means):
        return x + GAMMA * score(x, means) + noise * torch.randn_like(x)

    def mala_step(x, sc, lp, means):
        z = torch.randn_like(x)
        u = torch.rand(x.shape[0], dtype=x.dtype)
        xp = x + GAMMA * sc + noise * z
        scp, lpp = score_logp(xp, means)
        back = ((x - xp - GAMMA * scp) ** 2).sum(1) / (4 * GAMMA)
        acc = torch.log(u) < lpp - lp - back + 0.5 * (z * z).sum(1)
        return (torch.where(acc.unsqueeze(1), xp, x), torch.where(acc.unsqueeze(1), scp, sc),
                torch.where(acc, lpp, lp))

    def ddpm_step(x, means, a, s, cx, cm, cn):
        return cx * x + cm * denoiser(x, means, a, s) + cn * torch.randn_like(x)

    def ddim_step(x, means, a, s, cx, cm):
        return cx * x + cm * denoiser(x, means, a, s)

    def heun_step(x, means, a, s, cx, cm, a2, s2, hx1, hm1, hx2, hm2):
        m = denoiser(x, means, a, s)
        xe = cx * x + cm * m
        m2 = denoiser(xe, means, a2, s2)
        return x + hx1 * x + hm1 * m + hx2 * xe + hm2 * m2

    eager = dict(score=score, score_logp=score_logp, ula=ula_step, mala=mala_step, ddpm=ddpm_step, ddim=ddim_step,
                 heun=heun_step)
    compiled = {k: torch.compile(v, dynamic=False) for k, v in eager.items() if k != "score"}
    compiled["score"] = score
    return eager, compiled


def torch_run(fns, kind, x0, means, steps, seed, chunk=CHUNK):
    torch.manual_seed(seed)
    m = torch.from_numpy(np.ascontiguousarray(means, dtype=np.float32))
    if kind not in ("ula", "mala"):
        co, _ = diffusion_coefficients(kind, steps)
        co = {k: [torch.tensor(float(v), dtype=torch.float32) for v in col] for k, col in co.items()}
    outs = []
    with torch.no_grad():
        for c0 in range(0, x0.shape[0], chunk):
            x = torch.from_numpy(np.ascontiguousarray(x0[c0:c0 + chunk]))
            if kind == "ula":
                for _ in range(steps):
                    x = fns["ula"](x, m)
            elif kind == "mala":
                sc, lp = fns["score_logp"](x, m)
                for _ in range(steps):
                    x, sc, lp = fns["mala"](x, sc, lp, m)
            else:
                for k in range(steps):
                    a, s, cx, cm = co["a"][k], co["s"][k], co["cx"][k], co["cm"][k]
                    if kind == "ddpm":
                        x = fns["ddpm"](x, m, a, s, cx, cm, co["cn"][k])
                    elif kind == "ddim" or not float(co["heun"][k]):
                        x = fns["ddim"](x, m, a, s, cx, cm)
                    else:
                        x = fns["heun"](x, m, a, s, cx, cm, co["a2"][k], co["s2"][k], co["hx1"][k], co["hm1"][k],
                                        co["hx2"][k], co["hm2"][k])
            outs.append(x.numpy())
    return np.concatenate(outs)


# --- the library ------------------------------------------------------------------------------------------------

def library_rates(build, prog, n, d, steps, env):
    """{method: (chain-steps/s, FLOP per chain-step, % of the FP32 peak measured by the same program)} and that
    peak in GFLOP/s, from one run of bench_langevin / bench_diffusion at dimension d."""
    out = subprocess.run([os.path.join(build, "bench", prog), str(n), str(steps), "cpu", str(d)], capture_output=True,
                         text=True, env=env, check=True).stdout
    rates, peak = {}, None
    for line in out.splitlines():
        m = re.match(r"# measured FP32 peak: ([0-9.e+]+) GFLOP/s", line)
        if m:
            peak = float(m.group(1))
        f = line.split()
        if len(f) >= 8 and f[0] in ("ula", "mala", "ddpm", "ddim", "ode_heun") and int(f[1]) == d:
            rates[f[0]] = (float(f[2]), float(f[4]), float(f[7]))
    return rates, peak


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


def nearest_mean_sq(x, means):
    """Per chain, the mean over coordinates of the squared distance to the nearest component mean: the spread within
    the components, which the pooled moments (dominated by the means' spread) hardly see."""
    x = x.astype(np.float64)
    d2 = ((x[:, None, :] - means[None]) ** 2).sum(2)
    return d2.min(1) / x.shape[1]


def same_law(a, b, means):
    """Pooled coordinate mean, second moment and squared distance to the nearest component mean of a and b agree
    within 4 standard errors of their difference (the third caught a DDIM peer whose components had variance 1.5 or
    0.7 instead of 1, which the first two passed at 1.5 and 1.9 standard errors)."""
    ok, worst = True, 0.0
    for f in (lambda x: x.mean(1), lambda x: (x * x).mean(1), lambda x: nearest_mean_sq(x, means)):
        fa, fb = f(a.astype(np.float64)), f(b.astype(np.float64))
        se = math.sqrt(fa.var() / fa.size + fb.var() / fb.size)
        z = abs(fa.mean() - fb.mean()) / se
        worst = max(worst, z)
        ok &= z < 4
    return ok, worst


PEERS = ("jax", "torch", "torch_compile", "numpy")
PEER_NAMES = {"jax": "JAX jit", "torch": "PyTorch eager", "torch_compile": "torch.compile", "numpy": "NumPy"}
# (program, dimension, configurations it times): the library's run for a group, then each peer per configuration.
GROUPS = (("bench_langevin", 2, ("ula", "mala")), ("bench_langevin", 10, ("ula", "mala")),
          ("bench_langevin", 100, ("ula", "mala")), ("bench_diffusion", 10, ("ddpm", "ddim", "ode_heun")))


def chains_for(d):
    return 65536 if d <= 10 else 16384


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--only", default="", help="comma-separated configurations to run, e.g. ula10,ddpm10")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    ap.add_argument("--peer-chains", type=int, default=16384,
                    help="chains the peers are timed on (they run chunks of 8192 one after another, so their rate "
                         "does not depend on it; the library is timed on 65536, 16384 at d = 100)")
    ap.add_argument("--no-checks", action="store_true", help="skip the checks (only while iterating)")
    args = ap.parse_args()
    env = dict(os.environ)
    wanted = set(args.peers.split(","))
    peers = [p for p in PEERS if p in wanted and ((p == "jax" and jax) or (p.startswith("torch") and torch)
                                                 or p == "numpy")]
    only = set(filter(None, args.only.split(",")))
    groups = [(prog, d, tuple(k for k in kinds if not only or f"{k}{d}" in only)) for prog, d, kinds in GROUPS]
    groups = [g for g in groups if g[2]]
    configs = [(k, d) for _, d, kinds in groups for k in kinds]
    threads = os.cpu_count()
    if torch:
        torch.set_num_threads(threads)
    print(f"# cpu_peers: {platform.processor() or platform.machine()}, {cpu_model()}, {threads} CPUs; "
          f"{args.rounds} rounds x {args.steps} steps; peers timed on {args.peer_chains} chains in {CHUNK}-chain chunks; "
          f"numpy {np.__version__}, jax {jax.__version__ if jax else 'absent'}, "
          f"torch {torch.__version__ if torch else 'absent'} ({torch.get_num_threads() if torch else 0} threads); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"# load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if torch is None:
        print("# PyTorch: not installed here (pip install -r bench/requirements-peers.txt), so its columns are empty")
    if jax is None:
        print("# JAX: not installed here (pip install -r bench/requirements-peers.txt), so its column is empty")
    jfns = jax_functions() if jax else None
    teager, tcomp = torch_functions() if torch else (None, None)
    runners = {"jax": lambda *a: jax_run(jfns, *a), "torch": lambda *a: torch_run(teager, *a),
               "torch_compile": lambda *a: torch_run(tcomp, *a), "numpy": numpy_run}

    failures = []
    if not args.no_checks:
        print("## checks: FP32 score and denoiser against FP64 (max error / max |value|, 512 points of scale 12)")
        for d in sorted({d for _, d in configs}):
            means = grid_means(d)
            x = (np.random.default_rng(d).standard_normal((512, d)) * 12).astype(np.float32)
            ref = score_fp64(x.astype(np.float64), means)
            refd = denoiser_fp64(x.astype(np.float64), means, 0.6, 0.8)
            m32 = means.astype(np.float32)
            got = {"numpy": (np_score(x, m32), np_denoiser(x, m32, 0.6, 0.8))}
            if jfns:
                got["jax"] = (np.asarray(jfns["score"](jnp.asarray(x), jnp.asarray(m32))),
                              np.asarray(jfns["denoiser"](jnp.asarray(x), jnp.asarray(m32), 0.6, 0.8)))
            if teager:
                tx, tm = torch.from_numpy(x), torch.from_numpy(m32)
                with torch.no_grad():
                    got["torch"] = (teager["score"](tx, tm).numpy(), torch_denoiser_check(teager, tx, tm))
            parts = []
            for name, (sc, de) in got.items():
                es = np.abs(sc - ref).max() / np.abs(ref).max()
                ed = np.abs(de - refd).max() / np.abs(refd).max()
                parts.append(f"{name} {es:.1e} / {ed:.1e}")
                if not (es < 1e-4 and ed < 1e-4):
                    failures.append(f"score d={d} {name}")
            print(f"score / denoiser (a 0.6, s 0.8) d={d}: " + ", ".join(parts))
        n_check = 16384
        print(f"## checks: samples against the library's (`diffsample sample`, {n_check} chains, {args.steps} steps): "
              "pooled coordinate mean, second moment and squared distance to the nearest component mean, |difference| in "
              "standard errors of the difference (< 4)")
        for kind, d in configs:
            means32 = grid_means(d).astype(np.float32)
            lib = library_samples(args.build, kind, d, n_check, args.steps, 3, env)
            if kind in ("ula", "mala"):
                x0 = langevin_start(d, n_check, 5)
            else:
                _, s0 = diffusion_coefficients(kind, args.steps)
                x0 = (np.random.default_rng(5).standard_normal((n_check, d)) * s0).astype(np.float32)
            parts = []
            for name in peers:
                ok, z = same_law(runners[name](kind, x0, means32, args.steps, 6), lib, grid_means(d))
                parts.append(f"{name} {z:.1f}" + ("" if ok else " DIFFERENT"))
                if not ok:
                    failures.append(f"samples {kind} d={d} {name}")
            print(f"samples {kind} d={d}: " + ", ".join(parts))

    # Warm-up outside the timing: JAX and torch.compile compile for the timed shapes.
    for kind, d in configs:
        x0 = (np.random.default_rng(0).standard_normal((CHUNK, d)) * 4).astype(np.float32)
        for name in peers:
            if name in ("jax", "torch_compile"):
                runners[name](kind, x0, grid_means(d).astype(np.float32), args.steps, 0)

    print("## throughput: rounds; in each, the library's benchmark for one dimension, then every peer on the same "
          "configurations")
    rates = {c: {p: [] for p in ("library",) + PEERS} for c in configs}
    frac, peaks, loads = {c: [] for c in configs}, [], []
    for rnd in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for prog, d, kinds in groups:
            n = chains_for(d)
            lib, peak = library_rates(args.build, prog, n, d, args.steps, env)
            if peak:
                peaks.append(peak)
            means32 = grid_means(d).astype(np.float32)
            npeer = min(n, args.peer_chains)
            x0 = (np.random.default_rng(rnd).standard_normal((npeer, d)) * 4).astype(np.float32)
            for kind in kinds:
                rate, flops, pct = lib[kind]
                rates[(kind, d)]["library"].append(rate)
                frac[(kind, d)].append(pct)
                for name in peers:
                    t0 = time.perf_counter()
                    runners[name](kind, x0, means32, args.steps, rnd)
                    rates[(kind, d)][name].append(npeer * args.steps / (time.perf_counter() - t0))
        print(f"# round {rnd + 1} done, load average {os.getloadavg()[0]:.2f}", flush=True)

    def ratio(c, peer):
        r = [a / b for a, b in zip(rates[c]["library"], rates[c][peer])]
        return float(np.median(r)) if r else float("nan")

    print(f"## chain-steps/s (median over rounds) and library / peer (median over rounds of the in-round ratio); "
          f"load average over the rounds {min(loads):.2f} .. {max(loads):.2f}")
    head = f"{'config':<13}{'library':>10}" + "".join(f"{PEER_NAMES[p]:>15}" for p in peers)
    head += "".join(f"{'/' + PEER_NAMES[p]:>16}" for p in peers) + f"{'% peak':>8}"
    print(head)
    missed = []
    for c in configs:
        row = f"{c[0] + ' d=' + str(c[1]):<13}{np.median(rates[c]['library']):>10.3g}"
        row += "".join(f"{np.median(rates[c][p]):>15.3g}" for p in peers)
        row += "".join(f"{ratio(c, p):>16.2f}" for p in peers)
        row += f"{np.median(frac[c]):>8.1f}"
        print(row)
        for p in peers:
            if ratio(c, p) < 2:
                missed.append(f"{c[0]} d={c[1]} vs {PEER_NAMES[p]}: {ratio(c, p):.2f}x (target 2x, "
                              f"missed by a factor {2 / ratio(c, p):.2f})")
    if peaks:
        print(f"# measured FP32 peak (the library's benchmarks, each run): median {np.median(peaks):.1f} GFLOP/s, "
              f"range {min(peaks):.1f} .. {max(peaks):.1f}; '% peak' is the library's GFLOP/s (FLOPs per chain-step "
              "counted in bench/bench_langevin.cpp, bench_diffusion.cpp) over the peak measured in the same run")
    if ("ula", 10) in frac:
        f = float(np.median(frac[("ula", 10)]))
        print(f"# target ULA d=10 >= 15% of the measured FP32 peak: {f:.1f}% "
              + ("met" if f >= 15 else f"missed by a factor {15 / f:.2f}"))
    print("# target library >= 2x every peer at every configuration: " + ("met" if not missed else
                                                                            f"missed at {len(missed)}:"))
    for m in missed:
        print("#   " + m)
    if torch is None:
        print("# PyTorch eager and torch.compile did not run (not installed)")
    if failures:
        print("# CHECKS FAILED: " + "; ".join(failures))
        return 1
    return 0


def torch_denoiser_check(fns, tx, tm):
    with torch.no_grad():
        return fns["ddim"](tx, tm, torch.tensor(0.6), torch.tensor(0.8), torch.tensor(0.0),
                           torch.tensor(1.0)).numpy()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
