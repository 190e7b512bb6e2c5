#!/usr/bin/env python3
"""Posterior samplers on the 25-component mixture benchmark of seed 002 (MCGDiff's Gaussian-mixture experiment),
scored as its results table scores them: sliced W1 (100 directions) of the samples to as many exact posterior
samples, median / mean +- std over instances, and the error of the mode weights, beside the exact-vs-exact floor and
the published rows.

Instances (as the published experiment builds them): the prior is the 25-component grid mixture with means
(8i, 8j, 8i, 8j, ...), (i, j) in {-2..2}^2, unit covariances and weights w = z^2 / sum z^2 with z ~ N(0, I_25);
A = U diag(s) V^T with U, V the singular vectors of a d_y x d_x matrix of N(0, 1) entries and s sorted uniform [0, 1)
values (largest first); sigma_y = u max(s), u ~ U[0, 1); y = A x0 + sigma_y z with x0 drawn from the prior.

Every posterior sampler the program offers (`diffsample solve --help`, checked by running each name once on a small
problem) runs on the CPU executor (or --executor cuda), --particles particles (the samples) and --steps steps, through a problem file.
Scores, all computed here in NumPy against the closed-form posterior (the reference; its component weights are
checked against the program's `solve --sampler exact` report):

- SW: sliced W1, 100 random directions, samples against as many independent exact posterior samples;
- dw: total variation between the samples' mode shares (each sample assigned to its most probable component,
  p(k | x, y) = p(k | x) for this model) and the exact posterior weights;
- SW within: the same distance to exact samples drawn with the sampler's own mode shares (so what is left is the
  error inside the modes); "prop." is the median over instances of 1 - SW_within / SW, the share of the distance
  due to the mode proportions;
- floor: the same scores for a second set of exact posterior samples (exact-vs-exact).

usage: python3 bench/posterior_table.py [--build build] [--instances 20] [--dx 10,100] [--dy 1]
           [--samplers smc,dps,...] [--particles 2000] [--steps 100] [--seed 0] [--default-settings] [--time-grid G]
           [--variant LABEL="SOLVE ARGS" ...] [--seeds K --instance I] [--per-instance] [--threads 1]
           [--limit NAME=N ...] [--worst-seeds K] [--executor cpu|cuda]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

# solve's default particle count (the samples) per executor (`diffsample solve --help`).
DEFAULT_PARTICLES = {"cpu": 4096, "cuda": 65536}

# Seed 002, Table 1 (d_y = 1): SW median, SW mean, SW std, dw mean, dw std.
PUBLISHED = {
    10: [("MCGDiff", 2.25, 2.69, 2.07, 0.32, 0.20), ("DPS", 3.12, 5.64, 8.45, 0.20, 0.12),
         ("DDRM", 2.66, 3.06, 1.90, 0.36, 0.16), ("DCPS50", 1.95, 2.70, 2.28, 0.17, 0.25),
         ("DCPS500", 1.26, 2.59, 2.83, 0.13, 0.30)],
    100: [("MCGDiff", 2.72, 3.13, 1.76, 0.42, 0.19), ("DPS", 4.29, 4.93, 4.85, 0.35, 0.25),
          ("DDRM", 5.97, 6.26, 2.33, 0.52, 0.19), ("DCPS50", 4.40, 4.72, 2.18, 0.44, 0.16),
          ("DCPS500", 2.81, 3.22, 2.21, 0.32, 0.18)],
}
# Names tried beside the words of the help text; only those the program accepts are used.
KNOWN = ["smc", "dps", "pigdm", "tmpd", "ddrm", "dcps", "diffpir", "skrock"]


def grid_means(d):
    """The 25 means (8i, 8j, 8i, 8j, ...), in the program's grid order (spacing 8, size 5)."""
    mu = np.zeros((25, d))
    for k in range(25):
        for j in range(d):
            g = k // 5 if j % 2 == 0 else k % 5
            mu[k, j] = 8.0 * (g - 2)
    return mu


