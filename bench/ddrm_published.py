#!/usr/bin/env python3
"""DDRM on the seed-002 mixture benchmark in NumPy: this library's DDRM and the published mixture script's DDRM
(MCGDiff's `gmm.py`, github.com/Badr-MOUFAD/dcps `src/inverse_problem_with_diffusion_prior/gmm.py`, which calls the
DDRM authors' `efficient_generalized_steps`), one published choice at a time, scored as bench/posterior_table.py
scores (same instances, sliced W1 with 100 directions, mode-share total variation).

The update (three cases per spectral component) is the same in both; what the published script sets differently,
each a flag here:
  --eta-c E        eta of the unobserved components (published: 1; the library uses eta for all components)
  --schedule published
                   the published DDPM table: 999 betas decreasing linearly from 0.02 to 1e-4, alpha-bar with a
                   leading 1, and its time steps (`get_optimal_timesteps_from_singular_values`, 100 points: uniform
                   in sqrt(alpha-bar) down to 1e-2, plus the singular-value points as that function finds them, then
                   a linear tail to index 999; DDRM runs on all but the last point, from there to alpha-bar = 1);
                   `--schedule library` (default) is the library's grid (vp_linear, beta 0.1 .. 20, uniform in t)
  --offset 1       with the published schedule: the noise predictor evaluated at alpha-bar index t while the update
                   uses index t + 1 (published); 0: both at t + 1
  --shared-weights one weight draw shared by all instances of a dimension (--weight-seeds: the draws' seeds)
  --published-instances
                   dimensions 8 and 80 (d_x = 10, 100 read as 8, 80) and one weight draw shared by all instances
                   of a dimension, as the published script builds them
  --program "S [ARGS]"
                   run the program's sampler S (`solve --sampler S ARGS`) instead of the NumPy DDRM, on the
                   instances the other flags build (`--published-instances --program dcps`: the library's DCPS at
                   its defaults on the published instances)
A row `library` runs the program's own DDRM (`solve --sampler ddrm`) on the same instances, to check that the NumPy
`--schedule library` row reproduces it.

usage: python3 bench/ddrm_published.py [--build build] [--instances 6] [--dx 10,100] [--variant LABEL="FLAGS" ...]
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


def denoiser(inst, x, a, s):
    """E[x0 | a x0 + s z = x] for the unit-variance mixture (exact, FP64)."""
    v = a * a + s * s
    am = a * inst.mu
    d2 = np.sum(x * x, 1)[:, None] - 2 * x @ am.T + np.sum(am * am, 1)[None, :]
    lr = np.log(inst.w)[None, :] - 0.5 * d2 / v
    lr -= lr.max(1, keepdims=True)
    r = np.exp(lr)
    r /= r.sum(1, keepdims=True)
    return r @ inst.mu + (a / v) * (x - (r @ am))


def library_grid(steps):
    """(a, s) at the library's default grid: vp_linear (beta 0.1 .. 20), uniform in t from 1 to 0."""
    t = np.linspace(1.0, 0.0, steps + 1)
    ab = np.exp(-(0.1 * t + 0.5 * (20.0 - 0.1) * t * t))
    return [(np.sqrt(v), np.sqrt(1 - v)) for v in ab]


def published_table():
    betas = np.linspace(0.02, 1e-4, 999, dtype=np.float32)
    return np.cumprod(np.concatenate([[1.0], 1.0 - betas]).astype(np.float32)).astype(np.float32)


def published_timesteps(ab, singular, n, var):
    """As get_optimal_timesteps_from_singular_values (mode 'else'): note that it takes its singular-value points as
    positions in the sorted unique distances (torch.unique sorts), not as time indices; reproduced as is."""
    ab32 = ab.astype(np.float32)
    dist = np.unique((np.float32(var) * ab32[None, :] - (1 - ab32)[None, :] * (singular[:, None] ** 2)).astype(
        np.float32))
    opt = sorted(set([int(np.argmin(np.abs(dist)))]))
    if opt[0] == 0:
        opt = opt[1:]
    ts = [0]
    sq = np.sqrt(ab32)
    end = int(np.where(sq < 1e-2)[0][0])
    target = (sq[0] - sq[end]) / (n - 1 - len(opt))
    last = sq[0]
    for i in range(1, end):
        if last - sq[i] >= target:
            ts.append(i)
            last = sq[i]
        elif i in opt:
            ts.append(i)
            last = sq[i]
    tail = np.ceil(np.linspace(ts[-1], len(ab) - 1, n - len(ts) + 1, dtype=np.float32)).tolist()[1:]
    return [int(v) for v in ts + tail]


