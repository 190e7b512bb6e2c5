#!/usr/bin/env python3
"""One-stage discrete Langevin in NumPy beside the library's CPU executor, interleaved in one process.

The same step as kernels/binary.cuh: on a K-component Bernoulli mixture at flip strength alpha, every chain computes
E[x | y] = sum_k r_k(y) tanh(theta_k + alpha y) (r_k the softmax of log w_k + sum_j logcosh(theta_kj + alpha y_j) -
logcosh(theta_kj)), then flips coordinate j with probability sigmoid(-(alpha E[x|y]_j y_j + 2 / eta)). NumPy runs it
vectorised over chains (float32), once evaluating the formulas and once through a lattice table like the library's
(the logcosh difference and tanh of every (k, j) at y_j = -1 and +1, selected per step; the library's table holds the
logcosh difference less alpha - log 2, the same for every component at y_j = +-1, so the same softmax without the
FP32 rounding of a number of size alpha); the library runs its fused functor through the C ABI (ctypes,
ds_discrete_langevin on the CPU executor). Rounds alternate between the two so that machine load hits both alike.

Usage: python3 bench/numpy_binary.py [--lib build/libdiffsample.so] [--chains 4096] [--steps 10] [--rounds 3]
"""
import argparse
import ctypes
import os
import time

import numpy as np


class DiscreteOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("method", ctypes.c_int), ("alpha", ctypes.c_double),
                ("eta", ctypes.c_double), ("steps", ctypes.c_int64), ("measurements", ctypes.c_int64),
                ("mean", ctypes.c_int), ("start_uniform", ctypes.c_int), ("seed", ctypes.c_uint64),
                ("first_chain", ctypes.c_uint64), ("first_step", ctypes.c_uint64)]


class Execution(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("stream", ctypes.c_void_p)]


def numpy_steps(y, theta, logcosh_theta, log_w, alpha, eta, steps, rng):
    """steps one-stage steps of every chain (rows of y, float32 +-1), vectorised over chains."""
    for _ in range(steps):
        z = theta[None, :, :] + alpha * y[:, None, :]                 # n x K x d
        a = np.abs(z)
        e = np.exp(-2 * a)
        logits = log_w[None, :] + (a + np.log1p(e) - np.log(2) - logcosh_theta[None, :, :]).sum(-1)
        r = np.exp(logits - logits.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        t = np.sign(z) * (1 - e) / (1 + e)
        mean = np.einsum("nk,nkd->nd", r, t)
        flip = rng.random(y.shape, dtype=np.float32) < 1 / (1 + np.exp(alpha * mean * y + 2 / eta))
        y = np.where(flip, -y, y)
    return y


def numpy_steps_table(y, table_l, table_t, log_w, alpha, eta, steps, rng):
    """The same steps through a lattice table like the library's: table_l[s], table_t[s] (K x d) hold the logcosh
    difference and tanh at y_j = -1 (s = 0) and +1 (s = 1); each step selects entries instead of evaluating exp."""
    for _ in range(steps):
        plus = (y > 0)[:, None, :]                                    # n x 1 x d
        logits = log_w[None, :] + np.where(plus, table_l[1][None], table_l[0][None]).sum(-1)
        r = np.exp(logits - logits.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        mean = np.einsum("nk,nkd->nd", r, np.where(plus, table_t[1][None], table_t[0][None]))
        flip = rng.random(y.shape, dtype=np.float32) < 1 / (1 + np.exp(alpha * mean * y + 2 / eta))
        y = np.where(flip, -y, y)
    return y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(os.path.dirname(__file__), "..", "build", "libdiffsample.so"))
    ap.add_argument("--chains", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--components", type=int, default=20)
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    lib.ds_bernoulli_mixture_create.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(ctypes.c_double),
                                                ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_void_p)]
    lib.ds_discrete_options_init.argtypes = [ctypes.POINTER(DiscreteOptions), ctypes.c_size_t]
    lib.ds_discrete_langevin.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.POINTER(DiscreteOptions), ctypes.c_void_p, Execution, ctypes.c_void_p,
                                         ctypes.c_size_t, ctypes.c_void_p]
    lib.ds_last_error.restype = ctypes.c_char_p
    lib.ds_bernoulli_mixture_destroy.argtypes = [ctypes.c_void_p]
    alpha, eta, K, n = 1.0, 1.0, a.components, a.chains
    print(f"# numpy_binary: one-stage discrete Langevin, {K}-component Bernoulli mixture, {n} chains x {a.steps} "
          f"steps, {a.rounds} interleaved rounds (best of each)")
    print(f"{'d':>5} {'library chain-steps/s':>22} {'numpy (formulas)':>17} {'numpy (table)':>14} "
          f"{'library / best numpy':>21}")
    for d in (64, 784):
        rng = np.random.default_rng(7)
        p = rng.uniform(0.02, 0.98, size=(K, d))
        w = np.ones(K)
        handle = ctypes.c_void_p()
        status = lib.ds_bernoulli_mixture_create(d, K, w.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                                                 p.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                                                 ctypes.byref(handle))
        if status != 0:
            raise SystemExit(lib.ds_last_error().decode())
        opts = DiscreteOptions()
        lib.ds_discrete_options_init(ctypes.byref(opts), ctypes.sizeof(opts))
        opts.method, opts.alpha, opts.eta, opts.steps, opts.start_uniform, opts.seed = 0, alpha, eta, a.steps, 1, 1
        y_lib = np.empty((n, d), dtype=np.float32)
        theta = (0.5 * np.log(p / (1 - p))).astype(np.float32)
        logcosh_theta = (np.abs(theta) + np.log1p(np.exp(-2 * np.abs(theta))) - np.log(2)).astype(np.float32)
        log_w = np.log(w / w.sum()).astype(np.float32)
        table_l = np.stack([logcosh_theta * 0 + np.log(np.cosh(theta + s * alpha)) - logcosh_theta
                            for s in (-1.0, 1.0)]).astype(np.float32)
        table_t = np.stack([np.tanh(theta + s * alpha) for s in (-1.0, 1.0)]).astype(np.float32)
        best_lib = best_np = best_table = float("inf")
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            status = lib.ds_discrete_langevin(handle, y_lib.ctypes.data, n, ctypes.byref(opts), None,
                                              Execution(2, None), None, 0, None)
            if status != 0:
                raise SystemExit(lib.ds_last_error().decode())
            best_lib = min(best_lib, time.perf_counter() - t0)
            y = np.where(rng.random((n, d)) < 0.5, -1.0, 1.0).astype(np.float32)
            t0 = time.perf_counter()
            numpy_steps(y, theta, logcosh_theta, log_w, np.float32(alpha), np.float32(eta), a.steps, rng)
            best_np = min(best_np, time.perf_counter() - t0)
            t0 = time.perf_counter()
            numpy_steps_table(y, table_l, table_t, log_w, np.float32(alpha), np.float32(eta), a.steps, rng)
            best_table = min(best_table, time.perf_counter() - t0)
        lib.ds_bernoulli_mixture_destroy(handle)
        r_lib, r_np, r_table = n * a.steps / best_lib, n * a.steps / best_np, n * a.steps / best_table
        print(f"{d:>5} {r_lib:>22.4g} {r_np:>17.4g} {r_table:>14.4g} {r_lib / max(r_np, r_table):>21.2f}")


if __name__ == "__main__":
    main()
