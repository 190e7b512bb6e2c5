#!/usr/bin/env python3
"""Fits the binary digits prior of examples/digits_bernoulli.json.

Data: the UCI "Optical Recognition of Handwritten Digits" test set as shipped by scikit-learn
(sklearn.datasets.load_digits: 1,797 images of 8 x 8 pixels with values 0..16), by E. Alpaydin and C. Kaynak,
UCI Machine Learning Repository, https://doi.org/10.24432/C50P49, licence CC BY 4.0. Only the fitted parameters
(derived data, 20 x 64 probabilities and 20 weights) are shipped in examples/, not the images.

Binarisation: pixel > 7 is +1, otherwise -1. Model: a mixture of K = 20 product Bernoulli distributions on
{-1,1}^64 fitted by EM (10 random restarts of 200 iterations from responsibilities drawn with a fixed seed; the best
log-likelihood kept), with a Beta(2, 2) prior on each probability (one pseudo-count each way) and one pseudo-count per weight, which keeps every
p in (0, 1) and every weight positive. Writes examples/digits_weights.npy (K, float64) and examples/digits_probabilities.npy (K x 64,
float64, P(pixel = +1 | component), row-major over the 8 x 8 image).

Usage: pip install scikit-learn numpy; python3 scripts/fit_digits.py [--components K] [--out-dir examples]
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small products: threads only contend
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from sklearn.datasets import load_digits


def em(x01, K, rng, iterations):
    n, d = x01.shape
    r = rng.dirichlet(np.ones(K), size=n)  # responsibilities
    for _ in range(iterations):
        nk = r.sum(0)
        w = (nk + 1.0) / (n + K)  # one pseudo-count per component: no weight reaches 0
        p = (r.T @ x01 + 1.0) / (nk[:, None] + 2.0)
        logp = x01 @ np.log(p).T + (1 - x01) @ np.log1p(-p).T + np.log(w)
        m = logp.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logp - m).sum(1))
        r = np.exp(logp - lse[:, None])
    return w, p, lse.sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--components", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "..", "examples"))
    a = ap.parse_args()
    images = load_digits().data  # 1797 x 64, values 0..16
    x01 = (images > 7).astype(np.float64)
    rng = np.random.default_rng(a.seed)
    best = None
    for _ in range(a.restarts):
        fit = em(x01, a.components, rng, a.iterations)
        if best is None or fit[2] > best[2]:
            best = fit
    w, p, ll = best
    order = np.argsort(-w)
    np.save(os.path.join(a.out_dir, "digits_weights.npy"), w[order])
    np.save(os.path.join(a.out_dir, "digits_probabilities.npy"), p[order])
    print(f"{len(images)} images, {a.components} components, log-likelihood {ll:.1f} "
          f"({ll / len(images):.2f} per image)")


if __name__ == "__main__":
    main()