class Instance:
    """One inverse problem and its closed-form posterior (unit component covariances)."""

    def __init__(self, rng, d_x, d_y):
        self.d_x, self.d_y = d_x, d_y
        self.mu = grid_means(d_x)
        z = rng.standard_normal(25)
        self.w = z * z / np.sum(z * z)
        u, _, vt = np.linalg.svd(rng.standard_normal((d_y, d_x)), full_matrices=True)
        s = np.sort(rng.uniform(size=d_y))[::-1]
        self.A = u @ np.diag(s) @ vt[:d_y, :]
        self.sigma_y = float(rng.uniform() * s.max())
        k = rng.choice(25, p=self.w)
        x0 = self.mu[k] + rng.standard_normal(d_x)
        self.y = self.A @ x0 + self.sigma_y * rng.standard_normal(d_y)
        # Posterior: component k is N(m_k, C), C = (I + A^T A / s^2)^-1, m_k = C (mu_k + A^T y / s^2); its weight is
        # w_k N(y; A mu_k, s^2 I + A A^T).
        s2 = self.sigma_y ** 2
        self.C = np.linalg.inv(np.eye(d_x) + self.A.T @ self.A / s2)
        self.C = 0.5 * (self.C + self.C.T)
        self.L = np.linalg.cholesky(self.C)
        self.m = (self.mu + (self.A.T @ self.y / s2)[None, :]) @ self.C.T
        S = s2 * np.eye(d_y) + self.A @ self.A.T
        r = self.y[None, :] - self.mu @ self.A.T
        lw = np.log(self.w) - 0.5 * np.einsum("ki,ij,kj->k", r, np.linalg.inv(S), r)
        lw -= lw.max()
        self.post_w = np.exp(lw) / np.exp(lw).sum()

    def problem_json(self):
        return {"prior": {"grid": {"dim": self.d_x, "size": 5, "spacing": 8.0, "variance": 1.0},
                          "weights": [float(v) for v in self.w]},
                "observation": {"A": [[float(v) for v in row] for row in self.A], "sigma_y": self.sigma_y,
                                "y": [float(v) for v in self.y]}}

    def sample_counts(self, counts, rng):
        """Exact posterior samples with counts[k] from component k."""
        ks = np.repeat(np.arange(25), counts)
        return self.m[ks] + rng.standard_normal((len(ks), self.d_x)) @ self.L.T

    def sample(self, n, rng):
        return self.sample_counts(rng.multinomial(n, self.post_w), rng)

    def shares(self, x):
        """Mode shares: each sample to its most probable component (p(k | x, y) = p(k | x) here)."""
        score = np.log(self.w)[None, :] - 0.5 * (
            np.sum(x * x, 1)[:, None] - 2 * x @ self.mu.T + np.sum(self.mu * self.mu, 1)[None, :])
        return np.bincount(np.argmax(score, 1), minlength=25)


