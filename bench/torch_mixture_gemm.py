#!/usr/bin/env python3
"""The PyTorch peer of `bench_mixture_gemm cuda`: the score of the same two large isotropic mixtures in the
softmax(x @ mu.T) formulation, FP32, on the GPU (on the CPU when PyTorch finds no CUDA device), eager (no
torch.compile), printing points/s per case in the `cuda` mode's line format so that the two can be put side by side.

Mixture (as bench/numpy_mixture_gemm.py and bench_mixture_gemm): K equal-weight components N(mu_k, v I), means
0.5 + N(0, 1) per coordinate, v = 0.05, at the channel a = 0.9, s = 0.4 (c = a^2 v + s^2):
    logits = (a / c) x @ mu.T - (a^2 |mu_k|^2 / (2 c) - log w_k)      (the |x|^2 / 2c term is the same for every k)
    r = softmax(logits);  score = (a r @ mu - x) / c
the uncorrected expanded form in one block (n x K logits in memory), the bias per component computed once outside
the timing. Cases: K = 1024 x d = 256 over 262,144 points and K = 50,000 x d = 3,072 over 8,192 points (the `cuda`
mode's; on the CPU 4,096 and 256, the CPU mode's). Work: 4 K d flops per point (the two products), as the library
counts it. TF32 is off (FP32 products, as the library's gemm path by default).

Timing: torch.cuda.Event around each call on the current stream after a warm-up call, median over rounds (on the
CPU: time.perf_counter). Accuracy: max |score - FP64| / max |FP64| on the first 8 points, the FP64 score being the
same formula in float64. About 10 s on an H200 (CUDA context and cuBLAS start included).

Usage: python3 bench/torch_mixture_gemm.py [--rounds 5] [--cpu]
"""
import argparse
import math
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even when a CUDA device is present")
    args = ap.parse_args()
    if args.rounds < 1:
        sys.exit("torch_mixture_gemm: --rounds must be at least 1")
    try:
        import torch
    except ImportError:
        print("torch_mixture_gemm: PyTorch not installed")
        return 0
    gpu = torch.cuda.is_available() and not args.cpu
    dev = torch.device("cuda" if gpu else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    where = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"# torch_mixture_gemm: PyTorch {torch.__version__}, {where}; eager, FP32 (no TF32), "
          f"softmax(x @ mu.T) in one block, median of {args.rounds} rounds")
    a, s, v = 0.9, 0.4, 0.05
    c = a * a * v + s * s
    cases = ((1024, 256, 262144), (50000, 3072, 8192)) if gpu else ((1024, 256, 4096), (50000, 3072, 256))
    gen = torch.Generator(device=dev)
    gen.manual_seed(7)
    for K, d, n in cases:
        mu = 0.5 + torch.randn(K, d, device=dev, generator=gen)
        log_w = torch.full((K,), -math.log(K), device=dev)
        k = torch.randint(0, K, (n,), device=dev, generator=gen)
        x = a * mu[k] + (c ** 0.5) * torch.randn(n, d, device=dev, generator=gen)
        bias = (a * a / (2 * c)) * (mu * mu).sum(dim=1) - log_w  # per component, outside the timing

        def score():
            r = torch.softmax((a / c) * (x @ mu.T) - bias, dim=1)
            return (a * (r @ mu) - x) / c

        def seconds():
            if gpu:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                score()
                end.record()
                end.synchronize()
                return start.elapsed_time(end) * 1e-3
            t0 = time.perf_counter()
            score()
            return time.perf_counter() - t0

        out = score()  # warm-up (cuBLAS's kernels, the allocator's blocks)
        if gpu:
            torch.cuda.synchronize()
        m = min(n, 8)
        x64, mu64 = x[:m].double(), mu.double()
        r64 = torch.softmax((a / c) * (x64 @ mu64.T) - ((a * a / (2 * c)) * (mu64 * mu64).sum(dim=1) -
                                                         log_w.double()), dim=1)
        ref = (a * (r64 @ mu64) - x64) / c
        err = ((out[:m].double() - ref).abs().max() / ref.abs().max()).item()
        del out
        times = [seconds() for _ in range(args.rounds)]
        t = statistics.median(times)
        flops = 4.0 * K * d
        print(f"K = {K}, d = {d}, {n} points, {args.rounds} rounds (4 K d = {flops:.4g} flops per point)")
        print(f"  {'PyTorch softmax(x @ mu.T)':<26} {n / t:14.1f} points/s  ({n * flops / t * 1e-12:7.2f} TFLOP/s)")
        print(f"  max |error| / max |score| against the same formula in FP64, first {m} points: {err:.2g}")
        sys.stdout.flush()
        del mu, x, k, bias
        if gpu:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