def ddrm(inst, n, rng, steps, eta=0.85, eta_b=1.0, eta_c=None, schedule="library", offset=1):
    """DDRM samples (n x d). Both forms share the update of efficient_generalized_steps; they differ in the grid
    (and its index convention) and in eta_c (default: eta)."""
    eta_c = eta if eta_c is None else eta_c
    d = inst.d_x
    U, S, Vt = np.linalg.svd(inst.A, full_matrices=True)
    r = int(np.sum(S > 1e-6 * S.max()))
    S = S[:r]
    V = Vt.T  # d x d, the first r columns observed
    ybar = (U.T @ inst.y)[:r] / S
    noise = inst.sigma_y / S
    if schedule == "library":
        pts = library_grid(steps)
        # (a_model, s_model) of the denoiser, (a, s) of x, (a_next, s_next)
        moves = [(pts[k], pts[k], pts[k + 1]) for k in range(steps)]
    else:
        ab = published_table().astype(np.float64)
        seq = published_timesteps(ab, S, steps, inst.sigma_y ** 2)[:-1]
        seq_next = [-1] + seq[:-1]
        moves = []
        for i, j in zip(reversed(seq), reversed(seq_next)):
            at, an = ab[i + 1], ab[j + 1]
            am = ab[i + 1 - offset]
            moves.append(((np.sqrt(am), np.sqrt(1 - am)), (np.sqrt(at), np.sqrt(1 - at)), (np.sqrt(an), np.sqrt(1 - an))))
    a0, s0 = moves[0][1]
    sig0 = s0 / a0
    xi = rng.standard_normal((n, d))
    z = xi @ V  # spectral
    for c in range(r):
        if noise[c] < sig0:
            z[:, c] = ybar[c] + np.sqrt(sig0 ** 2 - noise[c] ** 2) * z[:, c]
        else:
            z[:, c] = sig0 * z[:, c]
    z[:, r:] *= sig0
    x = a0 * (z @ V.T)
    for (am, sm), (a, s), (an, sn) in moves:
        if sm > 0:
            m = denoiser(inst, x, am, sm)
            # eps from the model's channel, x0 from the update's channel (equal without the offset)
            eps = (x - am * m) / sm
            x0 = (x - s * eps) / a
        else:
            eps = np.zeros_like(x)
            x0 = x / a
        sig_n = sn / an
        x0b, eb = x0 @ V, eps @ V
        fresh = rng.standard_normal((n, d))
        new = x0b + sig_n * np.sqrt(1 - eta_c ** 2) * eb + eta_c * sig_n * fresh
        for c in range(r):
            if sig_n < noise[c]:
                new[:, c] = (x0b[:, c] + sig_n * np.sqrt(1 - eta ** 2) * (ybar[c] - x0b[:, c]) / noise[c]
                             + eta * sig_n * fresh[:, c])
            else:
                new[:, c] = ((1 - eta_b) * x0b[:, c] + eta_b * ybar[c]
                             + np.sqrt(max(sig_n ** 2 - noise[c] ** 2 * eta_b ** 2, 0.0)) * fresh[:, c])
        x = an * (new @ V.T)
    return x


class PublishedInstance(pt.Instance):
    """An instance as the published script builds it (means (8i, 8j, ...) in the same grid, d even), with the
    prior's weights given (one draw per dimension)."""

    def __init__(self, rng, d_x, d_y, w):
        state = rng.bit_generator.state
        super().__init__(rng, d_x, d_y)
        # rebuild with the shared weights: same draws after the weights
        rng.bit_generator.state = state
        rng.standard_normal(25)
        self.w = w
        u, _, vt = np.linalg.svd(rng.standard_normal((d_y, d_x)), full_matrices=True)
        s = np.sort(rng.uniform(size=d_y))[::-1]
        self.A = u @ np.diag(s) @ vt[:d_y, :]
        self.sigma_y = float(rng.uniform() * s.max())
        k = rng.choice(25, p=self.w)
        x0 = self.mu[k] + rng.standard_normal(d_x)
        self.y = self.A @ x0 + self.sigma_y * rng.standard_normal(d_y)
        s2 = self.sigma_y ** 2
        self.C = np.linalg.inv(np.eye(d_x) + self.A.T @ self.A / s2)
        self.C = 0.5 * (self.C + self.C.T)
        self.L = np.linalg.cholesky(self.C)
        self.m = (self.mu + (self.A.T @ self.y / s2)[None, :]) @ self.C.T
        Sm = s2 * np.eye(d_y) + self.A @ self.A.T
        res = self.y[None, :] - self.mu @ self.A.T
        lw = np.log(self.w) - 0.5 * np.einsum("ki,ij,kj->k", res, np.linalg.inv(Sm), res)
        lw -= lw.max()
        self.post_w = np.exp(lw) / np.exp(lw).sum()