def mala_move(inst, x, steps, gamma, rng):
    """Prototype of a final resample-move: `steps` preconditioned MALA moves per sample on p(x) p(y | x) at s = 0,
    from the prior's score and log-density (what a model gives at s -> 0) and the operator. Preconditioner
    M = (I + A^T A / sigma_y^2)^-1 (the operator only: the likelihood's curvature over a unit prior scale); proposal
    x' = x + gamma M g(x) + sqrt(2 gamma) M^1/2 z. Returns the moved samples and the acceptance rate."""
    s2 = inst.sigma_y ** 2
    Minv = np.eye(inst.d_x) + inst.A.T @ inst.A / s2
    ev, U = np.linalg.eigh(Minv)
    M = (U / ev) @ U.T
    Mh = (U / np.sqrt(ev)) @ U.T
    lw = np.log(inst.w)

    def logp_grad(z):
        d2 = np.sum(z * z, 1)[:, None] - 2 * z @ inst.mu.T + np.sum(inst.mu * inst.mu, 1)[None, :]
        lc = lw[None, :] - 0.5 * d2
        m = lc.max(1, keepdims=True)
        r = np.exp(lc - m)
        tot = r.sum(1, keepdims=True)
        r /= tot
        res = inst.y[None, :] - z @ inst.A.T
        lp = (m[:, 0] + np.log(tot[:, 0])) - 0.5 * np.sum(res * res, 1) / s2
        g = r @ inst.mu - z + res @ inst.A / s2
        return lp, g

    lp, g = logp_grad(x)
    accepted = 0
    for _ in range(steps):
        mean = x + gamma * g @ M
        xp = mean + np.sqrt(2 * gamma) * rng.standard_normal(x.shape) @ Mh
        lpp, gp = logp_grad(xp)
        back = xp + gamma * gp @ M
        fwd_r, back_r = xp - mean, x - back
        la = (lpp - lp - np.einsum("ij,jk,ik->i", back_r, Minv, back_r) / (4 * gamma)
              + np.einsum("ij,jk,ik->i", fwd_r, Minv, fwd_r) / (4 * gamma))
        ok = np.log(rng.uniform(size=len(x))) < la
        x = np.where(ok[:, None], xp, x)
        lp = np.where(ok, lpp, lp)
        g = np.where(ok[:, None], gp, g)
        accepted += ok.sum()
    return x, accepted / (steps * len(x))


def sliced_w1(a, b, directions, rng):
    """Mean over random unit directions of the 1-D W1 between the projections (equal sizes)."""
    th = rng.standard_normal((a.shape[1], directions))
    th /= np.linalg.norm(th, axis=0, keepdims=True)
    pa, pb = np.sort(a @ th, axis=0), np.sort(b @ th, axis=0)
    return float(np.mean(np.abs(pa - pb)))


def tv(counts, w):
    return 0.5 * float(np.sum(np.abs(counts / counts.sum() - w)))


ENV = dict(os.environ)


