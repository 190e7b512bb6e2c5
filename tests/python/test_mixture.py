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
    for bad in ("scor", "__doc__", "Score"):
        with pytest.raises(ds.InvalidArgument, match=r"what: .* is not 'score', 'denoiser' or 'log_density'"):
            mixture2.evaluate_fp64(bad, x)
    with pytest.raises(ds.InvalidArgument, match=r"what: a int \(1\), expected a name \(log_density, score, "):
        mixture2.evaluate_fp64(1, x)
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


def test_prepare_gemm_on_the_cpu(rng):
    """GaussianMixture.prepare_gemm (C++ gaussian_mixture::prepare_gemm, which Python had no form of) builds the CPU
    gemm tables ahead: it returns None, a second call does nothing, and the gemm path after it gives what a fresh
    mixture's first gemm-path call gives, bit for bit. device=None and a CPU like= mean the CPU, as the plans'
    device and like do."""
    args = ([0.2, 0.5, 0.3], [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], [0.3, 0.8, 0.5])
    x = points(rng, 64, 2)
    want = {name: getattr(ds.GaussianMixture(*args), name)(x, 0.8, 0.6, path="gemm")
            for name in ("score", "denoiser", "log_density")}
    for call in (lambda m: m.prepare_gemm("cpu"), lambda m: m.prepare_gemm(), lambda m: m.prepare_gemm(device="cpu"),
                 lambda m: m.prepare_gemm(ds._core.Executor.cpu), lambda m: m.prepare_gemm(like=x),
                 lambda m: m.prepare_gemm("auto", like=x), lambda m: m._m.prepare_gemm(ds._core.Executor.cpu)):
        m = ds.GaussianMixture(*args)
        assert call(m) is None
        assert call(m) is None
        for name, expected in want.items():
            np.testing.assert_array_equal(getattr(m, name)(x, 0.8, 0.6, path="gemm"), expected, err_msg=name)


def test_prepare_gemm_refuses_by_name(mixture2):
    """What prepare_gemm cannot do is refused naming the argument: an executor that is no name or Executor (an int or
    a bool would have been taken as the enum's value), 'auto' with nothing to follow (the library builds one
    executor's tables), a like that is no array, and a device that contradicts like."""
    from dlpack_fake import FakeCudaArray

    for bad in (1, True, 2.5, "gpus"):
        with pytest.raises(ds.InvalidArgument, match=r"^device: "):
            mixture2.prepare_gemm(bad)
        with pytest.raises(ds.InvalidArgument, match=r"^executor: "):
            mixture2._m.prepare_gemm(bad)
    with pytest.raises(ds.InvalidArgument, match=r"^device: automatic, and no like to follow; .*pass 'cpu' or 'cuda'"):
        mixture2.prepare_gemm("auto")
    with pytest.raises(ds.InvalidArgument, match=r"^executor: automatic, and no like to follow"):
        mixture2._m.prepare_gemm(ds._core.Executor.automatic)
    with pytest.raises(ds.InvalidArgument, match=r"^like: a str \('cuda'\), expected None or an array"):
        mixture2.prepare_gemm(like="cuda")
    with pytest.raises(ds.InvalidArgument, match=r"^like: on cuda:64, but cpu was asked for .*: pass like on the CPU"):
        mixture2.prepare_gemm("cpu", like=FakeCudaArray((1,), 64))
    with pytest.raises(ds.InvalidArgument, match=r"^like: on cpu:0, but cuda was asked for .*: pass like on a CUDA "):
        mixture2.prepare_gemm("cuda", like=np.zeros(1, np.float32))
    # A CUDA like is prepared on like's device, made current: one the runtime does not see is refused naming like.
    for device in (None, "cuda", "auto"):
        with pytest.raises(ds.InvalidArgument, match=r"^like: on cuda:64, but the CUDA runtime sees "):
            mixture2.prepare_gemm(device, like=FakeCudaArray((1,), 64))


@pytest.mark.skipif(ds.cuda_available(), reason="a GPU is usable here")
def test_prepare_gemm_for_cuda_without_a_gpu_is_refused_by_name(mixture2):
    """As every CUDA request without a GPU (the plans' executor='cuda'): InvalidArgument naming the argument and the
    CUDA runtime's reason, before anything is built."""
    with pytest.raises(ds.InvalidArgument, match=r"^device: cuda was requested but no GPU is usable \(.+\)$"):
        mixture2.prepare_gemm("cuda")
    with pytest.raises(ds.InvalidArgument, match=r"^executor: cuda was requested but no GPU is usable \(.+\)$"):
        mixture2._m.prepare_gemm(ds._core.Executor.cuda)


@pytest.mark.skipif(ds.cuda_available(), reason="a GPU is usable here")
def test_the_packages_no_gpu_refusals_take_the_librarys_message(mixture2):
    """The package's own refusals of a CUDA request where no GPU is usable (prepare_gemm's device, and its core's
    executor, checked before the library sees them) take the library's one message (detail::no_usable_gpu, through
    _core._check_gpu_usable), word for word the library's own refusal of a plan's executor, with the argument's name.
    Seen failing before: the package wrote the words itself (no _core._check_gpu_usable)."""
    with pytest.raises(ds.InvalidArgument) as library:
        ds.SamplingPlan.langevin(4, 2, device="cuda")  # refused by the library: "executor: ..."
    words = str(library.value)
    assert words.startswith("executor: cuda was requested but no GPU is usable (")
    for call, name in ((lambda: ds._core._check_gpu_usable("device"), "device"),
                       (lambda: mixture2.prepare_gemm("cuda"), "device"),
                       (lambda: mixture2._m.prepare_gemm(ds._core.Executor.cuda), "executor"),
                       (lambda: ds._core._check_gpu_usable("like"), "like")):
        with pytest.raises(ds.InvalidArgument) as raised:
            call()
        assert str(raised.value) == name + words[len("executor"):]


@pytest.mark.skipif(not ds.cuda_available(), reason="no GPU is usable here")
def test_the_gpu_check_passes_where_a_gpu_is_usable():
    assert ds._core._check_gpu_usable("device") is None


def test_prepare_gemm_releases_the_gil():
    """prepare_gemm builds tables (and on a GPU uploads them and makes cuBLAS handles, synchronising) without the
    GIL, as the constructors do."""
    K, d = 1024, 128
    means = np.random.default_rng(0).normal(size=(K, d))
    # A fresh mixture per try of runs_beside: a mixture's tables are built once, so a second try on the same one
    # returned at once and could not be seen running (the test failed whenever the first try came too soon, as on a
    # loaded machine).
    fresh = iter([ds.GaussianMixture(np.ones(K), means, np.ones(K)) for _ in range(20)])
    assert runs_beside(lambda: next(fresh).prepare_gemm("cpu"))
