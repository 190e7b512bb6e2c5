"""Every keyword setting of the samplers reaches the library: changed alone from a base setting (under a sampler
that reads it), it changes the output bit pattern (CPU executor). The options objects are filled by name
(diffsample._fill), and target, schedule and resampling are handled by the package itself; a setting dropped on
the way would leave the base setting's output. Seen failing with guided_sample's resampling settings not
applied (the three resampling rows) and with langevin's target not set (its row)."""
import numpy as np
import pytest

import diffsample as ds

MIXTURE = dict(weights=[0.2, 0.5, 0.3], means=[[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], variances=[0.3, 0.8, 0.5])


def start():
    return np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)


LANGEVIN = [  # (keyword, base settings, changed value)
    ("method", {}, "ula"), ("step_size", {}, 0.02), ("steps", {}, 6), ("seed", {}, 7), ("first_chain", {}, 3),
    ("first_step", {}, 2), ("target", {}, (0.9, 0.3)),
]
DIFFUSION = [
    ("sampler", {}, "ddim"), ("steps", {}, 6), ("eta", {"sampler": "ddim"}, 0.5),
    ("sigma", {"sampler": "walk_jump"}, 0.7), ("step_size", {"sampler": "walk_jump"}, 0.05),
    ("measurements", {"sampler": "sequential_measurements"}, 2),
    # At t = 0 DDPM's last step already lands on the denoiser: final_denoise shows on a grid ending above 0.
    ("final_denoise", {"schedule": ds.NoiseSchedule.vp_linear().with_grid(ds._core.TimeGrid.uniform, 1.0, 0.05)},
     True),
    ("seed", {}, 7), ("first_chain", {}, 3), ("schedule", {}, "vp_cosine"),
]
DCPS = {"sampler": "dcps", "dcps_blocks": 2, "dcps_langevin_steps": 3}
GUIDED = [
    ("sampler", {}, "dps"), ("steps", {}, 6), ("seed", {}, 7), ("ddim", {}, True),
    ("eta", {"ddim": True}, 0.5),
    ("potential_spread", {"potentials": "linear"}, 2.0), ("potentials", {}, "moment"), ("grid", {}, "sqrt_alpha_bar"),
    # (the start correction changes the first weights only, little from t = 1: from t = 0.3, resampling every step)
    ("start_correction", {"potentials": "linear", "resampling": {"ess_threshold": 1.0},
                          "schedule": ds.NoiseSchedule.vp_linear().with_grid("uniform", 0.3, 0.0)}, True),
    ("schedule", {}, ds.NoiseSchedule.vp_linear(0.2, 15.0)),
    # (the scheme shows where the run resamples: the default threshold, 0.2 with the twisted potentials, does not here)
    ("resampling", {"resampling": {"ess_threshold": 1.0}}, {"scheme": "multinomial", "ess_threshold": 1.0}),
    ("resampling", {}, {"ess_threshold": 1.0}),
    ("resampling", {"resampling": {"scheme": "metropolis", "ess_threshold": 1.0}},
     {"scheme": "metropolis", "ess_threshold": 1.0, "metropolis_steps": 2}),
    ("guidance_scale", {"sampler": "dps"}, 0.5), ("guidance_scale", {"sampler": "pigdm"}, 0.5),
    ("guidance_scale", {"sampler": "tmpd"}, 0.5), ("dps_step", {"sampler": "dps"}, "normalised"),
    ("operator_path", {"sampler": "dps", "operator_path": "direct"}, "gemm"),
    ("diffpir_zeta", {"sampler": "diffpir"}, 0.3), ("diffpir_lambda", {"sampler": "diffpir"}, 3.0),
    ("skrock_stages", {"sampler": "skrock"}, 5), ("skrock_eta", {"sampler": "skrock"}, 0.1),
    ("skrock_step_fraction", {"sampler": "skrock"}, 0.01), ("skrock_lipschitz", {"sampler": "skrock"}, 30.0),
    ("ddrm_eta", {"sampler": "ddrm"}, 0.5), ("ddrm_eta_b", {"sampler": "ddrm"}, 0.5),
    ("dcps_blocks", DCPS, 1), ("dcps_langevin_steps", DCPS, 2), ("dcps_langevin_step", DCPS, 2e-3),
    ("dcps_gradient_steps", DCPS, 1), ("dcps_learning_rate", DCPS, 0.2), ("dcps_bridge_variance", DCPS, True),
    ("dcps_absolute_step", DCPS, True),
]


