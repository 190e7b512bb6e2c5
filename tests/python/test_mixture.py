"""Mixture functions from Python against NumPy closed forms (tests/python/reference.py)."""
import numpy as np
import pytest

import diffsample as ds
from conftest import runs_beside
import reference as ref

CHANNELS = [(1.0, 0.0), (0.8, 0.6), (0.3, 0.95), (1.0, 2.0)]


def points(rng, n, d, scale=2.0):
    return (scale * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("a,s", CHANNELS)
@pytest.mark.parametrize("which", ["mixture2", "mixture_diag"])
def test_fp32_functions_match_closed_forms(request, rng, which, a, s):
    m = request.getfixturevalue(which)
    x = points(rng, 257, m.dim)
    x64 = x.astype(np.float64)
    # FP32 evaluation of O(K d) terms of size up to |x - a mu| / c: a few units in the last place of the largest
    # term, far below 1e-5 relative to (1 + the result's scale).
    for name, got in (("score", m.score(x, a, s)), ("denoiser", m.denoiser(x, a, s)),
                      ("log_density", m.log_density(x, a, s))):
        want = getattr(ref, name)(m, x64, a, s)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max()), err_msg=name)
    v = points(rng, 257, m.dim, 1.0)
    want = ref.denoiser_jvp(m, x64, v.astype(np.float64), a, s)
    np.testing.assert_allclose(m.denoiser_jvp(x, v, a, s), want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max()))


@pytest.mark.parametrize("a,s", CHANNELS)
def test_fp64_references_match_closed_forms(mixture_diag, rng, a, s):
    m = mixture_diag
    x = rng.standard_normal((64, m.dim)) * 2
    v = rng.standard_normal((64, m.dim))
    for name in ("score", "denoiser", "log_density"):
        np.testing.assert_allclose(m.evaluate_fp64(name, x, a, s), getattr(ref, name)(m, x, a, s), rtol=1e-10,
                                   atol=1e-10)
    np.testing.assert_allclose(m.denoiser_jvp_fp64(x, v, a, s), ref.denoiser_jvp(m, x, v, a, s), rtol=1e-10,
                               atol=1e-10)


def test_fp64_reference_names_an_unknown_quantity(mixture2):
    """evaluate_fp64 looked the quantity up with getattr: 'scor' raised AttributeError('scor'), and '__doc__' passed
    a string on to the binding (TypeError), where every other bad argument raises InvalidArgument naming it (the
    module's contract). Seen failing before the fix: AttributeError."""
    x = np.zeros((3, 2))
    for bad in ("scor", "__doc__", "Score", 1):
        with pytest.raises(ds.InvalidArgument, match=r"what: .* is not 'score', 'denoiser' or 'log_density'"):
            mixture2.evaluate_fp64(bad, x)
    assert mixture2.evaluate_fp64("log_density", x).shape == (3,)


def test_parameters_round_trip(mixture_diag):
    m = mixture_diag
    assert (m.components, m.dim, m.isotropic) == (2, 3, False)
    np.testing.assert_allclose(m.weights, [0.6, 0.4])
    assert m.means.shape == (2, 3) and m.variances.shape == (2, 3)
    g = ds.GaussianMixture.grid(4, 5, 2.0, 0.1)
    assert (g.components, g.dim, g.isotropic) == (25, 4, True)
    e = ds.GaussianMixture.empirical(np.arange(12.0).reshape(6, 2), 0.01)
    assert (e.components, e.dim) == (6, 2)
    np.testing.assert_allclose(e.means, np.arange(12.0).reshape(6, 2))


def test_gemm_and_direct_paths_agree(rng):
    g = ds.GaussianMixture.grid(16, 5, 1.0, 0.2)
    x = points(rng, 300, 16)
    direct = g.denoiser(x, 0.7, 0.7, path="direct")
    gemm = g.denoiser(x, 0.7, 0.7, path="gemm")
    np.testing.assert_allclose(gemm, direct, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(direct, ref.denoiser(g, x.astype(np.float64), 0.7, 0.7), rtol=1e-5, atol=1e-5)


def test_exact_samples_have_the_mixture_weights(mixture2):
    m = mixture2
    n = 20000
    x, labels = m.sample(n, seed=7, labels=True)
    assert x.shape == (n, 2) and labels.dtype == np.int32
    # Label frequencies: binomial, standard error sqrt(w (1 - w) / n) <= 0.0036; 5 of them.
    freq = np.bincount(labels, minlength=3) / n
    np.testing.assert_allclose(freq, m.weights, atol=5 * np.sqrt(0.25 / n))
    # Samples at the prior are N(mu_k, v_k) given the label: the per-component mean within 5 standard errors.
    for k in range(3):
        xs = x[labels == k]
        se = np.sqrt(m.variances[k] / len(xs))
        np.testing.assert_allclose(xs.mean(axis=0), m.means[k], atol=5 * se)
    # The split rule: the first 100 samples of a call from first_index = 0 equal a call of 100 samples.
    np.testing.assert_array_equal(m.sample(100, seed=7), x[:100])
    np.testing.assert_array_equal(m.sample(100, seed=7, first_index=100), x[100:200])


def test_mixture_constructors_release_the_gil():
    """GaussianMixture's constructors (the class, empirical(), grid()) held the GIL while building the mixture's
    tables, and on a GPU while uploading them and synchronising the legacy default stream (which waits for the
    device's other work): no other Python thread ran meanwhile, where every other call that runs work releases it.
    Seen failing before the fix: this thread never ran inside any of the three."""
    K, d = 1024, 128
    means = np.zeros((K, d))
    assert runs_beside(lambda: ds.GaussianMixture(np.ones(K), means, np.ones(K)))
    assert runs_beside(lambda: ds.GaussianMixture.empirical(means, 1.0))
    assert runs_beside(lambda: ds.GaussianMixture.grid(d, 32, 1.0, 1.0))


def test_posterior_covariance_releases_the_gil():
    """MixturePosterior.covariance() sums K d x d matrices on the host (O(K d^2): a second for thousands of
    components) and held the GIL meanwhile. Seen failing before the fix: this thread never ran inside it."""
    K, d = 64, 128
    rng = np.random.default_rng(0)
    prior = ds.GaussianMixture(np.ones(K), rng.normal(size=(K, d)), np.ones((K, d)))
    posterior = ds.MixturePosterior(prior, np.eye(1, d), 0.5, [0.0])
    assert runs_beside(posterior.covariance)
