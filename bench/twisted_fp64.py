#!/usr/bin/env python3
"""The twisted-potential guided SMC on one instance of bench/posterior_table.py's benchmark against FP64: whether a
run's ESS collapse comes from rounding or from the weights themselves (d_y = 1).

    PYTHONPATH=<the diffsample package> python3 bench/twisted_fp64.py [--dx 10] [--instance 19] [--seed 20]
        [--particles 4096] [--steps 100] [--build build] [--no-start-correction] [--no-multistep-kernel]

Three runs of the same seed through SamplingPlan.guided (potentials twisted, the CPU executor):
  fp32   answered by the mixture's FP32 denoiser and Jacobian-vector products; with --build, its samples are compared
         with `diffsample solve`'s on the same problem and seed (solve's defaults: 4096 particles, 100 steps);
  fp64   answered by the FP64 references (evaluate_fp64('denoiser'), denoiser_jvp_fp64), rounded to float;
  check  resampling off (ess_threshold 0) with FP32 answers, and every log-weight recomputed in FP64 from the points
         the plan asks at: the start correction's quadrature, the moment potential log N(y; A m, sigma_y^2 +
         (s^2 / a) a^T J a), the twisted shift h = sig^2 (y - a^T m) / V J a, log p / q of each move with the kernel
         mean c0 m' + c1 x (m' the multistep extrapolation), and the likelihood at the end; printed: the largest
         difference of the final log-weights (centred, over particles with weight above 1e-6 / N), the largest
         relative difference of the ESS over the steps, and the smallest predictive variance over sigma_y^2.
For each of fp32 and fp64: the lowest ESS and its step, the resamplings, the log-normaliser and the samples' share of
each mode against the exact posterior weights (the modes holding at least 1%).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import diffsample as ds

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import posterior_table as pt  # noqa: E402  (the benchmark's instances)

NODES = [0.0694318442029737, 0.3300094782075719, 0.6699905217924281, 0.9305681557970263]
NODE_WEIGHTS = [0.1739274225687269, 0.3260725774312731, 0.3260725774312731, 0.1739274225687269]


class Fp64Mixture:
    """The benchmark's prior (unit isotropic components) in FP64, from its float parameters as the plan reads them."""

    def __init__(self, inst):
        self.mu = inst.mu.astype(np.float32).astype(np.float64)
        self.log_w = np.log(np.asarray(inst.w, np.float32).astype(np.float64))

    def posterior(self, x, a, s):
        c = a * a + s * s
        lg = self.log_w[None] - 0.5 * ((x[:, None, :] - a * self.mu[None]) ** 2).sum(-1) / c
        lg -= lg.max(1, keepdims=True)
        r = np.exp(lg)
        return r / r.sum(1, keepdims=True), (s * s * self.mu[None] + a * x[:, None, :]) / c

    def denoiser(self, x, a, s):
        r, mk = self.posterior(x, a, s)
        return (r[:, :, None] * mk).sum(1)

    def jvp(self, x, v, a, s):
        """J v, J = (a / s^2) Cov(x0 | x): within-component a / c v plus (a / s^2) times the spread of the means."""
        r, mk = self.posterior(x, a, s)
        dlt = mk - (r[:, :, None] * mk).sum(1)[:, None, :]
        between = (r[:, :, None] * dlt * (dlt * v[:, None, :]).sum(-1, keepdims=True)).sum(1)
        return a / (a * a + s * s) * v + a / (s * s) * between


def run_plan(inst, args, answers, threshold=0.5):
    """(outputs, transition asks [(a, s, points)]) of one plan run answered by `answers` (fp32 or fp64)."""
    gm = ds.GaussianMixture(inst.w, inst.mu, np.ones(len(inst.w)))
    plan = ds.SamplingPlan.guided(inst.d_x, inst.A, inst.y, inst.sigma_y, sampler="smc", output="denoiser",
                                  particles=args.particles, steps=args.steps, seed=args.seed, potentials="twisted",
                                  start_correction=not args.no_start_correction,
                                  multistep_kernel=not args.no_multistep_kernel,
                                  resampling={"ess_threshold": threshold})
    plan.reset()
    asks = []
    while not plan.done:
        q = plan.ask()
        x, a, s = np.array(q["points"]), q["a"], q["s"]
        if q["vector"] is None:
            out = gm.denoiser(x, a, s) if answers == "fp32" else gm.evaluate_fp64("denoiser", x, a, s)
            asks.append(None)
        else:
            v = np.asarray(q["vector"])
            out = gm.denoiser_jvp(x, v, a, s) if answers == "fp32" else gm.denoiser_jvp_fp64(x, v, a, s)
            asks[-1] = (a, s, x)  # the JVP ask of a transition follows its denoiser ask at the same points
        plan.tell(np.ascontiguousarray(out, dtype=np.float32))
    out = plan.outputs(["particles", "log_weights", "samples", "ess_trace", "log_normaliser", "resample_count"])
    return out, [t for t in asks if t is not None]


def summary(inst, name, out):
    e = out["ess_trace"][0]
    shares = inst.shares(out["samples"][0].astype(np.float64)) / out["samples"].shape[1]
    modes = [k for k in np.argsort(-inst.post_w) if inst.post_w[k] >= 0.01 or shares[k] >= 0.01]
    print(f"{name}: lowest ESS {e.min():.0f} of {len(out['samples'][0])} at step {int(e.argmin())}, "
          f"resamplings {int(out['resample_count'][0])}, log-normaliser {out['log_normaliser'][0]:.4f}, "
          f"weight error {pt.tv(shares, inst.post_w):.4f}; mode share (exact): "
          + ", ".join(f"{k} {shares[k]:.3f} ({inst.post_w[k]:.3f})" for k in modes))


