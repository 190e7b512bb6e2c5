"""Samplers, plans, resampling, the exact posterior, guided samplers and metrics from Python (CPU executor)."""
import numpy as np
import pytest

import diffsample as ds

PLAN_CASES = [
    dict(sampler="ddpm"),
    dict(sampler="ddim", eta=0.5),
    dict(sampler="reverse_sde", schedule=ds.NoiseSchedule.ornstein_uhlenbeck(4.0)),
    dict(sampler="ode_euler", schedule=ds.NoiseSchedule.linear_interpolant().with_grid(ds._core.TimeGrid.uniform,
                                                                                        0.98, 0.0)),
    dict(sampler="stochastic_localization", schedule=ds.NoiseSchedule.stochastic_localization(1e-3, 1e2)),
    dict(sampler="walk_jump", sigma=2.0, step_size=0.1),
]


@pytest.mark.parametrize("case", PLAN_CASES, ids=[c["sampler"] for c in PLAN_CASES])
@pytest.mark.parametrize("output", ["denoiser", "score"])
def test_plan_with_the_mixture_as_model_equals_the_fused_sampler_bit_for_bit(mixture2, case, output):
    n = 300
    fused = ds.diffusion(mixture2, n, steps=20, seed=17, **case)
    plan = ds.DiffusionPlan(n, 2, output=output, steps=20, seed=17, **case)
    model = getattr(mixture2, output)
    x = plan.run(lambda x, a, s: model(x, a, s))
    if output == "denoiser":
        np.testing.assert_array_equal(x, fused)
    else:
        # The score route converts to the denoiser inside the step ((x + s^2 score) / a): rounding only.
        np.testing.assert_allclose(x, fused, rtol=1e-4, atol=1e-4)
    # A second trajectory of the same plan continues the random stream: chains n..2n-1 of one fused call.
    x2 = plan.run(lambda x, a, s: model(x, a, s))
    if output == "denoiser":
        both = ds.diffusion(mixture2, 2 * n, steps=20, seed=17, **case)
        np.testing.assert_array_equal(x2, both[n:])


def test_plan_stepwise_api(mixture2):
    plan = ds.DiffusionPlan(10, 2, sampler="ddpm", steps=5)
    assert plan.steps == 5 and not plan.needs_final_jump and plan.executor == ds._core.Executor.cpu
    a0, s0 = plan.step_channel(0)
    a4, s4 = plan.step_channel(4)
    assert s0 > s4 > 0 and 0 < a0 < a4 <= 1
    x = plan.reset(np.empty((10, 2), dtype=np.float32))
    with pytest.raises(ds.InvalidArgument, match=r"model: shape \(10, 3\)"):
        plan.step(x, np.zeros((10, 3), dtype=np.float32))
    with pytest.raises(ds.InvalidArgument, match="sampler"):
        ds.DiffusionPlan(10, 2, sampler="ode_heun", steps=5)


@pytest.mark.parametrize("call", ["reset", "step", "finish"])
def test_plan_refuses_arrays_of_another_shape_than_its_n_x_d(call):
    # The plan reads and writes its own n x d floats through the arrays' pointers: a state or model output of another
    # shape (fewer rows: written past its end; more rows: rows left out silently) is refused before anything runs.
    # Larger shapes first, so that a binding without the check fails here without writing past an array.
    plan = ds.DiffusionPlan(10, 2, sampler="walk_jump", sigma=1.0, step_size=0.1, steps=3)
    good = np.zeros((10, 2), np.float32)
    plan.reset(good.copy())
    for shape in [(11, 2), (10, 3), (20, 1), (9, 2), (2, 10), (1, 1)]:
        for name in (["x"] if call == "reset" else ["x", "model"]):
            bad = np.full(shape, 7.0, np.float32)
            x, model = (bad, good) if name == "x" else (good.copy(), bad)
            before = x.copy()
            with pytest.raises(ds.InvalidArgument, match=rf"{name}: shape \({shape[0]}, {shape[1]}\), expected "
                                                         r"\(10, 2\)"):
                getattr(plan, call)(x) if call == "reset" else getattr(plan, call)(x, model)
            np.testing.assert_array_equal(x, before)
    # The low-level plan checks the same (the package's methods pass the arrays through).
    with pytest.raises(ds.InvalidArgument, match=r"x: shape \(11, 2\), expected \(10, 2\)"):
        plan._plan.reset(np.zeros((11, 2), np.float32), 0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "reverse_sde", "ode_euler", "ode_heun", "stochastic_localization",
                                     "walk_jump", "sequential_measurements"])