def run(cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def default_potentials(prog):
    """What the plain smc row runs: the default of solve's --potentials (from its help), described."""
    help_text = run([prog, "solve", "--help"]).stdout
    pot = re.search(r"--potentials\s+NAME\s+([^:]*)", help_text)
    default = re.search(r"([a-z_]+)\s*\(default\)", pot.group(1)) if pot else None
    name = default.group(1) if default else "unknown"
    if name == "automatic":
        return ("automatic (twisted potentials with --start-correction and --multistep-kernel at d_y <= 8 on a grid "
                "ending at t = 0, else linear)")
    return name


def discover(prog, tmp):
    """Samplers `solve` offers: the words of its --sampler help entry and the KNOWN names, each run once on a small
    problem; those that run (exit 0) are kept. With --dps-step in the help, dps runs once per step form."""
    help_text = run([prog, "solve", "--help"]).stdout
    m = re.search(r"--sampler\s+NAME(.*?)(?=\n\s+--)", help_text, re.S)
    words = re.findall(r"\b[a-z][a-z0-9_]*\b", m.group(1)) if m else []
    cand = []
    for w in KNOWN + words:
        if w not in cand and w != "exact":
            cand.append(w)
    rng = np.random.default_rng(1)
    inst = Instance(rng, 4, 1)
    path = os.path.join(tmp, "probe.json")
    with open(path, "w") as f:
        json.dump(inst.problem_json(), f)
    found = []
    for w in cand:
        r = run([prog, "solve", "--problem", path, "--sampler", w, "--particles", "16", "--steps", "4",
                 "--executor", "cpu", "--quiet"])
        if r.returncode == 0:
            found.append(w)
    out = []
    forms = re.search(r"--dps-step\s+([a-z|_]+)", help_text)
    for w in found:
        if w == "dps" and forms:
            out += ["dps:" + f for f in forms.group(1).split("|")]
        else:
            out.append(w)
    # smc once per potentials form: the words of --potentials' entry before its first ':' (e.g. "automatic
    # (default), linear, moment or twisted"), each run once; the default form is the plain "smc" row (its name is
    # printed with the table: automatic resolves to twisted potentials with the start correction and the multistep
    # kernel at d_y <= 8, else linear ones).
    pot = re.search(r"--potentials\s+NAME\s+([^:]*)", help_text)
    if "smc" in out and pot:
        default = re.search(r"([a-z_]+)\s*\(default\)", pot.group(1))
        for w in re.findall(r"\b[a-z][a-z0-9_]*\b", pot.group(1)):
            if w in ("default", "or", "and") or (default and w == default.group(1)) or "smc:" + w in out:
                continue
            r = run([prog, "solve", "--problem", path, "--sampler", "smc", "--potentials", w, "--particles", "16",
                     "--steps", "4", "--executor", "cpu", "--quiet"])
            if r.returncode == 0:
                out.insert(out.index("smc") + 1 + sum(o.startswith("smc:") for o in out), "smc:" + w)
    return out


def solve_args(label, variants):
    if label.startswith("smc["):
        extra = dict(v.split("=", 1) for v in variants)[label[4:-1]].split()
        return extra if "--sampler" in extra else ["--sampler", "smc"] + extra
    name, _, form = label.partition(":")
    args = ["--sampler", name]
    if form:
        args += ["--potentials" if name == "smc" else "--dps-step", form]
    return args


def stats(v):
    v = np.asarray(v, float)
    return np.median(v), v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--dx", default="10,100")
    ap.add_argument("--dy", default="1", help="comma-separated d_y values (seed 002: 1; second table: 2,4)")
    ap.add_argument("--samplers", default="",
                    help="comma-separated (default: every sampler solve offers; none: only the --variant rows)")
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="instances' seed (the samplers use seed + 1 + i)")
    ap.add_argument("--default-settings", action="store_true",
                    help="run solve with its default particles and steps (scores at the sample count it returns)")
    ap.add_argument("--variant", action="append", default=[],
                    help="LABEL=ARGS: one more row, smc[LABEL], run with these extra solve arguments (repeatable; ARGS "
                         "may name another --sampler), "
                         "on the same instances and seeds as the others")
    ap.add_argument("--time-grid", default="",
                    help="solve --time-grid for every sampler with a diffusion grid (all but skrock): uniform, "
                         "quadratic, sqrt_alpha_bar or spectral (default: solve's own)")
    ap.add_argument("--mala", default="",
                    help="STEPS,GAMMA: a row smc+mala, smc's samples moved by STEPS preconditioned MALA steps of "
                         "length GAMMA on p(x) p(y | x) (a NumPy prototype of a final resample-move)")
    ap.add_argument("--common-reference", action="store_true",
                    help="score every row of an instance and seed against the same exact samples and SW directions "
                         "(the floor row too: its own exact samples against them), so that paired SW changes carry no "
                         "reference noise (default: fresh reference samples per row, as the published table)")
    ap.add_argument("--paired-against", default="smc",
                    help="the row the paired changes are taken against (default smc; e.g. smc[LABEL] for a variant)")
    ap.add_argument("--seeds", type=int, default=1, help="sampler seeds per instance (run-to-run spread)")
    ap.add_argument("--instance", type=int, default=-1, help="only this instance index (with --seeds)")
    ap.add_argument("--per-instance", action="store_true", help="print every instance's scores")
    ap.add_argument("--limit", action="append", default=[],
                    help="NAME=N: run sampler NAME (a row label) on the first N instances only (repeatable; for "
                         "expensive samplers; the table says so)")
    ap.add_argument("--executor", choices=["cpu", "cuda"], default="cpu",
                    help="the executor the samplers run on (default cpu; the exact reference checks run on the CPU). "
                         "With --default-settings the floor draws as many exact samples as solve's default particle "
                         "count on that executor (4096 on the CPU, 65536 on a GPU)")
    ap.add_argument("--worst-seeds", type=int, default=0,
                    help="K: after each table, the weight error of the smc rows and the floor over K seeds on the "
                         "instance where smc's weight error was largest (run-to-run spread)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU executor threads per run (OMP_NUM_THREADS; default 1: the runs are many and small, and "
                         "on a busy machine a second thread mostly waits; results do not depend on it)")
    args = ap.parse_args()
    ENV["OMP_NUM_THREADS"] = str(args.threads)
    prog = os.path.join(args.build, "diffsample")
    if not os.access(prog, os.X_OK):
        sys.exit(f"posterior_table: {prog} not found (build the diffsample_cli target)")

    with tempfile.TemporaryDirectory() as tmp:
        samplers = ([] if args.samplers == "none" else args.samplers.split(",")) if args.samplers else discover(prog, tmp)
        samplers += ["smc[" + v.partition("=")[0] + "]" for v in args.variant]
        if args.mala:
            samplers.append("smc+mala")
        print(f"samplers: {', '.join(samplers)}; particles {'default' if args.default_settings else args.particles}, "
              f"steps {'default' if args.default_settings else args.steps}, {args.executor.upper()} executor, instances' seed {args.seed}"
              + (f", time grid {args.time_grid}" if args.time_grid else "")
              + "".join(f"; smc[{v.partition('=')[0]}]: {v.partition('=')[2]}" for v in args.variant))
        if "smc" in samplers:
            print("smc: solve's default potentials, " + default_potentials(prog))
        for d_y in [int(v) for v in args.dy.split(",")]:
            for d_x in [int(v) for v in args.dx.split(",")]:
                table(args, prog, tmp, samplers, d_x, d_y)