def ess(lw):
    w = np.exp(lw - lw.max())
    return w.sum() ** 2 / (w * w).sum()


def check(inst, args):
    """Resampling off: every log-weight of the run recomputed in FP64 (see the module's docstring)."""
    out, asks = run_plan(inst, args, "fp32", threshold=0.0)
    mix = Fp64Mixture(inst)
    A = inst.A.astype(np.float32).astype(np.float64)[0]
    y, s2y = float(np.float32(inst.y[0])), inst.sigma_y ** 2
    K = len(asks)
    a0, s0, x0 = asks[0][0], asks[0][1], asks[0][2].astype(np.float64)
    lw = np.zeros(len(x0))
    if not args.no_start_correction:
        lw += a0 / s0 ** 2 * sum(w * (x0 * mix.denoiser(u * x0, a0, s0)).sum(1) for u, w in zip(NODES, NODE_WEIGHTS))
    lam = [np.log(a / s) for a, s, _ in asks]
    trace, lowest_v, m_prev = [], np.inf, None
    for k in range(K):
        a, s, x = asks[k][0], asks[k][1], asks[k][2].astype(np.float64)
        a_next, s_next = (asks[k + 1][0], asks[k + 1][1]) if k + 1 < K else (1.0, 0.0)
        m = mix.denoiser(x, a, s)
        ja = mix.jvp(x, np.broadcast_to(A, x.shape).copy(), a, s)
        V = s2y + s * s / a * (ja @ A)
        lowest_v = min(lowest_v, V.min() / s2y)
        r = y - m @ A
        log_g = -0.5 * (r * r / V + np.log(V) + np.log(2 * np.pi))
        lw += log_g
        trace.append(ess(lw))
        # The backward kernel N(c0 m' + c1 x, sig^2 I) (DDPM), m' the multistep extrapolation, and the twisted shift.
        ratio = a / a_next
        v = max(s * s - ratio * ratio * s_next * s_next, 0.0)
        c1, c0, sig2 = ratio * s_next ** 2 / (s * s), a_next * v / (s * s), s_next ** 2 * v / (s * s)
        w = 0.0
        if not args.no_multistep_kernel and k > 0 and s_next > 0:
            w = 0.5 * (np.log(a_next / s_next) - lam[k]) / (lam[k] - lam[k - 1])
        mean = c0 * (m + w * (m - m_prev) if w != 0.0 else m) + c1 * x
        m_prev = m
        x_next = asks[k + 1][2].astype(np.float64) if k + 1 < K else out["particles"][0].astype(np.float64)
        if sig2 > 0:
            h = sig2 * (r / V)[:, None] * ja
            lw += (((x_next - mean - h) ** 2).sum(1) - ((x_next - mean) ** 2).sum(1)) / (2 * sig2)
        lw -= log_g
    lw += -0.5 * (y - out["particles"][0].astype(np.float64) @ A) ** 2 / s2y
    trace.append(ess(lw))
    lib = out["log_weights"][0].astype(np.float64)
    wn = np.exp(lw - lw.max())
    wn /= wn.sum()
    diff = (lib - lib.max()) - (lw - lw.max())
    diff -= (wn * diff).sum()
    rel = np.abs(np.array(trace) - out["ess_trace"][0]) / out["ess_trace"][0]
    print(f"check (no resampling): final log-weights, FP32 filter - FP64: {np.abs(diff[wn > 1e-6 / len(wn)]).max():.2e}"
          f" (their spread: sd {lw.std():.2f}); ESS: largest relative difference {rel.max():.2e} (step "
          f"{int(rel.argmax())}); lowest predictive variance {lowest_v:.3f} sigma_y^2")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dx", type=int, default=10)
    ap.add_argument("--instance", type=int, default=19)
    ap.add_argument("--seed", type=int, default=20, help="the sampler's seed (posterior_table: 1 + instance + 1000 s)")
    ap.add_argument("--particles", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--build", default="", help="a build folder: compare the fp32 run with its `diffsample solve`")
    ap.add_argument("--no-start-correction", action="store_true")
    ap.add_argument("--no-multistep-kernel", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng([0, args.dx, 1])
    instances = [pt.Instance(rng, args.dx, 1) for _ in range(args.instance + 1)]
    inst = instances[args.instance]
    print(f"d_x {args.dx}, d_y 1, instance {args.instance} (sigma_y {inst.sigma_y:.4g}), seed {args.seed}, "
          f"{args.particles} particles, {args.steps} steps, twisted potentials"
          + ("" if args.no_start_correction else ", start correction")
          + ("" if args.no_multistep_kernel else ", multistep kernel"))
    out, _ = run_plan(inst, args, "fp32")
    summary(inst, "fp32", out)
    if args.build:
        with tempfile.TemporaryDirectory() as tmp:
            problem, samples = os.path.join(tmp, "p.json"), os.path.join(tmp, "x.npy")
            with open(problem, "w") as f:
                json.dump(inst.problem_json(), f)
            cmd = [os.path.join(args.build, "diffsample"), "solve", "--problem", problem, "--sampler", "smc",
                   "--potentials", "twisted", "--executor", "cpu", "--seed", str(args.seed), "--particles",
                   str(args.particles), "--steps", str(args.steps), "--quiet", "--out", samples]
            cmd += [] if args.no_start_correction else ["--start-correction"]
            cmd += [] if args.no_multistep_kernel else ["--multistep-kernel"]
            subprocess.run(cmd, check=True)
            same = np.array_equal(np.load(samples).reshape(out["samples"][0].shape), out["samples"][0])
            print(f"solve's samples {'identical to' if same else 'DIFFER from'} the fp32 plan's")
    out, _ = run_plan(inst, args, "fp64")
    summary(inst, "fp64", out)
    check(inst, args)


if __name__ == "__main__":
    main()
