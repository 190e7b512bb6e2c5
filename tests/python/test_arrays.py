"""DLPack in and out without copies, and clear errors for dtype, shape, stride, device and bad values."""
import numpy as np
import pytest

import diffsample as ds
from conftest import requires_gpu, torch_or_none

torch = torch_or_none()


def test_out_aliases_the_callers_numpy_array(mixture2, rng):
    x = rng.standard_normal((50, 2)).astype(np.float32)
    out = np.full((50, 2), np.nan, dtype=np.float32)
    got = mixture2.score(x, 0.8, 0.6, out=out)
    assert got is out and np.isfinite(out).all()
    # A view into a larger C-contiguous buffer: written in place, neighbours untouched.
    big = np.zeros((60, 2), dtype=np.float32)
    mixture2.denoiser(x, 0.8, 0.6, out=big[5:55])
    np.testing.assert_array_equal(big[5:55], mixture2.denoiser(x, 0.8, 0.6))
    assert (big[:5] == 0).all() and (big[55:] == 0).all()


def test_in_place_samplers_write_the_callers_memory(mixture2):
    x = np.zeros((64, 2), dtype=np.float32)
    ptr = x.__array_interface__["data"][0]
    got = ds.diffusion(mixture2, out=x, steps=20, seed=3)
    assert got is x and x.__array_interface__["data"][0] == ptr and np.abs(x).sum() > 0
    y = x.copy()
    ds.langevin(mixture2, x, method="ula", step_size=1e-2, steps=5, seed=1)
    assert not np.array_equal(x, y)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_torch_cpu_tensors_cross_without_copies(mixture2):
    x = torch.randn(40, 2)
    out = torch.empty(40, 2)
    got = mixture2.score(x, 1.0, 0.5, out=out)
    assert got is out
    np.testing.assert_array_equal(out.numpy(), mixture2.score(x.numpy(), 1.0, 0.5))
    # Without out=, the result is a new tensor of the input's framework.
    r = mixture2.denoiser(x, 1.0, 0.5)
    assert isinstance(r, torch.Tensor) and r.shape == (40, 2) and r.dtype == torch.float32
    # In place on a tensor's storage.
    y = torch.zeros(16, 2)
    ptr = y.data_ptr()
    ds.diffusion(mixture2, out=y, steps=10, seed=1)
    assert y.data_ptr() == ptr and float(y.abs().sum()) > 0
    with pytest.raises(ds.InvalidArgument, match="not C-contiguous"):
        mixture2.score(torch.randn(2, 40).t())
    with pytest.raises(ds.InvalidArgument, match="dtype float64, expected float32"):
        mixture2.score(torch.randn(4, 2, dtype=torch.float64))


def test_jax_arrays_are_read_in_place(mixture2):
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.asarray(np.linspace(-1, 1, 20, dtype=np.float32).reshape(10, 2))
    np.testing.assert_array_equal(mixture2.score(x, 0.9, 0.4), mixture2.score(np.asarray(x), 0.9, 0.4))


