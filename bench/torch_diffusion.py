"""The same DDPM, DDIM (eta = 0) and probability-flow Heun loops as bench_diffusion (25-component isotropic grid
mixture, analytic denoiser, continuous VP schedule with linear beta in [0.1, 20], uniform grid from t = 1 to 0) in
PyTorch, eager and under torch.compile, for a side-by-side run on the same GPU. Prints chain-steps per second.

usage: python3 bench/torch_diffusion.py [chains] [steps]
"""
import math
import sys

import torch

from torch_common import compiled_or_none, grid_means, denoiser, vp_linear_channel as channel





def run_loop(x, means, log_w, sampler, steps):
    times = [1.0 - k / steps for k in range(steps + 1)]
    for k in range(steps):
        a, s = channel(times[k])
        a2, s2 = channel(times[k + 1])
        m = denoiser(x, means, log_w, a, s)
        if sampler == "ddpm":
            # posterior q(x' | x, x0 = m) of the channel from (a2, s2) to (a, s)
            ar = a / a2
            sr2 = max(s * s - ar * ar * s2 * s2, 1e-20)
            var = sr2 * s2 * s2 / (s * s)
            x = (a2 * sr2 / (s * s)) * m + (ar * s2 * s2 / (s * s)) * x + math.sqrt(var) * torch.randn_like(x)
        elif sampler == "ddim":
            eps = (x - a * m) / s
            x = a2 * m + s2 * eps
        else:  # Heun on dx/dt = (s'/s) x + (a' - s' a / s) m
            dt = times[k + 1] - times[k]
            h = 1e-4
            def velocity(xx, t, mm):
                aa, ss = channel(t)
                ap, sp = channel(t + h)
                am, sm = channel(t - h)
                da, ds_ = (ap - am) / (2 * h), (sp - sm) / (2 * h)
                return (ds_ / ss) * xx + (da - ds_ * aa / ss) * mm
            v1 = velocity(x, times[k], m)
            xe = x + dt * v1
            if s2 > 0:
                v2 = velocity(xe, times[k + 1], denoiser(xe, means, log_w, a2, s2))
                x = x + 0.5 * dt * (v1 + v2)
            else:
                x = xe
    return x


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    if not torch.cuda.is_available():
        print("# torch_diffusion: no CUDA device; nothing to compare")
        return
    dev = torch.device("cuda")
    print(f"# torch_diffusion: {torch.__version__}, {torch.cuda.get_device_name()}, {n} chains, {steps} steps")
    print(f"{'variant':<16} {'sampler':<9} {'d':>5} {'chain-steps/s':>14}")
    compiled = compiled_or_none(run_loop)
    for d in (2, 10, 100):
        means = grid_means(d).to(dev)
        log_w = torch.full((25,), -math.log(25.0), device=dev)
        chunk = max(1, min(n, (8 << 30) // (25 * d * 4 * 4)))
        x0 = torch.randn(chunk, d, device=dev)
        for sampler in ("ddpm", "ddim", "ode_heun"):
            for name, fn in (("eager", run_loop), ("torch.compile", compiled)):
                if fn is None:
                    continue
                try:
                    fn(x0, means, log_w, sampler, 2)
                    torch.cuda.synchronize()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn(x0, means, log_w, sampler, steps)
                    end.record()
                    torch.cuda.synchronize()
                    seconds = start.elapsed_time(end) * 1e-3 * (n / chunk)
                    print(f"{name:<16} {sampler:<9} {d:>5} {n * steps / seconds:>14.4g}")
                except Exception as e:  # noqa: BLE001
                    print(f"{name:<16} {sampler:<9} {d:>5} failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