def draw(args, prog, name, inst, path, tmp, seed, srng, state):
    """One sampler's samples on one instance with one seed (None if solve failed is fatal; non-finite are returned)."""
    if name == "exact (floor)":
        return inst.sample(args.particles if not args.default_settings else DEFAULT_PARTICLES[args.executor], srng)
    if name == "smc+mala":
        k, gamma = args.mala.split(",")
        x, rate = mala_move(inst, state["smc"], int(k), float(gamma), srng)
        if args.per_instance:
            print(f"  MALA acceptance {rate:.3f}")
        return x
    out = os.path.join(tmp, "x.npy")
    sampler_args = solve_args(name, args.variant)
    cmd = [prog, "solve", "--problem", path, *sampler_args, "--executor", args.executor, "--seed", str(seed), "--quiet",
           "--out", out]
    if not args.default_settings:
        # a variant's own --particles or --steps stands in for the table's
        cmd += [arg for flag, value in (("--particles", args.particles), ("--steps", args.steps))
                if flag not in sampler_args for arg in (flag, str(value))]
    if (args.time_grid and "--time-grid" not in sampler_args
            and sampler_args[sampler_args.index("--sampler") + 1] != "skrock"):
        cmd += ["--time-grid", args.time_grid]
    r = run(cmd)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")
    x = np.load(out).astype(np.float64)
    if name == "smc":
        state["smc"] = x
    return x


def score(inst, x, srng, common=None):
    """(SW, dw, SW within) of samples x against exact posterior samples of the same size. common: None, or a
    (reference samples, direction seed) pair shared by every row of one run (--common-reference): the SW of every row
    is then taken against the same exact samples along the same directions, so that paired differences between
    rows carry no reference noise."""
    counts = inst.shares(x)
    if common is not None:
        ref, dseed = common
        within_ref = inst.sample_counts(counts, srng)
        return (sliced_w1(x, ref[:len(x)], 100, np.random.default_rng(dseed)), tv(counts, inst.post_w),
                sliced_w1(x, within_ref, 100, np.random.default_rng(dseed)))
    ref = inst.sample(len(x), srng)
    return (sliced_w1(x, ref, 100, srng), tv(counts, inst.post_w),
            sliced_w1(x, inst.sample_counts(counts, srng), 100, srng))


def write_problem(inst, tmp, tag):
    path = os.path.join(tmp, f"p{tag}.json")
    with open(path, "w") as f:
        json.dump(inst.problem_json(), f)
    return path


