"""Shared fixtures of the diffsample pytest suite (CPU; GPU tests skip without a CUDA device and PyTorch CUDA)."""
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
