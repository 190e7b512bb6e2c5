"""Closed forms of a Gaussian mixture at the channel x_t = a x0 + s z, in NumPy FP64 (the tests' references)."""
import numpy as np


def _parts(m, x, a, s):
    w, mu = m.weights, m.means
    v = m.variances
    v = np.broadcast_to(v[:, None] if v.ndim == 1 else v, mu.shape)  # (K, d)
    c = a * a * v + s * s  # marginal variances of each component at the channel
    diff = x[:, None, :] - a * mu[None, :, :]  # (n, K, d)
    logn = -0.5 * np.sum(diff**2 / c + np.log(2 * np.pi * c), axis=2) + np.log(w)  # (n, K)
    mx = logn.max(axis=1, keepdims=True)
    r = np.exp(logn - mx)
    lse = mx[:, 0] + np.log(r.sum(axis=1))
    r /= r.sum(axis=1, keepdims=True)
    return w, mu, v, c, diff, r, lse


def log_density(m, x, a, s):
    return _parts(m, x, a, s)[6]


def score(m, x, a, s):
    _, _, _, c, diff, r, _ = _parts(m, x, a, s)
    return np.einsum("nk,nkd->nd", r, -diff / c)


def denoiser(m, x, a, s):
    # E[x0 | x_t, k] = mu_k + a v_k / c_k (x - a mu_k)
    _, mu, v, c, diff, r, _ = _parts(m, x, a, s)
    return np.einsum("nk,nkd->nd", r, mu[None] + a * v / c * diff)


def denoiser_jvp(m, x, vec, a, s):
    # D(x) = sum_k r_k m_k(x); dD/dx v = sum_k r_k (dm_k v) + sum_k m_k (dr_k . v),
    # dm_k/dx = diag(a v_k / c_k), dr_k/dx = r_k (g_k - sum_j r_j g_j), g_k = -(x - a mu_k) / c_k.
    _, mu, v, c, diff, r, _ = _parts(m, x, a, s)
    mk = mu[None] + a * v / c * diff
    g = -diff / c
    gbar = np.einsum("nk,nkd->nd", r, g)
    dr = r * np.einsum("nkd,nd->nk", g - gbar[:, None, :], vec)
    return np.einsum("nk,nkd->nd", r, a * v / c * vec[:, None, :]) + np.einsum("nk,nkd->nd", dr, mk)