def test_errors_name_the_argument_and_value(mixture2):
    x = np.zeros((8, 2), dtype=np.float32)
    with pytest.raises(ds.InvalidArgument, match=r"x: dtype float64, expected float32"):
        mixture2.score(np.zeros((8, 2)))
    with pytest.raises(ds.InvalidArgument, match=r"x: shape \(8, 3\), expected \(\*, 2\)"):
        mixture2.score(np.zeros((8, 3), dtype=np.float32))
    with pytest.raises(ds.InvalidArgument, match=r"out: shape \(7, 2\), expected \(8, 2\)"):
        mixture2.score(x, out=np.zeros((7, 2), dtype=np.float32))
    with pytest.raises(ds.InvalidArgument, match="not C-contiguous"):
        mixture2.score(np.zeros((2, 8), dtype=np.float32).T)
    with pytest.raises(ds.InvalidArgument, match="not C-contiguous"):
        mixture2.score(np.zeros((8, 4), dtype=np.float32)[:, ::2])
    # The library's own validation: the message names the argument and its value; InvalidArgument is a ValueError.
    with pytest.raises(ValueError, match=r"variances\[1\]"):
        ds.GaussianMixture([0.5, 0.5], [[0, 0], [1, 1]], [1.0, -2.0])
    with pytest.raises(ds.InvalidArgument, match="steps"):
        ds.diffusion(mixture2, 4, steps=-1)
    with pytest.raises(ds.Error):
        ds.diffusion(mixture2, 4, sampler="no_such_sampler")
    with pytest.raises(TypeError, match="no setting 'stepz'"):
        ds.diffusion(mixture2, 4, stepz=3)
    # A trajectory without record_every (0: nothing recorded) names the missing setting, not a (0, n, d) shape.
    traj = np.zeros((3, 8, 2), dtype=np.float32)
    with pytest.raises(ds.InvalidArgument, match="trajectory: .*record_every is 0"):
        ds.langevin(mixture2, x.copy(), method="ula", step_size=0.01, steps=3, trajectory=traj)
    with pytest.raises(ds.InvalidArgument, match="trajectory: .*record_every is 0"):
        ds.diffusion(mixture2, out=x.copy(), steps=3, trajectory=traj)
    assert not traj.any()
    ds.langevin(mixture2, x.copy(), method="ula", step_size=0.01, steps=3, record_every=1, trajectory=traj)
    assert traj.all()
    # record_every without a trajectory (nothing would be recorded) is refused naming it, as the C ABI refuses it,
    # before anything runs.
    start = x.copy()
    with pytest.raises(ds.InvalidArgument, match="record_every: 1, but no trajectory"):
        ds.langevin(mixture2, start, method="ula", step_size=0.01, steps=3, record_every=1)
    with pytest.raises(ds.InvalidArgument, match="record_every: 2, but no trajectory"):
        ds.diffusion(mixture2, out=start, steps=4, record_every=2)
    with pytest.raises(ds.InvalidArgument, match="record_every: 2, but no trajectory"):
        ds.diffusion(mixture2, 8, steps=4, record_every=2)
    assert np.array_equal(start, x)
    # A read-only output is refused before anything runs.
    ro = np.zeros((8, 2), dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(ds.InvalidArgument, match=r"^out: a read-only NumPy array"):
        mixture2.score(x, out=ro)


def test_option_and_dtype_errors_name_the_argument(mixture2):
    # A keyword setting of the wrong type names the setting (nanobind's own message names neither it nor the
    # value), and a bool for a number is refused (True would run one particle).
    A, y = [[1.0, 0.5]], [0.25]
    with pytest.raises(TypeError, match=r"^particles: a float \(4\.7\), expected int$"):
        ds.guided_sample(mixture2, A, y, 0.5, particles=4.7, steps=2)
    with pytest.raises(TypeError, match=r"^guidance_scale: a str \('2'\), expected float$"):
        ds.guided_sample(mixture2, A, y, 0.5, sampler="dps", guidance_scale="2", steps=2)
    with pytest.raises(TypeError, match=r"^particles: a bool, expected int$"):
        ds.guided_sample(mixture2, A, y, 0.5, particles=True, steps=2)
    with pytest.raises(TypeError, match=r"^steps: a bool, expected int$"):
        ds.diffusion(mixture2, 4, steps=True)
    with pytest.raises(TypeError, match=r"^ess_threshold: a str"):
        ds.guided_sample(mixture2, A, y, 0.5, particles=4, steps=2, resampling={"ess_threshold": "0.5"})
    # Bool settings and ints for floats are taken.
    out = ds.guided_sample(mixture2, A, y, 0.5, particles=4, steps=2, final_resample=True, guidance_scale=1)
    assert out["samples"].shape == (1, 4, 2)
    # One name given as a str (it would be read letter by letter).
    with pytest.raises(ds.InvalidArgument, match=r"^outputs: a str \('samples'\), expected a sequence of names, "
                                                 r"e\.g\. \('samples',\)"):
        ds.guided_sample(mixture2, A, y, 0.5, particles=4, steps=2, outputs="samples")
    # Dtypes that one of two dtypes would take say both.
    lw = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(ds.InvalidArgument, match=r"^ancestors: dtype float32, expected int32 or int64$"):
        ds.resample(lw, ancestors=np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ds.InvalidArgument, match=r"^ancestors: dtype uint8, expected int32 or int64$"):
        ds.gather_particles(np.zeros((2, 4, 3), dtype=np.float32), np.zeros((2, 4), dtype=np.uint8))
    posterior = ds.MixturePosterior(mixture2, A, 0.5, y)
    with pytest.raises(ds.InvalidArgument, match=r"^dtype: 'int32', expected 'float32' or 'float64'$"):
        posterior.sample(3, dtype="int32")
    with pytest.raises(ds.InvalidArgument, match=r"^out: dtype float16, expected float32 or float64$"):
        posterior.sample(out=np.zeros((3, 2), dtype=np.float16))


@requires_gpu
def test_torch_cuda_tensors_on_the_current_stream(mixture2):
    x = torch.randn(1000, 2, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = mixture2.score(x, 0.8, 0.6)
        y = torch.empty(4096, 2, device="cuda")
        ds.diffusion(mixture2, out=y, steps=50, seed=2)
    s.synchronize()
    assert out.is_cuda and out.device == x.device
    np.testing.assert_allclose(out.cpu().numpy(), mixture2.score(x.cpu().numpy(), 0.8, 0.6), rtol=1e-4, atol=1e-4)
    # CUDA and CPU executors agree up to the last bits of the normals.
    ycpu = ds.diffusion(mixture2, 4096, steps=50, seed=2)
    np.testing.assert_allclose(y.cpu().numpy(), ycpu, rtol=1e-3, atol=1e-3)
    with pytest.raises(ds.InvalidArgument, match="one device"):
        mixture2.score(x, out=np.zeros((1000, 2), dtype=np.float32))


def test_version_is_the_librarys():
    from importlib.metadata import version
    assert ds.__version__ == ds._core.version() == version("diffsample")


def test_record_every_without_a_trajectory_is_refused(mixture2):
    """record_every=k without a trajectory array recorded nothing and said nothing (the C++ library skipped the
    recording); the package refuses it naming both, before anything runs, and the library itself refuses it too
    (diffsample._core, as its C API does). Seen failing before: both calls ran and returned x."""
    x = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
    before = x.copy()
    with pytest.raises(ds.InvalidArgument, match=r"^record_every: 2, but no trajectory array to record into; pass "
                                                 r"trajectory=, a \(steps // record_every, n, d\) float32 array"):
        ds.langevin(mixture2, x, method="ula", step_size=0.01, steps=4, record_every=2)
    with pytest.raises(ds.InvalidArgument, match=r"^record_every: 3, but no trajectory array .*\(total steps //"):
        ds.diffusion(mixture2, out=x, steps=6, draw_initial=False, record_every=3)
    np.testing.assert_array_equal(x, before)
    o = ds.LangevinOptions()
    o.steps, o.record_every = 4, 2
    with pytest.raises(ds.InvalidArgument, match=r"^outputs.trajectory: null, but options.record_every is 2"):
        ds._core.langevin(mixture2._m, x, o, None, None, 0)
    d = ds.DiffusionOptions()
    d.steps, d.record_every = 6, 3
    with pytest.raises(ds.InvalidArgument, match=r"^outputs.trajectory: null, but options.record_every is 3"):
        ds._core.diffusion(mixture2._m, x, d, None, 0)
    np.testing.assert_array_equal(x, before)