def test_every_fused_sampler_runs_and_splits_by_first_chain(mixture2, sampler):
    kw = dict(sampler=sampler, steps=10, seed=4)
    if sampler == "stochastic_localization":
        kw["schedule"] = "stochastic_localization"
    if sampler == "reverse_sde":
        kw["schedule"] = "ornstein_uhlenbeck"
    if sampler in ("walk_jump", "sequential_measurements"):
        kw.update(sigma=1.0, step_size=0.05)
    if sampler == "sequential_measurements":
        kw["measurements"] = 2  # SMS's (the other samplers refuse a setting they do not read)
    whole = ds.diffusion(mixture2, 200, **kw)
    assert np.isfinite(whole).all()
    tail = ds.diffusion(mixture2, 100, first_chain=100, **kw)
    np.testing.assert_array_equal(tail, whole[100:])
    total = 10 * (2 if sampler == "sequential_measurements" else 1)
    traj = np.empty((total // 5, 200, 2), dtype=np.float32)
    ds.diffusion(mixture2, out=np.empty((200, 2), np.float32), trajectory=traj, record_every=5, **kw)
    assert np.isfinite(traj).all()


@pytest.mark.parametrize("method", ["ula", "mala", "tamed_ula"])
def test_langevin_splits_into_calls_and_counts_acceptances(mixture2, method):
    x0 = mixture2.sample(128, seed=1)
    one = ds.langevin(mixture2, x0.copy(), method=method, step_size=0.05, steps=10, seed=9)
    two = ds.langevin(mixture2, x0.copy(), method=method, step_size=0.05, steps=4, seed=9)
    ds.langevin(mixture2, two, method=method, step_size=0.05, steps=6, seed=9, first_step=4)
    np.testing.assert_array_equal(one, two)
    acc = np.empty(128, dtype=np.int64)
    ds.langevin(mixture2, x0.copy(), method=method, step_size=0.05, steps=10, seed=9, accepted=acc)
    assert ((acc >= 0) & (acc <= 10)).all()
    if method != "mala":
        assert (acc == 10).all()


def test_systematic_resampling_offspring_and_reports(rng):
    B, N = 3, 1000
    lw = rng.normal(size=(B, N)).astype(np.float32)
    anc, w, rep = ds.resample(lw, scheme="systematic", ess_threshold=2.0, seed=5)
    assert anc.dtype == np.int32 and anc.shape == (B, N)
    for b in range(B):
        p = np.exp(lw[b].astype(np.float64) - lw[b].max())
        p /= p.sum()
        np.testing.assert_allclose(w[b], p, rtol=1e-5, atol=1e-9)
        # Systematic resampling gives particle i floor(N w_i) or ceil(N w_i) offspring (fixed-point weights:
        # within 1e-9 of N w_i before the floor).
        counts = np.bincount(anc[b], minlength=N)
        assert (np.abs(counts - N * p) < 1 + 1e-6).all()
        m = lw[b].astype(np.float64).max()
        lse = m + np.log(np.exp(lw[b].astype(np.float64) - m).sum())
        assert rep["log_sum_exp"][b] == pytest.approx(lse, rel=1e-12)
        assert rep["ess"][b] == pytest.approx(1 / np.sum(p**2), rel=1e-6)
        assert rep["resampled"][b] == 1 and rep["failed"][b] == 0
    states = rng.normal(size=(B, N, 2)).astype(np.float32)
    out = ds.gather_particles(states, anc)
    np.testing.assert_array_equal(out, np.take_along_axis(states, anc[:, :, None].astype(np.int64), axis=1))
    anc64 = np.empty((B, N), dtype=np.int64)
    ds.resample(lw, scheme="systematic", ess_threshold=2.0, seed=5, ancestors=anc64)
    np.testing.assert_array_equal(anc64, anc)


def test_failed_problem_is_reported():
    lw = np.full((1, 8), -np.inf, dtype=np.float32)
    _, _, rep = ds.resample(lw)
    assert rep["failed"][0] == 1 and rep["resampled"][0] == 0


def posterior_case():
    prior = ds.GaussianMixture([0.3, 0.4, 0.3], [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], [0.3, 0.8, 0.5])
    A = np.array([[1.0, 0.5]])
    return prior, A, 0.5, np.array([0.4])


def test_exact_posterior_and_its_samples():
    prior, A, sy, y = posterior_case()
    post = ds.MixturePosterior(prior, A, sy, y)
    assert post.components == 3 and post.dim == 2
    assert post.weights.sum() == pytest.approx(1.0)
    assert post.covariances.shape == (3, 2, 2)
    # Mixture of the components' moments.
    mean = (post.weights[:, None] * post.means).sum(axis=0)
    np.testing.assert_allclose(post.mean(), mean, rtol=1e-12, atol=1e-12)
    # The same posterior through a mask operator equals the dense one.
    A2 = np.array([[0.0, 2.0]])
    np.testing.assert_allclose(ds.MixturePosterior(prior, A2, sy, y).means,
                               ds.MixturePosterior(prior, ds.ObservationOperator.mask(2, [1], [2.0]), sy, y).means,
                               rtol=1e-12, atol=1e-12)
    n = 20000
    xs = post.sample(n, seed=3)
    # Recovered weights of exact samples: each within 5 standard errors sqrt(w (1 - w) / n) <= 0.0036.
    assert ds.component_weight_error(post, xs) < 5 * np.sqrt(0.25 / n)
    np.testing.assert_allclose(ds.component_weights(post, xs).sum(), 1.0)
    # Sample mean within 5 standard errors per coordinate.
    se = np.sqrt(np.diag(post.covariance()) / n)
    assert (np.abs(xs.mean(axis=0) - post.mean()) < 5 * se).all()
    x64 = post.sample(100, seed=3, dtype="float64")
    np.testing.assert_allclose(x64, xs[:100], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler", ["smc", "dps", "pigdm", "diffpir", "skrock", "tmpd", "ddrm", "dcps"])
def test_every_guided_sampler_runs_on_two_problems(sampler):
    prior, A, sy, y = posterior_case()
    ys = np.array([[0.4], [-1.0]])
    kw = dict(particles=256, steps=20, seed=2)
    if sampler == "dcps":
        kw.update(dcps_blocks=2, dcps_langevin_steps=5)
    # (log_weights and log_normaliser are smc's; the other samplers refuse them: they were returned unwritten)
    smc_only = ("log_weights", "log_normaliser") if sampler == "smc" else ()
    r = ds.guided_sample(prior, A, ys, sy, sampler=sampler, outputs=("samples", "particles") + smc_only, **kw)
    assert r["samples"].shape == (2, 256, 2) and np.isfinite(r["samples"]).all()
    if smc_only:
        assert np.isfinite(r["log_weights"]).all() and np.isfinite(r["log_normaliser"]).all()
    again = ds.guided_sample(prior, A, ys, sy, sampler=sampler, **kw)
    np.testing.assert_array_equal(again["samples"], r["samples"])
    assert r["report"]["executor"] == "cpu"



def test_guided_operator_path_reaches_the_library():
    # operator_path (a GuidedOptions field, by name or MixturePath) forces a dense operator's products: DPS on a
    # 4 x 16 operator with 8 particles runs direct under automatic (bit for bit operator_path="direct"), gemm when
    # forced (the report says so; other bits after one step: how close the paths come is the C++ tests' to check); a
    # bad name is refused.
    rng = np.random.default_rng(51)
    d, dy = 16, 4
    prior = ds.GaussianMixture(np.full(3, 1 / 3), 3 * rng.standard_normal((3, d)), np.full(3, 0.5))
    A = 0.25 * rng.standard_normal((dy, d))
    y = 0.3 * np.sin(0.7 * np.arange(dy))
    kw = dict(sampler="dps", particles=8, steps=1, seed=29, outputs=("particles",))
    auto = ds.guided_sample(prior, A, y, 0.3, **kw)
    direct = ds.guided_sample(prior, A, y, 0.3, operator_path="direct", **kw)
    gemm = ds.guided_sample(prior, A, y, 0.3, operator_path=ds._core.MixturePath.gemm, **kw)
    assert auto["report"]["operator_path"] == "direct" and direct["report"]["operator_path"] == "direct"
    assert gemm["report"]["operator_path"] == "gemm"
    np.testing.assert_array_equal(auto["particles"], direct["particles"])
    assert not np.array_equal(gemm["particles"], direct["particles"])
    assert ds.GuidedOptions().operator_path == ds._core.MixturePath.automatic
    with pytest.raises(ds.InvalidArgument, match="path"):
        ds.guided_sample(prior, A, y, 0.3, operator_path="fast", **kw)

def test_guided_final_moves_reach_the_library():
    # final_moves / final_move_step (GuidedOptions fields): the SMC's samples after the final resampling repeat
    # rows, after 5 moves none; the moved run repeats bit for bit; a negative count is refused, naming it. Seen
    # failing with the fields left out of the binding (unknown keyword).
    prior, A, sy, y = posterior_case()
    kw = dict(sampler="smc", particles=256, steps=20, seed=4)
    plain = ds.guided_sample(prior, A, y, sy, final_moves=0, **kw)["samples"]
    moved = ds.guided_sample(prior, A, y, sy, final_moves=5, final_move_step=0.5, **kw)["samples"]
    again = ds.guided_sample(prior, A, y, sy, final_moves=5, final_move_step=0.5, **kw)["samples"]
    assert len(np.unique(plain.reshape(-1, 2), axis=0)) < 256
    assert len(np.unique(moved.reshape(-1, 2), axis=0)) == 256
    np.testing.assert_array_equal(moved, again)
    assert ds.GuidedOptions().final_move_step == 0.0
    with pytest.raises(ds.InvalidArgument, match="final_moves"):
        ds.guided_sample(prior, A, y, sy, final_moves=-2, **kw)


def test_guided_final_moves_default_to_automatic():
    # final_moves=-1 (the default) or 'auto' / 'automatic', as potentials='automatic': with the default potentials
    # (twisted here: d_y = 1, a grid ending at s = 0) the run is, bit for bit, the explicit twisted one with both
    # corrections, 4 moves and the automatic ESS threshold 0.2, and the report says 4 moves ran; final_moves=0 runs none; with linear potentials -1
    # runs none; an unknown name or -2 is refused, naming final_moves. Seen failing with the binding's default left
    # at 0 (the default run had no moves) and with 'auto' refused (an int setting).
    prior, A, sy, y = posterior_case()
    kw = dict(sampler="smc", particles=128, steps=12, seed=5)
    assert ds.GuidedOptions().final_moves == -1
    default = ds.guided_sample(prior, A, y, sy, **kw)
    assert default["report"]["final_moves"] == 4 and default["report"]["potentials"] == "twisted"
    assert default["report"]["ess_threshold"] == 0.2
    explicit = ds.guided_sample(prior, A, y, sy, potentials="twisted", start_correction=True, multistep_kernel=True,
                                final_moves=4, resampling={"ess_threshold": 0.2}, **kw)
    np.testing.assert_array_equal(default["samples"], explicit["samples"])
    for name in ("auto", "automatic", -1):
        again = ds.guided_sample(prior, A, y, sy, final_moves=name, **kw)
        np.testing.assert_array_equal(default["samples"], again["samples"])
        assert again["report"]["final_moves"] == 4
    o = ds.GuidedOptions()
    o.final_moves = 3
    o.final_moves = "auto"
    assert o.final_moves == -1
    off = ds.guided_sample(prior, A, y, sy, final_moves=0, **kw)
    assert off["report"]["final_moves"] == 0
    assert not np.array_equal(default["samples"], off["samples"])
    linear = ds.guided_sample(prior, A, y, sy, potentials="linear", **kw)["report"]
    assert linear["final_moves"] == 0 and linear["ess_threshold"] == 0.5
    assert ds.guided_sample(prior, A, y, sy, sampler="dps", particles=16, steps=4)["report"]["ess_threshold"] == 0.0
    for bad in ("often", -2):
        with pytest.raises(ds.InvalidArgument, match="final_moves"):
            ds.guided_sample(prior, A, y, sy, final_moves=bad, **kw)


def test_guided_time_grid_reaches_the_library():
    # grid="spectral" (a GuidedOptions field, given by name) changes the run, and repeats bit for bit.
    prior, A, sy, y = posterior_case()
    kw = dict(sampler="ddrm", particles=128, steps=20, seed=4)
    plain = ds.guided_sample(prior, A, y, sy, **kw)["samples"]
    spectral = ds.guided_sample(prior, A, y, sy, grid="spectral", **kw)["samples"]
    again = ds.guided_sample(prior, A, y, sy, grid=ds._core.GuidedGrid.spectral, **kw)["samples"]
    assert not np.array_equal(plain, spectral)
    np.testing.assert_array_equal(spectral, again)
    with pytest.raises(ds.InvalidArgument, match="grid"):
        ds.guided_sample(prior, A, y, sy, grid="uniform", **kw)


def test_guided_multistep_kernel_reaches_the_library():
    # multistep_kernel (a GuidedOptions field, off by default) changes an SMC run and repeats bit for bit; DPS refuses
    # it, naming it.
    prior, A, sy, y = posterior_case()
    kw = dict(sampler="smc", potentials="linear", particles=128, steps=20, seed=4)
    assert ds.GuidedOptions().multistep_kernel is False
    plain = ds.guided_sample(prior, A, y, sy, **kw)["samples"]
    multistep = ds.guided_sample(prior, A, y, sy, multistep_kernel=True, **kw)["samples"]
    again = ds.guided_sample(prior, A, y, sy, multistep_kernel=True, **kw)["samples"]
    assert not np.array_equal(plain, multistep)
    np.testing.assert_array_equal(multistep, again)
    with pytest.raises(ds.InvalidArgument, match="multistep_kernel"):
        ds.guided_sample(prior, A, y, sy, sampler="dps", particles=16, steps=5, multistep_kernel=True)


def test_guided_default_potentials_reach_the_library():
    # The default potentials ('automatic', GuidedOptions' default) pass through the Python route: a run without the
    # keyword equals, bit for bit, twisted potentials with the start correction and the multistep kernel (d_y = 1, a
    # grid ending at t = 0) and the ESS threshold 0.2, as do potentials='automatic' and 'auto', and not the linear run
    # nor the explicit twisted run at its threshold 0.5; its report names the
    # twisted potentials and both corrections. Seen failing with the resolution leaving the start correction off, and
    # (the report) before the report carried the potentials (KeyError).
    prior, A, sy, y = posterior_case()
    assert ds.GuidedOptions().potentials == ds._core.GuidedPotentials.automatic
    # final_moves=0: the potentials only (the automatic final moves: test_guided_final_moves_default_to_automatic).
    kw = dict(sampler="smc", particles=64, steps=12, seed=8, outputs=("samples", "log_normaliser"), final_moves=0)
    plain = ds.guided_sample(prior, A, y, sy, **kw)
    twisted = ds.guided_sample(prior, A, y, sy, potentials="twisted", start_correction=True, multistep_kernel=True,
                               resampling={"ess_threshold": 0.2}, **kw)
    # the automatic ESS threshold (GuidedOptions' -1) is 0.2 with the twisted potentials, 0.5 with explicit ones
    assert ds.GuidedOptions().resampling.ess_threshold == -1
    assert not np.array_equal(plain["samples"], ds.guided_sample(
        prior, A, y, sy, potentials="twisted", start_correction=True, multistep_kernel=True, **kw)["samples"])
    for name in ("samples", "log_normaliser"):
        np.testing.assert_array_equal(plain[name], twisted[name], err_msg=name)
        for given in ("automatic", "auto"):
            np.testing.assert_array_equal(ds.guided_sample(prior, A, y, sy, potentials=given, **kw)[name],
                                          plain[name], err_msg=name)
    linear = ds.guided_sample(prior, A, y, sy, potentials="linear", **kw)
    assert not np.array_equal(plain["samples"], linear["samples"])
    # The report names what ran: the default resolved, explicit potentials as given, dps none.
    assert {k: plain["report"][k] for k in ("potentials", "start_correction", "multistep_kernel")} == \
        {"potentials": "twisted", "start_correction": True, "multistep_kernel": True}
    assert (linear["report"]["potentials"], linear["report"]["start_correction"],
            linear["report"]["multistep_kernel"]) == ("linear", False, False)
    dps = ds.guided_sample(prior, A, y, sy, sampler="dps", particles=16, steps=5)
    assert (dps["report"]["potentials"], dps["report"]["start_correction"]) == ("linear", False)


def test_smc_matches_the_exact_posterior():
    # SMC targets the posterior as N grows (C++ tests hold its derived tolerances); here the Python route must give
    # what those tests see: the recovered weights near the exact ones and log p(y) near the exact evidence.
    prior, A, sy, y = posterior_case()
    post = ds.MixturePosterior(prior, A, sy, y)
    r = ds.guided_sample(prior, A, y, sy, sampler="smc", particles=4096, steps=50, seed=1,
                         outputs=("samples", "log_normaliser", "ess_trace", "resample_count"))
    xs = r["samples"][0]
    exact = post.sample(4096, seed=11)
    floor = ds.sliced_wasserstein(exact, post.sample(4096, seed=12))
    sw = ds.sliced_wasserstein(xs, exact)
    assert sw < 3 * floor + 0.02, (sw, floor)
    assert abs(r["log_normaliser"][0] - post.log_evidence) < 0.1
    assert r["ess_trace"].shape == (1, 51) and r["resample_count"][0] >= 0


def test_sliced_wasserstein_of_a_shift_in_one_dimension(rng):
    a = rng.normal(size=(500, 1)).astype(np.float32)
    # In d = 1 every direction is +-1, and W1 between a set and its shift by t is |t| exactly.
    assert ds.sliced_wasserstein(a, a + np.float32(0.75), directions=8) == pytest.approx(0.75, rel=1e-6)
    assert ds.sliced_wasserstein(a, a) == 0.0
    with pytest.raises(ds.InvalidArgument, match="p"):
        ds.sliced_wasserstein(a, a, p=3)


def test_operators_and_schedules():
    prior, A, sy, y = posterior_case()
    # An SVD operator with the same matrix gives the same posterior as the dense one.
    U, S, Vt = np.linalg.svd(A, full_matrices=False)
    op = ds.ObservationOperator.svd(np.ascontiguousarray(U), list(S), np.ascontiguousarray(Vt.T))
    assert op.kind == ds._core.ObservationKind.svd and (op.d_y, op.d_x) == (1, 2)
    np.testing.assert_allclose(op.matrix(), A, atol=1e-12)
    np.testing.assert_allclose(ds.MixturePosterior(prior, op, sy, y).means, ds.MixturePosterior(prior, A, sy, y).means,
                               rtol=1e-10, atol=1e-10)
    # One operator per problem.
    r = ds.guided_sample(prior, [A, op], np.array([[0.4], [0.4]]), [sy, sy], sampler="dps", particles=64, steps=10)
    assert r["samples"].shape == (2, 64, 2)
    # Schedule points: (t, a, s, da/dt, ds/dt) rows; VP: a^2 + s^2 = 1.
    pts = ds.NoiseSchedule.vp_linear().points(10)
    assert pts.shape == (11, 5) and pts[0, 0] == 1.0 and pts[-1, 0] == 0.0
    np.testing.assert_allclose(pts[:, 1] ** 2 + pts[:, 2] ** 2, 1.0, rtol=1e-12)
    a, s, _, _ = ds.NoiseSchedule.vp_linear().at(0.5)
    np.testing.assert_allclose([a, s], pts[5, 1:3], rtol=1e-12)
    with pytest.raises(ds.InvalidArgument):
        ds.NoiseSchedule.vp_linear().at(2.0)
