#!/usr/bin/env python3
"""DCPS in NumPy on the seed-002 mixture benchmark: the published sampler (github.com/Badr-MOUFAD/dcps,
`posterior_samplers/dcps.py` with its `ddim_statistics`) and this library's form of it, one choice at a time, on the
instances and with the scores of bench/posterior_table.py (sliced W1 over 100 directions, mode-share total
variation), beside the program's own `solve --sampler dcps` on the same instances.

The algorithm is the same in both (tamed ULA at each block's noisy end on the prior's score plus the gradient of
g_T at the DDIM bridge mean; per transition a mean-field Gaussian started at the DDPM kernel and moved by normalised
gradient steps on a one-draw KL estimate; the mixture's exact denoiser and its Jacobian stand for the network and
autograd). What the published code sets differently, each a flag of a variant:
  --schedule published   the published mixture model's DDPM table (1000 betas from 1e-4 to 0.02, alpha-bar with a
                         leading 1) and its blocks: obs_timesteps = linspace(0, 999, B + 1), each block
                         linspace(obs[l], obs[l + 1], steps // B + 1) truncated to integers; `library` (default): the
                         library's grid (vp_linear, beta 0.1 .. 20, uniform in t), B blocks of steps // B points
                         (the last takes the rest), as guided_sampler::dcps
  --blocks B             blocks (the published demos' "L = 4" is B = 3; the library's default dcps_blocks is 4)
  --lr X --lr-form F     gradient step length: `absolute` (published: mean and log-std vectors each move by X along
                         their normalised gradient; published default X = 1, its image demos 1.5) or `relative`
                         (library: the mean by X sig sqrt(d), the log-std by X sqrt(d); default X = 0.1)
  --kl-draw 0|1          1 (published): the KL's likelihood term at one draw of the bridge x_T ~ N(mu_j(q), v_j I);
                         0 (library): at the bridge mean (the draw's expected gradient)
  --skip-last 0|1        1 (published): the last transition (to alpha-bar = 1) is not run, the samples are x at
                         the last point but one; 0 (library): the last transition is the point mass at the kernel mean
  --langevin M --gamma G --grad-steps K   ULA steps per block (published table: 50 or 500), ULA step (1e-3),
                         gradient steps per transition (2)
  --published-instances  d = 8 / 80 (for d_x = 10 / 100), one weight draw shared by the instances (as
                         bench/ddrm_published.py builds them; --weight-seed)
  --program "ARGS"       run `solve --sampler dcps ARGS` instead of the NumPy sampler (same instances)

Printed per variant: SW median / mean +- sd, dw mean +- sd (and its se), the largest error of a single mode's
weight (max_k |share_k - w_k|, at most dw), and for every variant after the first the paired change of dw against
the first (mean +- se over instances, lower on k of n; meaningful between variants on the same instances).

usage: python3 bench/dcps_numpy.py [--build build] [--instances 20] [--dx 10] [--particles 2000] [--steps 100]
           [--seeds 1] --variant LABEL="FLAGS" ...
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import posterior_table as pt  # noqa: E402
import ddrm_published as dp  # noqa: E402


def denoiser_jvp(inst, x, a, s, u=None):
    """E[x0 | a x0 + s z = x] (unit-variance mixture, FP64) and, for u given, J u with J = d E[x0|x] / dx =
    (a / s^2) Cov(x0 | x) = (a / v) I + (a s^2 / v^2) (sum_k r_k mu_k mu_k^T - mbar mbar^T), v = a^2 + s^2."""
    v = a * a + s * s
    am = a * inst.mu
    d2 = np.sum(x * x, 1)[:, None] - 2 * x @ am.T + np.sum(am * am, 1)[None, :]
    lr = np.log(inst.w)[None, :] - 0.5 * d2 / v
    lr -= lr.max(1, keepdims=True)
    r = np.exp(lr)
    r /= r.sum(1, keepdims=True)
    mbar = r @ inst.mu
    m = (s * s / v) * mbar + (a / v) * x
    if u is None:
        return m, None
    mu_u = u @ inst.mu.T  # n x K: mu_k . u
    ju = (a / v) * u + (a * s * s / (v * v)) * ((r * mu_u) @ inst.mu - mbar * np.sum(mbar * u, 1, keepdims=True))
    return m, ju


def bridge(at, st, ap, sp, eta=1.0):
    """DDIM statistics from the point (at, st) to the cleaner point (ap, sp) given x0: N(cx x + cm x0, sd^2 I)
    (published ddim_statistics with eta; eta = 1 is the DDPM posterior q(x_p | x_t, x0))."""
    if st == 0.0:
        return 1.0, 0.0, 0.0
    ratio = (at / ap) ** 2
    var = eta * eta * (1 - ratio) * sp * sp / (st * st)
    cx = np.sqrt(max(sp * sp - var, 0.0) / (st * st))
    cm = ap - cx * at
    return cx, cm, np.sqrt(max(var, 0.0))


def published_points():
    betas = 1.0 - np.linspace(0.9999, 0.98, 1000)
    acp = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
    return acp


def blocks_of(fl, steps):
    """Blocks as lists of (a, s) from the clean end T (first) to the noisy end U (last), noisiest block first."""
    B = fl.blocks
    out = []
    if fl.schedule == "published":
        acp = published_points()
        obs = np.linspace(0, 999, B + 1)
        n = steps // B
        for l in range(B, 0, -1):
            ts = np.linspace(obs[l - 1], obs[l], n + 1).astype(np.int64)
            out.append([(np.sqrt(acp[t]), np.sqrt(1 - acp[t])) for t in ts])
    else:
        pts = dp.library_grid(steps)  # index 0 noisiest .. steps cleanest
        per = steps // B
        for l in range(B):
            first, last = l * per, (steps if l == B - 1 else (l + 1) * per)
            out.append([pts[k] for k in range(last, first - 1, -1)])
    return out


def dcps(inst, n, rng, steps, fl):
    d = inst.d_x
    A, y, sy2 = inst.A, inst.y, inst.sigma_y ** 2
    blocks = blocks_of(fl, steps)
    x = blocks[0][-1][1] * rng.standard_normal((n, d)) if fl.schedule == "library" else rng.standard_normal((n, d))
    root_d = np.sqrt(d)
    for bi, pts in enumerate(blocks):
        aT, sT = pts[0]
        ys = aT * y

        def pot_grad(q, a, s):
            """grad_q log g_T(bridge(q)) with the bridge from (a, s) to T; the bridge draw with --kl-draw."""
            cx, cm, sd = bridge(a, s, aT, sT)
            m, _ = denoiser_jvp(inst, q, a, s)
            bm = cx * q + cm * m
            if fl.kl_draw and sd > 0:
                bm = bm + sd * rng.standard_normal(bm.shape)
            g = (ys[None, :] - bm @ A.T) @ A / sy2
            if cm != 0.0:
                _, jg = denoiser_jvp(inst, q, a, s, g)
                return m, cx * g + cm * jg
            return m, cx * g

        aU, sU = pts[-1]
        for _ in range(fl.langevin):
            # published ula(): the Langevin potential is g_T at the DDIM mean (never a draw)
            cx, cm, _ = bridge(aU, sU, aT, sT)
            m, _ = denoiser_jvp(inst, x, aU, sU)
            bm = cx * x + cm * m
            g = (ys[None, :] - bm @ A.T) @ A / sy2
            _, jg = denoiser_jvp(inst, x, aU, sU, g)
            G = (aU * m - x) / (sU * sU) + cx * g + cm * jg
            step = fl.gamma / (1 + fl.gamma * np.linalg.norm(G, axis=1, keepdims=True))
            x = x + step * G + np.sqrt(2 * fl.gamma) * rng.standard_normal(x.shape)
        last = len(pts) - 1
        stop = 1 if (fl.skip_last and bi == len(blocks) - 1) else 0
        for i in range(last, stop, -1):
            (at, st), (ap, sp) = pts[i], pts[i - 1]
            m, _ = denoiser_jvp(inst, x, at, st)
            c1, c0, sig = bridge(at, st, ap, sp)
            mu_p = c0 * m + c1 * x
            if sig == 0.0:
                x = mu_p
                continue
            mean, logstd = mu_p.copy(), np.full_like(mu_p, np.log(sig))
            if fl.lr_form == "absolute":
                lr_mu, lr_l = fl.lr, fl.lr
            else:
                lr_mu, lr_l = fl.lr * sig * root_d, fl.lr * root_d
            for _ in range(fl.grad_steps):
                eps = rng.standard_normal(x.shape)
                sd = np.exp(logstd)
                q = mean + sd * eps
                _, gq = pot_grad(q, ap, sp)
                gm = -gq + (mean - mu_p) / (sig * sig)
                gl = -gq * sd * eps + sd * sd / (sig * sig) - 1
                mean = mean - lr_mu * gm / (1e-8 + np.linalg.norm(gm, axis=1, keepdims=True))
                logstd = logstd - lr_l * gl / (1e-8 + np.linalg.norm(gl, axis=1, keepdims=True))
            x = mean + np.exp(logstd) * rng.standard_normal(x.shape)
    return x


def parse_flags(text):
    ap = argparse.ArgumentParser(prog="variant")
    ap.add_argument("--schedule", default="library", choices=["library", "published"])
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--lr-form", default="relative", choices=["relative", "absolute"])
    ap.add_argument("--kl-draw", type=int, default=0)
    ap.add_argument("--skip-last", type=int, default=0)
    ap.add_argument("--langevin", type=int, default=50)
    ap.add_argument("--gamma", type=float, default=1e-3)
    ap.add_argument("--grad-steps", type=int, default=2)
    ap.add_argument("--published-instances", action="store_true")
    ap.add_argument("--program", default=None)
    return ap.parse_args(shlex.split(text))


def instances(args, d_x, fl):
    if fl.published_instances:
        dd = {10: 8, 100: 80}.get(d_x, d_x)
        rng = np.random.default_rng([args.seed, d_x, 1])
        zw = np.random.default_rng([args.weight_seed, dd]).standard_normal(25)
        w = zw * zw / np.sum(zw * zw)
        return [dp.PublishedInstance(rng, dd, 1, w) for _ in range(args.instances)]
    rng = np.random.default_rng([args.seed, d_x, 1])  # posterior_table.py's instances (d_y = 1)
    return [pt.Instance(rng, d_x, 1) for _ in range(args.instances)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--first", type=int, default=0, help="skip the first instances")
    ap.add_argument("--dx", default="10")
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="sampler seeds per instance")
    ap.add_argument("--weight-seed", type=int, default=0)
    ap.add_argument("--per-instance", action="store_true")
    ap.add_argument("--variant", action="append", default=[], help='LABEL="FLAGS" (see the module text)')
    args = ap.parse_args()
    variants = [(v.partition("=")[0], parse_flags(v.partition("=")[2])) for v in args.variant]
    prog = os.path.join(args.build, "diffsample")
    for d_x in [int(v) for v in args.dx.split(",")]:
        res = {}
        floor = []
        with tempfile.TemporaryDirectory() as tmp:
            for label, fl in variants:
                insts = instances(args, d_x, fl)
                dws, sws, linfs = [], [], []
                for i in range(args.first, args.instances):
                    inst = insts[i]
                    dw_i, sw_i, linf_i = [], [], []
                    for s in range(args.seeds):
                        seed = args.seed + 1 + i + 1000 * s
                        srng = np.random.default_rng([seed, d_x, 1, 7])  # posterior_table.py's scoring stream
                        if fl.program is not None:
                            path, out = os.path.join(tmp, "p.json"), os.path.join(tmp, "x.npy")
                            with open(path, "w") as f:
                                json.dump(inst.problem_json(), f)
                            subprocess.run([prog, "solve", "--problem", path, "--sampler", "dcps",
                                            *shlex.split(fl.program), "--executor", "cpu", "--seed", str(seed),
                                            "--quiet", "--out", out, "--particles", str(args.particles),
                                            "--steps", str(args.steps)], check=True)
                            x = np.load(out).astype(np.float64)
                        else:
                            x = dcps(inst, args.particles, np.random.default_rng([seed, d_x, 1, 11]), args.steps, fl)
                        sw, dw, _ = pt.score(inst, x, srng)
                        sh = inst.shares(x)
                        linf_i.append(float(np.max(np.abs(sh / sh.sum() - inst.post_w))))
                        dw_i.append(dw)
                        sw_i.append(sw)
                        if label == variants[0][0]:
                            fx = inst.sample(args.particles, srng)
                            floor.append(pt.score(inst, fx, srng)[:2])
                        if args.per_instance:
                            print(f"  d_x {d_x} {label} instance {i} seed {seed}: SW {sw:.3f} dw {dw:.4f}",
                                  flush=True)
                    dws.append(np.mean(dw_i))
                    sws.append(np.mean(sw_i))
                    linfs.append(np.mean(linf_i))
                res[label] = (np.array(sws), np.array(dws), np.array(linfs))
                med, mean, sd = pt.stats(sws)
                n = len(dws)
                print(f"d_x {d_x} {label}: SW {med:.3f} / {mean:.3f} +- {sd:.3f}, dw {np.mean(dws):.4f} +- "
                      f"{np.std(dws, ddof=1):.4f} (se {np.std(dws, ddof=1) / np.sqrt(n):.4f}), largest weight "
                      f"error {np.mean(linfs):.4f} +- {np.std(linfs, ddof=1):.4f}", flush=True)
        n = args.instances - args.first
        print(f"\nd_x = {d_x}: instances {args.first}..{args.instances - 1}, {args.seeds} seed(s) each (scores "
              f"averaged per instance), {args.particles} samples, {args.steps} steps")
        print("| variant | SW median / mean +- sd | dw mean +- sd | paired dw change vs first (lower on) | "
              "largest weight error mean +- sd |")
        print("|---|---|---|---|---|")
        fsw = np.array([f[0] for f in floor])
        fdw = np.array([f[1] for f in floor])
        print(f"| exact (floor) | {np.median(fsw):.3f} / {fsw.mean():.3f} +- {fsw.std(ddof=1):.3f} | "
              f"{fdw.mean():.4f} +- {fdw.std(ddof=1):.4f} | | |")
        base = res[variants[0][0]][1]
        for label, (sws, dws, linfs) in res.items():
            med, mean, sd = pt.stats(list(sws))
            ch = ""
            if label != variants[0][0]:
                diff = dws - base
                ch = (f"{diff.mean():+.4f} +- {diff.std(ddof=1) / np.sqrt(n):.4f} "
                      f"({int(np.sum(diff < 0))} of {n})")
            print(f"| {label} | {med:.3f} / {mean:.3f} +- {sd:.3f} | {dws.mean():.4f} +- {dws.std(ddof=1):.4f} | "
                  f"{ch} | {linfs.mean():.4f} +- {linfs.std(ddof=1):.4f} |")


if __name__ == "__main__":
    main()
