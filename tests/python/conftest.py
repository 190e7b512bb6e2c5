"""Shared fixtures of the diffsample pytest suite (CPU; GPU tests skip without a CUDA device and PyTorch CUDA)."""
import os
import sys

# JAX on a GPU machine puts its arrays on the GPU and takes 75% of the device's memory at its first use: with
# several test processes sharing one GPU (pytest-xdist) the first took it and the others' CUDA allocations failed,
# and the suite's JAX cases, which test JAX's CPU arrays, got CUDA ones. Before anything imports JAX: its CPU backend
# only, and no preallocation (both left as a caller set them).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
import threading
import time

import numpy as np
import pytest

import diffsample as ds


def torch_or_none():
    try:
        import torch
        return torch
    except ImportError:
        return None


def gpu_reason():
    """Why GPU tests cannot run here, or '' when they can."""
    if not ds.cuda_available():
        return "no CUDA device: " + ds.cuda_unavailable_reason()
    torch = torch_or_none()
    if torch is None or not torch.cuda.is_available():
        return "PyTorch with CUDA is not available"
    return ""


requires_gpu = pytest.mark.skipif(gpu_reason() != "", reason=gpu_reason() or "gpu")


@pytest.fixture
def mixture2():
    """A 3-component isotropic mixture in d = 2."""
    return ds.GaussianMixture([0.2, 0.5, 0.3], [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], [0.3, 0.8, 0.5])


@pytest.fixture
def mixture_diag():
    """A 2-component diagonal mixture in d = 3."""
    return ds.GaussianMixture([0.6, 0.4], [[1.0, -1.0, 0.5], [-1.5, 0.5, 2.0]],
                              [[0.5, 1.0, 0.2], [1.5, 0.3, 0.7]])


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def runs_beside(call):
    """Whether this thread ran Python while another thread was inside call(), i.e. whether call() released the GIL:
    with a switch interval of a minute the worker keeps the GIL from its start to its end unless the call releases
    it, so this thread (waiting for the GIL in Thread.start()) reads the clock after the call's end when it does not,
    and inside the call when it does (up to 20 tries, for a machine too loaded to wake this thread within a short
    call: a call that holds the GIL fails every try, so more tries cost nothing in strictness)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        for _ in range(20):
            times = {}

            def worker():
                times["enter"] = time.perf_counter()
                try:
                    call()
                except BaseException as e:  # noqa: BLE001 (raised on this thread below)
                    times["error"] = e
                times["exit"] = time.perf_counter()

            t = threading.Thread(target=worker)
            t.start()
            times["here"] = time.perf_counter()
            t.join()
            if "error" in times:
                raise times["error"]
            if times["enter"] < times["here"] < times["exit"]:
                return True
        return False
    finally:
        sys.setswitchinterval(old)
