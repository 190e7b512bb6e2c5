"""The same guided SMC step as bench_smc (Monte Carlo guided diffusion on the 25-component grid mixture, d_y = 1,
d = 10 and 100, vp_linear schedule with DDPM transitions) in PyTorch, for a side-by-side run on the same GPU.
Prints particle-steps per second. Resampling here is PyTorch's systematic resampling on a float prefix sum
(torch.cumsum + searchsorted): the usual baseline, not the library's exact fixed-point scheme. The ESS test
synchronises with the host once per step, as eager PyTorch code usually does.

usage: python3 bench/torch_smc.py [particles] [steps]
"""
import math
import sys

import torch

from torch_common import grid_means, denoiser



def vp_linear_points(steps, beta_min=0.1, beta_max=20.0):
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    abar = torch.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t * t))
    return abar.sqrt(), (1 - abar).clamp_min(0).sqrt()



def guided_smc(x, means, log_w, A, y, sigma_y, steps):
    a_pts, s_pts = vp_linear_points(steps)
    a_norm2 = float((A * A).sum())
    spread = 4.0 * a_norm2  # the library's default potential spread: default_potential_scale x trace(A A^T) / d_y
    n = x.shape[0]
    var = [float(a_pts[k] ** 2 * sigma_y ** 2 + s_pts[k] ** 2 * spread) for k in range(steps + 1)]
    lw = -0.5 * (a_pts[0].item() * y - x @ A) ** 2 / var[0]
    for k in range(steps):
        a, s, a2, s2 = (float(v) for v in (a_pts[k], s_pts[k], a_pts[k + 1], s_pts[k + 1]))
        ratio = a / a2
        v = max(0.0, s * s - ratio * ratio * s2 * s2)
        c0, c1, sig2 = a2 * v / (s * s), ratio * s2 * s2 / (s * s), s2 * s2 * v / (s * s)
        S = var[k + 1] + sig2 * a_norm2
        g_now = -0.5 * (a * y - x @ A) ** 2 / var[k]
        mu = c0 * denoiser(x, means, log_w, a, s) + c1 * x
        lw = lw - 0.5 * (a2 * y - mu @ A) ** 2 / S - g_now
        w = torch.softmax(lw, 0)
        if 1.0 / (w * w).sum() < 0.5 * n:
            u = (torch.rand((), device=x.device) + torch.arange(n, device=x.device)) / n
            idx = torch.searchsorted(torch.cumsum(w, 0), u).clamp_max(n - 1)
            mu, lw = mu[idx], torch.zeros_like(lw)
        xp = mu + math.sqrt(sig2) * torch.randn_like(mu)
        t = a2 * y - xp @ A - math.sqrt(var[k + 1]) * torch.randn(n, device=x.device)
        x = xp + (sig2 / S) * t.unsqueeze(1) * A.unsqueeze(0)
    return x, lw


def main():
    n_arg = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    if not torch.cuda.is_available():
        print("# torch_smc: no CUDA device; nothing to compare")
        return
    dev = torch.device("cuda")
    print(f"# torch_smc: {torch.__version__}, {torch.cuda.get_device_name()}, {steps} steps, one problem, d_y = 1")
    print(f"{'variant':<10} {'d':>5} {'N':>10} {'particle-steps/s':>17}")
    for d in (10, 100):
        n = n_arg or ((1 << 20) if d == 10 else (1 << 18))
        gen = torch.Generator().manual_seed(1)
        A = torch.randn(d, generator=gen, dtype=torch.float64).float().to(dev)
        means = grid_means(d).to(dev)
        log_w = torch.full((25,), -math.log(25.0), device=dev)
        x = torch.randn(n, d, device=dev)
        try:
            guided_smc(x, means, log_w, A, 3.0, 1.0, 2)  # warm-up
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            guided_smc(x, means, log_w, A, 3.0, 1.0, steps)
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) * 1e-3
            print(f"{'eager':<10} {d:>5} {n:>10} {n * steps / seconds:>17.4g}")
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"{'eager':<10} {d:>5} {n:>10} failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