def ids(rows):
    return [f"{k}-{i}" for i, (k, _, _) in enumerate(rows)]


@pytest.mark.parametrize("key,base,value", LANGEVIN, ids=ids(LANGEVIN))
def test_every_langevin_keyword_changes_the_run(key, base, value):
    m = ds.GaussianMixture(**MIXTURE)
    run = lambda **kw: ds.langevin(m, start(), **dict({"steps": 5}, **base, **kw))
    assert not np.array_equal(run(), run(**{key: value}))


@pytest.mark.parametrize("key,base,value", DIFFUSION, ids=ids(DIFFUSION))
def test_every_diffusion_keyword_changes_the_run(key, base, value):
    m = ds.GaussianMixture(**MIXTURE)
    run = lambda **kw: ds.diffusion(m, 64, **dict({"steps": 5}, **dict(base, **kw)))
    assert not np.array_equal(run(), run(**{key: value}))


def test_draw_initial_false_starts_from_out():
    m = ds.GaussianMixture(**MIXTURE)
    drawn = ds.diffusion(m, out=start(), steps=5)
    assert not np.array_equal(drawn, ds.diffusion(m, out=start(), steps=5, draw_initial=False))


@pytest.mark.parametrize("key,base,value", GUIDED, ids=ids(GUIDED))
def test_every_guided_keyword_changes_the_run(key, base, value):
    m = ds.GaussianMixture(**MIXTURE)
    run = lambda **kw: ds.guided_sample(m, [[1.0, 0.5]], [0.7], 0.4, outputs=("particles",),
                                        **dict({"particles": 64, "steps": 5}, **dict(base, **kw)))["particles"]
    # ddim at the default eta = 1 is DDPM's kernel bit for bit, and eta without ddim is refused (the DDPM kernel does
    # not read it): ddim shows with eta = 0.5 beside it.
    beside = {"eta": 0.5} if key == "ddim" else {}
    assert not np.array_equal(run(), run(**{key: value}, **beside))


def _model(m, output):
    if output == "score":
        return lambda x, a, s: m.score(np.asarray(x), a, s)
    return lambda x, a, s: m.denoiser(np.asarray(x), a, s)


PLANS = [  # (constructor, keyword, base settings, changed value)
    ("langevin", "target", {"method": "ula"}, (0.9, 0.3)),
    ("langevin", "step_size", {"method": "ula"}, 0.02),
    ("diffusion", "schedule", {}, ds.NoiseSchedule.vp_linear(0.2, 15.0)),
    ("diffusion", "eta", {"sampler": "ddim"}, 0.5),
    ("diffusion_plan", "schedule", {}, ds.NoiseSchedule.vp_linear(0.2, 15.0)),
    ("diffusion_plan", "sampler", {}, "ddim"),
    # (the scheme shows where the plan resamples: at threshold 1, every step)
    ("guided", "resampling", {"resampling": {"ess_threshold": 1.0}}, {"scheme": "multinomial", "ess_threshold": 1.0}),
    ("guided", "schedule", {}, ds.NoiseSchedule.vp_linear(0.2, 15.0)),
    ("guided", "diffpir_zeta", {"sampler": "diffpir"}, 0.3),
]


@pytest.mark.parametrize("kind,key,base,value", PLANS, ids=[f"{p[0]}-{p[1]}" for p in PLANS])
def test_every_plan_keyword_changes_the_run(kind, key, base, value):
    # The plans take their settings through the same helpers as the fused calls, but for the constructors' own
    # handling of target (SamplingPlan.langevin), schedule and resampling.
    m = ds.GaussianMixture(**MIXTURE)

    def run(**kw):
        kw = dict({"steps": 5}, **dict(base, **kw))
        if kind == "langevin":
            return ds.SamplingPlan.langevin(64, 2, **kw).run(_model(m, "score"), start())
        if kind == "diffusion":
            return ds.SamplingPlan.diffusion(64, 2, **kw).run(_model(m, "denoiser"))
        if kind == "diffusion_plan":
            return ds.DiffusionPlan(64, 2, **kw).run(_model(m, "denoiser"), np.zeros((64, 2), np.float32))
        plan = ds.SamplingPlan.guided(2, [[1.0, 0.5]], [0.7], 0.4, particles=64, **kw)
        return plan.run(_model(m, "denoiser"))

    assert not np.array_equal(run(), run(**{key: value}))
