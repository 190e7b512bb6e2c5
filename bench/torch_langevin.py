"""The same ULA step as bench_langevin (25-component isotropic grid mixture, d = 2, 10, 100) in PyTorch, for a
side-by-side run on the same GPU: eager, and torch.compile when it works. Prints chain-steps per second.

usage: python3 bench/torch_langevin.py [chains] [steps]
"""
import math
import sys
import time

import torch

from torch_common import compiled_or_none, grid_means



def score(x, means, log_w, var):
    # x: (n, d), means: (K, d); isotropic components with common variance var.
    diff = means.unsqueeze(0) - x.unsqueeze(1)              # (n, K, d)
    logits = log_w - 0.5 * (diff * diff).sum(-1) / var       # (n, K)
    r = torch.softmax(logits, dim=1)
    return torch.einsum("nk,nkd->nd", r, diff) / var


def ula(x, means, log_w, var, gamma, steps):
    noise = math.sqrt(2 * gamma)
    for _ in range(steps):
        x = x + gamma * score(x, means, log_w, var) + noise * torch.randn_like(x)
    return x


def run(fn, x, means, log_w, steps):
    fn(x, means, log_w, 1.0, 0.05, 2)  # warm-up (and compilation)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn(x, means, log_w, 1.0, 0.05, steps)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e-3


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    if not torch.cuda.is_available():
        print("# torch_langevin: no CUDA device; nothing to compare")
        return
    dev = torch.device("cuda")
    print(f"# torch_langevin: {torch.__version__}, {torch.cuda.get_device_name()}, {n} chains, {steps} steps")
    print(f"{'variant':<16} {'d':>5} {'chain-steps/s':>14}")
    compiled = compiled_or_none(ula)
    for d in (2, 10, 100):
        means = grid_means(d).to(dev)
        log_w = torch.full((25,), -math.log(25.0), device=dev)
        # The (n, K, d) intermediate of the eager score needs n K d 4 bytes: chunk to stay within memory.
        chunk = max(1, min(n, (8 << 30) // (25 * d * 4 * 4)))
        x = torch.randn(chunk, d, device=dev)
        for name, fn in (("eager", ula), ("torch.compile", compiled)):
            if fn is None:
                continue
            try:
                seconds = run(fn, x, means, log_w, steps) * (n / chunk)
                print(f"{name:<16} {d:>5} {n * steps / seconds:>14.4g}")
            except Exception as e:  # noqa: BLE001
                print(f"{name:<16} {d:>5} failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
