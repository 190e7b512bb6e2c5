"""PyTorch and JAX arrays on the CPU: zero-copy in both directions, the plans driven by a torch model, the CPU
executor's plan = fused-run exactness through torch tensors, and the errors for arrays that cannot be written (JAX
arrays are immutable; a tensor that requires grad is autograd's). Each test skips without its framework."""
import numpy as np
import pytest

import diffsample as ds
from conftest import torch_or_none

torch = torch_or_none()
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")
plans = pytest.mark.skipif(not ds._core.HAS_SAMPLING_PLANS, reason="the library has no ask/tell plans")


def jnp_or_skip():
    return pytest.importorskip("jax.numpy")


def test_jax_arrays_are_refused_where_the_call_writes(mixture2):
    # A JAX array is immutable (JAX may share its buffer between arrays): writing into it through DLPack would change
    # a value JAX believes constant, so every argument a call writes refuses it before anything runs.
    jnp = jnp_or_skip()
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(8, 2)
    j = jnp.zeros((8, 2), dtype=jnp.float32)
    calls = [
        ("out", lambda: mixture2.score(x, 1.0, 0.5, out=j)),
        ("out", lambda: ds.diffusion(mixture2, out=j, steps=3)),
        ("x", lambda: ds.langevin(mixture2, j, method="ula", step_size=0.01, steps=2)),
        ("x", lambda: ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3).run(lambda x, a, s: x, j)),
        ("out", lambda: mixture2.sample(out=j)),
        ("out", lambda: ds.gather_particles(x.reshape(1, 8, 2), np.zeros((1, 8), np.int32), out=j.reshape(1, 8, 2))),
        ("ancestors", lambda: ds.resample(x.reshape(2, 8), ancestors=jnp.zeros((2, 8), dtype=jnp.int32))),
    ]
    for name, call in calls:
        with pytest.raises(ds.InvalidArgument, match=name + ": .*JAX array"):
            call()
        assert not np.asarray(j).any(), name
    # As inputs they are read in place: results are NumPy arrays.
    got = mixture2.score(jnp.asarray(x), 1.0, 0.5)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, mixture2.score(x, 1.0, 0.5))


@needs_torch
def test_tensors_that_require_grad_are_read_but_not_written(mixture2):
    x = torch.randn(8, 2, requires_grad=True)
    np.testing.assert_array_equal(mixture2.score(x, 1.0, 0.5).numpy(), mixture2.score(x.detach(), 1.0, 0.5).numpy())
    out = torch.zeros(8, 2, requires_grad=True)
    with pytest.raises(ds.InvalidArgument, match="out: .*requires grad"):
        mixture2.score(x, 1.0, 0.5, out=out)
    with pytest.raises(ds.InvalidArgument, match="x: .*requires grad"):
        ds.langevin(mixture2, x, method="ula", step_size=0.01, steps=2)
    assert not out.detach().any()
    # Its detached alias (the same memory, outside autograd) is the caller's explicit choice.
    mixture2.score(x, 1.0, 0.5, out=out.detach())
    assert out.detach().abs().sum() > 0


@needs_torch
def test_torch_views_are_written_in_place(mixture2):
    x = torch.randn(10, 2)
    big = torch.zeros(20, 2)
    view = big[3:13]
    assert mixture2.denoiser(x, 0.8, 0.6, out=view) is view
    assert torch.equal(big[3:13], mixture2.denoiser(x, 0.8, 0.6))
    assert not big[:3].any() and not big[13:].any()
    # A new output is a tensor; NumPy shares a CPU tensor's memory (no copy on the way back either).
    r = mixture2.log_density(x, 0.8, 0.6)
    assert isinstance(r, torch.Tensor) and r.shape == (10,)
    assert np.shares_memory(r.numpy(), r.numpy()) and r.numpy().__array_interface__["data"][0] == r.data_ptr()
    for bad, message in ((x.bfloat16(), "dtype bfloat16, expected float32"),
                         (x.half(), "dtype float16, expected float32"),
                         (torch.zeros(1, 2).expand(10, 2), "not C-contiguous"),
                         (torch.zeros(10, 3), r"shape \(10, 3\), expected \(\*, 2\)")):
        with pytest.raises(ds.InvalidArgument, match="x: " + message):
            mixture2.score(bad)


