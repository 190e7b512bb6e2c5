#!/usr/bin/env python3
"""The score of a large isotropic Gaussian mixture: NumPy's softmax(x @ mu.T) formulation beside the library, in one
process, rounds interleaved so that machine load hits both alike.

Mixture: K equal-weight components N(mu_k, v I) (means 0.5 + N(0, 1) per coordinate, v = 0.05) at the channel
a = 0.9, s = 0.4 (c = a^2 v + s^2). NumPy (float32, its own BLAS with as many threads as the library's pool):
    logits = (a / c) x @ mu.T - a^2 |mu_k|^2 / (2 c)      (the |x|^2 / 2c term is the same for every k)
    r = softmax(logits);  score = (a r @ mu - x) / c
which is the uncorrected expanded form, in one block (n x K logits in memory). PyTorch runs the same when it is
installed. The library runs ds_mixture_evaluate (C ABI through ctypes) on the CPU executor, whose automatic path is
the gemm path at these sizes (chunked, recentred, corrected). Points per second are medians over rounds; the ratio
is taken within each round.

Usage: python3 bench/numpy_mixture_gemm.py [--lib build/libdiffsample.so] [--rounds 3] [--threads 2]
"""
import argparse
import ctypes
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(os.path.dirname(__file__), "..", "build", "libdiffsample.so"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None

    lib = ctypes.CDLL(args.lib)

    class Channel(ctypes.Structure):
        _fields_ = [("a", ctypes.c_double), ("s", ctypes.c_double)]

    class Execution(ctypes.Structure):
        _fields_ = [("kind", ctypes.c_int), ("stream", ctypes.c_void_p)]

    lib.ds_mixture_create.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p)]
    lib.ds_mixture_evaluate.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, Channel,
                                        ctypes.c_void_p, Execution, ctypes.c_void_p]
    lib.ds_mixture_destroy.argtypes = [ctypes.c_void_p]

    a, s, v = 0.9, 0.4, 0.05
    c = a * a * v + s * s
    print(f"threads: {args.threads}; NumPy {np.__version__}" + (f", PyTorch {torch.__version__}" if torch else
                                                                  ", PyTorch not installed"))
    for K, d, n in ((1024, 256, 4096), (50000, 3072, 256)):
        rng = np.random.default_rng(7)
        mu64 = 0.5 + rng.standard_normal((K, d))
        mu = mu64.astype(np.float32)
        handle = ctypes.c_void_p()
        w = np.ones(K)
        var = np.full(K, v)
        status = lib.ds_mixture_create(d, K, w.ctypes.data, mu64.ctypes.data, var.ctypes.data, K,
                                       ctypes.byref(handle))
        if status != 0:
            sys.exit(f"ds_mixture_create failed: {status}")
        del mu64
        k = rng.integers(0, K, n)
        x = (a * mu[k] + np.sqrt(c).astype(np.float32) * rng.standard_normal((n, d)).astype(np.float32))
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty_like(x)
        half_norm = (a * a / (2 * c)) * np.einsum("kd,kd->k", mu, mu)

        def library():
            st = lib.ds_mixture_evaluate(handle, 1, x.ctypes.data, n, Channel(a, s), out.ctypes.data,
                                         Execution(2, None), None)
            if st != 0:
                sys.exit(f"ds_mixture_evaluate failed: {st}")

        def numpy_score():
            logits = (a / c) * (x @ mu.T) - half_norm
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
            return (a * (logits @ mu) - x) / c

        contenders = [("library (gemm path)", library), ("NumPy softmax(x @ mu.T)", numpy_score)]
        if torch is not None:
            tx, tmu = torch.from_numpy(x), torch.from_numpy(mu)
            thn = torch.from_numpy(half_norm.astype(np.float32))

            def torch_score():
                r = torch.softmax((a / c) * (tx @ tmu.T) - thn, dim=1)
                return (a * (r @ tmu) - tx) / c

            contenders.append(("PyTorch softmax(x @ mu.T)", torch_score))
        for _, f in contenders:
            f()  # warm-up
        # Accuracy beside each other: the library's score against NumPy's (both FP32).
        ref = numpy_score()
        library()
        rel = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
        times = {name: [] for name, _ in contenders}
        ratios = []
        for _ in range(args.rounds):
            for name, f in contenders:
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
            ratios.append(times[contenders[1][0]][-1] / times[contenders[0][0]][-1])
        flops = 4.0 * K * d
        print(f"K = {K}, d = {d}, {n} points, {args.rounds} rounds (max |library - NumPy| / max |score| = {rel:.2g})")
        for name, _ in contenders:
            t = float(np.median(times[name]))
            print(f"  {name:28s} {n / t:10.1f} points/s  ({n * flops / t / 1e9:6.2f} GFLOP/s)")
        print(f"  NumPy time / library time: {float(np.median(ratios)):.2f} (median of per-round ratios)")
        lib.ds_mixture_destroy(handle)


if __name__ == "__main__":
    main()
