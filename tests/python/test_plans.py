"""The ask/tell plans from Python: fed the mixture's own outputs they equal the fused samplers bit for bit (CPU)."""
import numpy as np
import pytest

import diffsample as ds

pytestmark = pytest.mark.skipif(not ds._core.HAS_SAMPLING_PLANS, reason="the library has no ask/tell plans")

CASES = [
    dict(sampler="ddpm"),
    dict(sampler="ddim", eta=0.5),
    dict(sampler="reverse_sde", schedule="ornstein_uhlenbeck"),
    dict(sampler="ode_heun", final_denoise=True),
    dict(sampler="stochastic_localization", schedule="stochastic_localization"),
    dict(sampler="walk_jump", sigma=1.5, step_size=0.1),
    dict(sampler="sequential_measurements", sigma=1.0, step_size=0.05, measurements=3),
]


@pytest.mark.parametrize("case", CASES, ids=[c["sampler"] for c in CASES])
def test_diffusion_plans_equal_the_fused_samplers(mixture2, case):
    n = 200
    fused = ds.diffusion(mixture2, n, steps=12, seed=8, **case)
    plan = ds.SamplingPlan.diffusion(n, 2, output="denoiser", steps=12, seed=8, **case)
    got = plan.run(lambda x, a, s: mixture2.denoiser(np.ascontiguousarray(x), a, s))
    np.testing.assert_array_equal(got, fused)
    assert plan.done and plan.position == plan.asks


@pytest.mark.parametrize("method", ["ula", "tamed_ula"])
def test_langevin_plans_equal_the_fused_sampler(mixture2, method):
    x0 = mixture2.sample(150, seed=3)
    fused = ds.langevin(mixture2, x0.copy(), method=method, step_size=0.05, steps=15, seed=6, target=(0.9, 0.3))
    plan = ds.SamplingPlan.langevin(150, 2, output="score", method=method, step_size=0.05, steps=15, seed=6,
                                    target=(0.9, 0.3))
    got = plan.run(lambda x, a, s: mixture2.score(np.ascontiguousarray(x), a, s), initial=x0)
    np.testing.assert_array_equal(got, fused)


def test_ask_gives_views_of_the_plans_buffers(mixture2):
    plan = ds.SamplingPlan.diffusion(16, 2, output="denoiser", sampler="ddpm", steps=3)
    plan.reset()
    r = plan.ask()
    assert r["index"] == 0 and r["points"].shape == (16, 2) and r["answer"].shape == (16, 2)
    assert not r["points"].flags.writeable and r["answer"].flags.writeable
    np.testing.assert_array_equal(r["points"], plan.samples())
    with pytest.raises(ds.InvalidArgument):
        plan.ask(7)