@needs_torch
def test_resample_reports_are_numpy_records_for_cpu_tensors():
    lw = torch.randn(3, 50)
    anc, w, rep = ds.resample(lw, scheme="systematic", seed=2)
    assert isinstance(anc, torch.Tensor) and anc.dtype == torch.int32 and w.shape == (3, 50)
    assert isinstance(rep, np.ndarray) and rep.dtype == ds.PARTICLE_REPORT_DTYPE and rep.shape == (3,)
    anc_np, w_np, rep_np = ds.resample(lw.numpy(), scheme="systematic", seed=2)
    np.testing.assert_array_equal(anc.numpy(), anc_np)
    np.testing.assert_array_equal(w.numpy(), w_np)
    np.testing.assert_array_equal(rep, rep_np)


@needs_torch
def test_fused_samplers_on_tensors_equal_numpy(mixture2):
    x0 = mixture2.sample(64, seed=5)
    t = torch.from_numpy(x0.copy())
    ds.langevin(mixture2, t, method="mala", step_size=0.2, steps=10, seed=4)
    np.testing.assert_array_equal(t.numpy(), ds.langevin(mixture2, x0.copy(), method="mala", step_size=0.2,
                                                         steps=10, seed=4))
    y = torch.empty(64, 2)
    ds.diffusion(mixture2, out=y, sampler="ddim", steps=15, seed=2)
    np.testing.assert_array_equal(y.numpy(), ds.diffusion(mixture2, 64, sampler="ddim", steps=15, seed=2))
    A, Y = [[1.0, 0.5]], [1.0]
    g = ds.guided_sample(mixture2, A, Y, 0.4, particles=30, steps=8, seed=1, device=torch.empty(0),
                         outputs=("samples", "log_normaliser"))
    n = ds.guided_sample(mixture2, A, Y, 0.4, particles=30, steps=8, seed=1, outputs=("samples", "log_normaliser"))
    assert isinstance(g["samples"], torch.Tensor) and g["log_normaliser"].dtype == torch.float64
    for k in ("samples", "log_normaliser"):
        np.testing.assert_array_equal(g[k].numpy(), n[k])


@needs_torch
@plans
def test_plans_on_tensors_reproduce_the_fused_samplers(mixture2):
    # The exactness contract from Python with torch tensors end to end: the state, the model's inputs and outputs.
    fused = ds.diffusion(mixture2, 100, sampler="ddpm", steps=12, seed=8)
    x = torch.empty(100, 2)
    ds.DiffusionPlan(100, 2, sampler="ddpm", steps=12, seed=8).run(lambda x, a, s: mixture2.denoiser(x, a, s), x)
    np.testing.assert_array_equal(x.numpy(), fused)
    fused = ds.diffusion(mixture2, 100, sampler="ode_heun", steps=10, seed=3, final_denoise=True)
    plan = ds.SamplingPlan.diffusion(100, 2, sampler="ode_heun", steps=10, seed=3, final_denoise=True,
                                     like=torch.empty(0))
    got = plan.run(lambda p, a, s: mixture2.denoiser(torch.from_numpy(p), a, s))
    np.testing.assert_array_equal(got, fused)
    x0 = mixture2.sample(100, seed=1)
    fused = ds.langevin(mixture2, x0.copy(), method="mala", step_size=0.3, steps=8, seed=6)
    plan = ds.SamplingPlan.langevin(100, 2, method="mala", step_size=0.3, steps=8, seed=6)

    def mala_model(p, a, s):
        p = torch.from_numpy(p)
        return mixture2.score(p, a, s), mixture2.log_density(p, a, s)

    np.testing.assert_array_equal(plan.run(mala_model, initial=torch.from_numpy(x0)), fused)


