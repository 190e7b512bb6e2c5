"""Pieces shared by the PyTorch baselines: the 25-component grid mixture's means, its analytic denoiser for
unit-variance components, and the continuous VP schedule with linear beta in [0.1, 20] (as the library's
vp_linear)."""
import math
import os

import torch


def compiled_or_none(fn):
    """torch.compile(fn), or None when DIFFSAMPLE_TORCH_COMPILE=0 (eager only: on an H200 the first compilation of the
    diffusion loop took past a minute) or compilation is unavailable; says which."""
    if os.environ.get("DIFFSAMPLE_TORCH_COMPILE", "1") == "0":
        print("# torch.compile skipped (DIFFSAMPLE_TORCH_COMPILE=0): eager only")
        return None
    try:
        return torch.compile(fn)
    except Exception as e:  # noqa: BLE001 - report and keep the eager figure
        print(f"# torch.compile unavailable: {e}")
        return None


def grid_means(d, grid=5, spacing=8.0):
    """Means on a grid x grid lattice in the first two coordinates, repeated across coordinates (grid_mixture)."""
    k = torch.arange(grid * grid)
    rows, cols = (k // grid).double(), (k % grid).double()
    centre = 0.5 * (grid - 1)
    means = torch.empty(grid * grid, d, dtype=torch.float64)
    for j in range(d):
        means[:, j] = spacing * ((rows if j % 2 == 0 else cols) - centre)
    return means.float()


def vp_linear_channel(t, beta_min=0.1, beta_max=20.0):
    """(a, s) of the continuous VP channel at time t."""
    log_abar = -(beta_min * t + 0.5 * (beta_max - beta_min) * t * t)
    a = math.exp(0.5 * log_abar)
    return a, math.sqrt(max(1.0 - a * a, 0.0))


def denoiser(x, means, log_w, a, s):
    """E[x0 | x_t = x] for unit-variance components: sum_k r_k (s^2 mu_k + a x) / c, c = a^2 + s^2."""
    c = a * a + s * s
    diff = x.unsqueeze(1) - a * means.unsqueeze(0)  # (n, K, d)
    r = torch.softmax(log_w - 0.5 * (diff * diff).sum(-1) / c, dim=1)
    return (s * s * (r @ means) + a * x) / c
