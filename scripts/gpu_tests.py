#!/usr/bin/env python3
"""Prints the GoogleTest filter that selects every test needing a GPU, read from the test sources.

A test needs a GPU when its body calls DIFFSAMPLE_REQUIRE_GPU() (tests/reference/helpers.hpp) or skips with
cuda_unavailable_reason() as that macro does. (Tests that merely run on the automatic executor, which is the GPU when
there is one, are CPU tests here.) scripts/gpu-check.sh runs exactly these under compute-sanitizer (the
CPU-only tests would only slow the sanitizers down), whatever the tests are named.

  scripts/gpu_tests.py [tests folder]          # the filter, e.g. Diffusion.CpuAndGpuAgree:*/SimdTargets.Every*/*
  scripts/gpu_tests.py --list [tests folder]   # one Suite.Name per line
Python standard library only.
"""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKERS = ("DIFFSAMPLE_REQUIRE_GPU()", "cuda_unavailable_reason()")
HEADER = re.compile(r"^\s*(TEST|TEST_F|TEST_P)\(\s*(\w+)\s*,\s*(\w+)\s*\)", re.M)


def gpu_tests(folder):
    """[(macro, suite, name)] of the tests whose body holds a GPU marker."""
    found = []
    for path in sorted(glob.glob(os.path.join(folder, "*.cpp")) + glob.glob(os.path.join(folder, "*.cu"))):
        with open(path, errors="replace") as f:
            text = f.read()
        heads = list(HEADER.finditer(text))
        for i, m in enumerate(heads):
            body = text[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            if any(k in body for k in MARKERS):
                found.append(m.groups())
    return found


def main():
    args = [a for a in sys.argv[1:] if a != "--list"]
    folder = args[0] if args else os.path.join(ROOT, "tests")
    tests = gpu_tests(folder)
    if "--list" in sys.argv:
        for macro, suite, name in tests:
            print("{}.{}".format(suite, name) + (" (parameterised)" if macro == "TEST_P" else ""))
        return 0
    # TEST_P names read Instance/Suite.Name/Param.
    print(":".join("*/{}.{}/*".format(s, n) if m == "TEST_P" else "{}.{}".format(s, n) for m, s, n in tests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