def table(args, prog, tmp, samplers, d_x, d_y):
    rng = np.random.default_rng([args.seed, d_x, d_y])
    instances = [Instance(rng, d_x, d_y) for _ in range(args.instances)]
    idx = range(len(instances)) if args.instance < 0 else [args.instance]
    limit = {k: int(v) for k, v in (e.split("=", 1) for e in args.limit)}
    names = ["exact (floor)"] + samplers
    rows = {name: {"sw": [], "dw": [], "within": [], "diverged": 0, "runs": 0, "time": 0.0, "key": []}
            for name in names}
    worst = {}
    for i in idx:
        inst = instances[i]
        path = write_problem(inst, tmp, f"{d_x}_{d_y}_{i}")
        # The program's exact posterior weights against the closed form here.
        rep = os.path.join(tmp, "exact.json")
        r = run([prog, "solve", "--problem", path, "--sampler", "exact", "--samples", "16", "--executor", "cpu",
                 "--quiet", "--report", rep])
        if r.returncode != 0:
            sys.exit(f"solve --sampler exact failed on instance {i}: {r.stderr}")
        with open(rep) as f:
            lib_w = np.array(json.load(f)["posterior_weights"])
        if np.max(np.abs(lib_w - inst.post_w)) > 1e-6:
            sys.exit(f"instance {i}: posterior weights differ from the program's by {np.max(np.abs(lib_w - inst.post_w))}")
        for s in range(args.seeds):
            seed = args.seed + 1 + i + 1000 * s
            srng = np.random.default_rng([seed, d_x, d_y, 7])
            state = {}
            common = None
            if args.common_reference:
                crng = np.random.default_rng([seed, d_x, d_y, 11])
                common = (inst.sample(args.particles if not args.default_settings else DEFAULT_PARTICLES[args.executor], crng), [seed, d_x, d_y, 13])
            for name in names:
                if i >= limit.get(name, len(instances)):
                    continue
                t0 = time.perf_counter()
                x = draw(args, prog, name, inst, path, tmp, seed, srng, state)
                rows[name]["time"] += time.perf_counter() - t0
                rows[name]["runs"] += 1
                if not np.all(np.isfinite(x)):
                    rows[name]["diverged"] += 1
                    continue
                sw, dw, within = score(inst, x, srng, common)
                rows[name]["sw"].append(sw)
                rows[name]["dw"].append(dw)
                rows[name]["within"].append(within)
                rows[name]["key"].append((i, s))
                if args.per_instance or args.seeds > 1:
                    print(f"  d_x {d_x} d_y {d_y} instance {i} seed {seed} {name}: SW {sw:.3f} dw {dw:.4f} "
                          f"within {within:.3f} (sigma_y {inst.sigma_y:.3f}, {time.perf_counter() - t0:.1f} s)",
                          flush=True)
                if name == "smc" and dw > worst.get("dw", -1):
                    worst = {"dw": dw, "instance": i}
    n = len(idx) * args.seeds
    print(f"\nd_x = {d_x}, d_y = {d_y}: {len(idx)} instances x {args.seeds} seeds"
          + ("".join(f"; {k}: first {v} instances" for k, v in limit.items() if v < len(idx))))
    print(f"| sampler | SW median / mean +- std | dw mean +- std | SW within (median) | prop. | diverged |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        if not r["sw"]:
            print(f"| {name} | - | - | - | - | {r['diverged']}/{r['runs']} |")
            continue
        med, mean, sd = stats(r["sw"])
        _, dmean, dsd = stats(r["dw"])
        wmed = np.median(r["within"])
        prop = np.median(1 - np.asarray(r["within"]) / np.asarray(r["sw"]))
        print(f"| {name} | {med:.3f} / {mean:.3f} +- {sd:.3f} | {dmean:.4f} +- {dsd:.4f} | {wmed:.3f} | "
              f"{prop:.2f} | {r['diverged']}/{r['runs']} |")
    if d_y == 1 and d_x in PUBLISHED:
        for p in PUBLISHED[d_x]:
            print(f"| {p[0]} (seed 002) | {p[1]:.2f} / {p[2]:.2f} +- {p[3]:.2f} | {p[4]:.2f} +- {p[5]:.2f} | | | |")
    else:
        print("(seed 002 publishes d_y = 1 only: no published rows)")
    print(f"seconds per run ({args.executor.upper()} executor, this machine's load, process start included): "
          + ", ".join(f"{k} {r['time'] / r['runs']:.2f}" for k, r in rows.items() if r["runs"] and k != "exact (floor)"))
    # Paired changes against smc, or the row --paired-against names (the same instances and seeds): mean +- se of the
    # differences, and on how many runs the row is lower.
    ref = args.paired_against
    if ref in rows and rows[ref]["sw"]:
        base = {key: (sw, dw, w) for key, sw, dw, w in
                zip(rows[ref]["key"], rows[ref]["sw"], rows[ref]["dw"], rows[ref]["within"])}
        for name, r in rows.items():
            if name in (ref, "exact (floor)") or not r["sw"]:
                continue
            pairs = [(sw - base[key][0], dw - base[key][1], w - base[key][2])
                     for key, sw, dw, w in zip(r["key"], r["sw"], r["dw"], r["within"]) if key in base]
            if len(pairs) < 2:
                continue
            d = np.asarray(pairs)
            se = d.std(axis=0, ddof=1) / np.sqrt(len(d))
            print(f"paired {name} - {ref} over {len(d)} runs: dw {d[:, 1].mean():+.4f} +- {se[1]:.4f} (lower on "
                  f"{int(np.sum(d[:, 1] < 0))}), SW {d[:, 0].mean():+.3f} +- {se[0]:.3f} (lower on "
                  f"{int(np.sum(d[:, 0] < 0))}), SW within {d[:, 2].mean():+.3f} +- {se[2]:.3f} (lower on "
                  f"{int(np.sum(d[:, 2] < 0))})")
    fl = rows["exact (floor)"]
    if "smc" in rows and rows["smc"]["sw"] and fl["sw"]:
        print(f"smc / floor: SW median {np.median(rows['smc']['sw']) / np.median(fl['sw']):.2f}x, "
              f"dw mean {np.mean(rows['smc']['dw']) / np.mean(fl['dw']):.2f}x; "
              f"worst smc dw {worst.get('dw', 0):.4f} on instance {worst.get('instance', -1)}")
    if args.worst_seeds > 0 and worst:
        spread(args, prog, tmp, samplers, instances[worst["instance"]], worst["instance"], d_x, d_y)


def spread(args, prog, tmp, samplers, inst, i, d_x, d_y):
    """The weight error's run-to-run spread on one instance: every smc row and the exact floor with
    --worst-seeds seeds (the first is the table's)."""
    path = write_problem(inst, tmp, f"{d_x}_{d_y}_{i}")
    names = ["exact (floor)"] + [n for n in samplers if n == "smc" or n.startswith("smc:") or n.startswith("smc[")]
    dws = {name: [] for name in names}
    for s in range(args.worst_seeds):
        seed = args.seed + 1 + i + 1000 * s
        srng = np.random.default_rng([seed, d_x, d_y, 7])
        state = {}
        for name in names:
            x = draw(args, prog, name, inst, path, tmp, seed, srng, state)
            dws[name].append(score(inst, x, srng)[1] if np.all(np.isfinite(x)) else np.nan)
    print(f"weight error over {args.worst_seeds} seeds on instance {i} (d_x = {d_x}, d_y = {d_y}; mean +- sd, range):")
    for name, v in dws.items():
        v = np.asarray(v)
        print(f"  {name}: {np.nanmean(v):.4f} +- {np.nanstd(v, ddof=1):.4f} ({np.nanmin(v):.4f} .. {np.nanmax(v):.4f})"
              + (f", {int(np.isnan(v).sum())} diverged" if np.isnan(v).any() else ""))


if __name__ == "__main__":
    main()
