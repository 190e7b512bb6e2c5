#!/usr/bin/env python3
"""Writes examples/digits_points.npy: the 1,797 images of 8 x 8 handwritten digits as rows of 64 pixels in [0, 1].

Data: the UCI "Optical Recognition of Handwritten Digits" test set as shipped by scikit-learn
(sklearn.datasets.load_digits: 1,797 images of 8 x 8 pixels with values 0..16), by E. Alpaydin and C. Kaynak,
UCI Machine Learning Repository, https://doi.org/10.24432/C50P49, licence CC BY 4.0 (examples/digits_points.LICENSE).
Pixels are divided by 16 and stored as float32, row-major over the image (1797 x 64, C order).

Usage: pip install scikit-learn numpy; python3 scripts/make_digits_points.py [--out-dir examples]
"""
import argparse
import os

import numpy as np
from sklearn.datasets import load_digits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "..", "examples"))
    args = ap.parse_args()
    digits = load_digits()
    points = (digits.data / 16.0).astype("<f4")
    assert points.shape == (1797, 64)
    np.save(os.path.join(args.out_dir, "digits_points.npy"), np.ascontiguousarray(points))
    print(f"wrote {points.shape[0]} x {points.shape[1]} points to {args.out_dir}/digits_points.npy")


if __name__ == "__main__":
    main()