class GaussianDenoiser(torch.nn.Module if torch is not None else object):
    """E[x0 | a x0 + s z = x] for x0 ~ N(mu, v I), in torch operations with mu a trainable parameter."""

    def __init__(self, mu, v):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu, dtype=torch.float32))
        self.v = float(v)

    def forward(self, x, a, s):
        return self.mu + (a * self.v / (a * a * self.v + s * s)) * (x - a * self.mu)


@needs_torch
@plans
@pytest.mark.parametrize("route", ["DiffusionPlan", "SamplingPlan"])
def test_plans_driven_by_a_torch_module(route):
    # A torch module (its output requires grad) drives the plans; it computes the one-component mixture's denoiser
    # in its own FP32 operations, so the chains follow the fused sampler's to FP32 rounding: the denoiser is a
    # contraction here (gain a v / (a^2 v + s^2) <= 1 / a) and 20 steps of a few ulps of |x| <= ~4 stay far
    # below 1e-4 (measured 5e-7). A model whose variance is 1% off is seen at 1e-3.
    mu, v = [1.5, -0.5], 0.7
    fused = ds.diffusion(ds.GaussianMixture([1.0], [mu], [v]), 256, sampler="ddpm", steps=20, seed=9)
    for model, close in ((GaussianDenoiser(mu, v), True), (GaussianDenoiser(mu, 1.01 * v), False)):
        assert model(torch.zeros(1, 2), 1.0, 0.5).requires_grad
        if route == "DiffusionPlan":
            got = ds.DiffusionPlan(256, 2, sampler="ddpm", steps=20, seed=9).run(model, torch.empty(256, 2)).numpy()
        else:
            plan = ds.SamplingPlan.diffusion(256, 2, sampler="ddpm", steps=20, seed=9, like=torch.empty(0))
            got = plan.run(lambda p, a, s: model(torch.from_numpy(p), a, s))
        err = np.abs(got - fused).max()
        assert (err < 1e-4) if close else (err > 1e-3), err


@plans
def test_sampling_plan_run_takes_the_models_output_as_it_is(mixture2):
    # run() copies the model's output into the plan's buffer: no dtype conversion and no broadcasting, as for every
    # array of the package (DiffusionPlan.step refuses them too); the plan is left at the refused ask.
    plan = ds.SamplingPlan.diffusion(16, 2, sampler="ddpm", steps=3)
    good = lambda x, a, s: mixture2.denoiser(np.ascontiguousarray(x), a, s)  # noqa: E731
    for model, message in ((lambda x, a, s: good(x, a, s).astype(np.float64), "dtype float64, expected float32"),
                           (lambda x, a, s: good(x, a, s)[:1], r"shape \(1, 2\), expected \(16, 2\)"),
                           (lambda x, a, s: good(x, a, s)[0], r"shape \(2,\), expected \(16, 2\)"),
                           (lambda x, a, s: 0.0, "a float")):
        with pytest.raises(ds.InvalidArgument, match="model: " + message):
            plan.run(model)
        assert plan.position == 0
    mala = ds.SamplingPlan.langevin(16, 2, method="mala", step_size=0.1, steps=2)
    with pytest.raises(ds.InvalidArgument, match=r"log_density: shape \(1,\), expected \(16,\)"):
        mala.run(lambda x, a, s: (mixture2.score(np.ascontiguousarray(x), a, s), np.zeros(1, np.float32)),
                 initial=mixture2.sample(16, seed=1))
    if torch is not None:
        with pytest.raises(ds.InvalidArgument, match="model: dtype float64, expected float32"):
            plan.run(lambda x, a, s: torch.from_numpy(good(x, a, s)).double())