def parse_flags(text):
    ap = argparse.ArgumentParser(prog="variant")
    ap.add_argument("--eta", type=float, default=0.85)
    ap.add_argument("--eta-b", type=float, default=1.0)
    ap.add_argument("--eta-c", type=float, default=None)
    ap.add_argument("--schedule", default="library", choices=["library", "published"])
    ap.add_argument("--offset", type=int, default=1)
    ap.add_argument("--published-instances", action="store_true")
    ap.add_argument("--shared-weights", action="store_true", help="one weight draw per dimension, d_x as given")
    ap.add_argument("--program", default=None, help="run the program's sampler (`solve --sampler S [ARGS]`)")
    return ap.parse_args(shlex.split(text))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--instances", type=int, default=6)
    ap.add_argument("--dx", default="10,100")
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weight-seeds", default="0", help="published instances: seeds of the shared weight draw")
    ap.add_argument("--no-library", action="store_true", help="skip the program's own DDRM row")
    ap.add_argument("--variant", action="append", default=[], help='LABEL="FLAGS" (see the module text)')
    args = ap.parse_args()
    variants = [(v.partition("=")[0], parse_flags(v.partition("=")[2])) for v in args.variant]
    if not variants:
        variants = [("numpy library", parse_flags(""))]
    prog = os.path.join(args.build, "diffsample")
    for d_x in [int(v) for v in args.dx.split(",")]:
        rows = {}
        groups = {}
        for label, fl in variants:
            shared = fl.published_instances or fl.shared_weights
            wseeds = [int(v) for v in args.weight_seeds.split(",")] if shared else [None]
            for ws in wseeds:
                dd = {10: 8, 100: 80}.get(d_x, d_x) if fl.published_instances else d_x
                rng = np.random.default_rng([args.seed, d_x, 1])
                if ws is None:
                    insts = [pt.Instance(rng, dd, 1) for _ in range(args.instances)]
                else:
                    zw = np.random.default_rng([ws, dd]).standard_normal(25)
                    w = zw * zw / np.sum(zw * zw)
                    insts = [PublishedInstance(rng, dd, 1, w) for _ in range(args.instances)]
                key = label + ("" if ws is None else f" [w seed {ws}]")
                groups[key] = (insts, fl)
        if not args.no_library:
            rng = np.random.default_rng([args.seed, d_x, 1])
            groups["library (solve)"] = ([pt.Instance(rng, d_x, 1) for _ in range(args.instances)], None)
        with tempfile.TemporaryDirectory() as tmp:
            for key, (insts, fl) in groups.items():
                sw, dw = [], []
                for i, inst in enumerate(insts):
                    srng = np.random.default_rng([args.seed + 1 + i, d_x, 1, 7])
                    if fl is None or fl.program:
                        path = os.path.join(tmp, "p.json")
                        with open(path, "w") as f:
                            json.dump(inst.problem_json(), f)
                        out = os.path.join(tmp, "x.npy")
                        sampler = shlex.split(fl.program) if fl is not None else ["ddrm"]
                        subprocess.run([prog, "solve", "--problem", path, "--sampler", *sampler, "--executor", "cpu",
                                        "--seed", str(args.seed + 1 + i), "--quiet", "--out", out, "--particles",
                                        str(args.particles), "--steps", str(args.steps)], check=True)
                        x = np.load(out).astype(np.float64)
                    else:
                        x = ddrm(inst, args.particles, srng, args.steps, eta=fl.eta, eta_b=fl.eta_b, eta_c=fl.eta_c,
                                 schedule=fl.schedule, offset=fl.offset)
                    ref = inst.sample(len(x), srng)
                    sw.append(pt.sliced_w1(x, ref, 100, srng))
                    dw.append(pt.tv(inst.shares(x), inst.post_w))
                med, mean, sd = pt.stats(sw)
                rows[key] = (med, mean, sd, np.mean(dw), np.std(dw, ddof=1) if len(dw) > 1 else 0.0, sw)
                print(f"d_x {d_x} {key}: SW {med:.3f} / {mean:.3f} +- {sd:.3f}, dw {rows[key][3]:.4f} +- "
                      f"{rows[key][4]:.4f}", flush=True)
        print(f"\nd_x = {d_x}: {args.instances} instances, {args.particles} samples")
        print("| DDRM form | SW median / mean +- std | dw mean +- std |")
        print("|---|---|---|")
        for key, r in rows.items():
            print(f"| {key} | {r[0]:.2f} / {r[1]:.2f} +- {r[2]:.2f} | {r[3]:.3f} +- {r[4]:.3f} |")
        for p in pt.PUBLISHED.get(d_x, []):
            if p[0] == "DDRM":
                print(f"| published DDRM (seed 002) | {p[1]:.2f} / {p[2]:.2f} +- {p[3]:.2f} | {p[4]:.2f} +- {p[5]:.2f} |")


if __name__ == "__main__":
    main()
