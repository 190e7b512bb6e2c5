"""The ask/tell plans from Python: fed the mixture's own outputs they equal the fused samplers bit for bit (CPU)."""
import threading

import numpy as np
import pytest

import diffsample as ds
from conftest import runs_beside
from dlpack_fake import DLPackOnly

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


def _answer_with_the_mixture(plan, mixture):
    """Runs a guided plan from its start, answering every ask with the mixture's own model: its denoiser, or the
    vector-Jacobian product of its denoiser where the ask carries a vector."""
    plan.reset()
    while not plan.done:
        r = plan.ask()
        x = np.ascontiguousarray(r["points"])
        if r["vector"] is None:
            r["answer"][...] = mixture.denoiser(x, r["a"], r["s"], path="direct")
        else:
            r["answer"][...] = mixture.denoiser_jvp(x, np.ascontiguousarray(r["vector"]), r["a"], r["s"])
        plan.tell()


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


def test_mala_plan_equals_the_fused_sampler(mixture2):
    # Asks for the score and the log-density (at the state, then at each proposal); the accept/reject in tell().
    x0 = mixture2.sample(150, seed=3)
    accepted = np.zeros(150, dtype=np.int64)
    fused = ds.langevin(mixture2, x0.copy(), accepted=accepted, method="mala", step_size=0.3, steps=15, seed=6,
                        target=(0.9, 0.3))
    plan = ds.SamplingPlan.langevin(150, 2, output="score", method="mala", step_size=0.3, steps=15, seed=6,
                                    target=(0.9, 0.3))
    assert plan.asks == 16

    def model(x, a, s):
        x = np.ascontiguousarray(x)
        return mixture2.score(x, a, s), mixture2.log_density(x, a, s)

    got = plan.run(model, initial=x0)
    np.testing.assert_array_equal(got, fused)
    np.testing.assert_array_equal(plan.accepted(), accepted)
    assert 0 < accepted.sum() < 150 * 15
    r = plan.ask(1)
    assert r["log_density"].shape == (150,) and r["log_density"].flags.writeable
    assert ds.SamplingPlan.langevin(4, 2, method="ula", steps=2).accepted() is None
    assert ds.SamplingPlan.langevin(4, 2, method="ula", steps=2).ask(0)["log_density"] is None
    # A model that gives the score alone leaves the log-density missing: refused before the first tell.
    with pytest.raises(ds.InvalidArgument, match="log_density"):
        plan.run(lambda x, a, s: mixture2.score(np.ascontiguousarray(x), a, s), initial=x0)
    assert plan.position == 0


def test_ask_gives_views_of_the_plans_buffers(mixture2):
    plan = ds.SamplingPlan.diffusion(16, 2, output="denoiser", sampler="ddpm", steps=3)
    plan.reset()
    r = plan.ask()
    assert r["index"] == 0 and r["points"].shape == (16, 2) and r["answer"].shape == (16, 2)
    assert not r["points"].flags.writeable and r["answer"].flags.writeable
    np.testing.assert_array_equal(r["points"], plan.samples())
    with pytest.raises(ds.InvalidArgument):
        plan.ask(7)
    # -1 is the next ask; any other negative position is refused like one past the end (-2 returned the next ask).
    # Seen failing before the fix: no exception for -2.
    for bad in (-2, -4):
        with pytest.raises(ds.InvalidArgument, match=rf"k: must be in \[0, 3\), got {bad}"):
            plan.ask(bad)


def test_tell_copies_a_checked_answer(mixture2):
    # tell(answer) copies the model's output into the ask's buffer after run()'s checks: a (d,) row, float64 values
    # and one row too few are refused (writing them into the ask()['answer'] view broadcasts or casts silently) and
    # the plan does not advance; the checked answers give the fused sampler's samples. Seen failing before
    # tell(answer) (TypeError: unexpected argument).
    n = 16
    fused = ds.diffusion(mixture2, n, sampler="ddpm", steps=3, seed=4)
    plan = ds.SamplingPlan.diffusion(n, 2, output="denoiser", sampler="ddpm", steps=3, seed=4)
    plan.reset()
    while not plan.done:
        r = plan.ask()
        good = mixture2.denoiser(np.ascontiguousarray(r["points"]), r["a"], r["s"])
        for bad, message in ((good[0], r"answer: shape \(2,\), expected \(16, 2\)"),
                             (good.astype(np.float64), "answer: dtype float64, expected float32"),
                             (good[1:], r"answer: shape \(15, 2\)"),
                             ([[0.0, 0.0]] * n, "answer: a list")):
            with pytest.raises(ds.InvalidArgument, match=message):
                plan.tell(bad)
            assert plan.position == r["index"]
        with pytest.raises(ds.InvalidArgument, match="asks for no log-density"):
            plan.tell(good, np.zeros(n, dtype=np.float32))
        plan.tell(good)
    np.testing.assert_array_equal(plan.samples(), fused)
    # MALA: the log-density with the answer, checked the same way.
    mala = ds.SamplingPlan.langevin(n, 2, method="mala", steps=2, step_size=0.1)
    mala.reset(np.zeros((n, 2), dtype=np.float32))
    score = np.zeros((n, 2), dtype=np.float32)
    with pytest.raises(ds.InvalidArgument, match="log_density: ask 0 .* pass tell\\(answer, log_density\\)"):
        mala.tell(score)
    with pytest.raises(ds.InvalidArgument, match=r"log_density: shape \(15,\), expected \(16,\)"):
        mala.tell(score, np.zeros(n - 1, dtype=np.float32))
    mala.tell(score, np.zeros(n, dtype=np.float32))
    assert mala.position == 1


def test_tell_and_run_refuse_what_every_input_refuses(mixture2):
    """tell(answer) and run(model)'s outputs were copied into the plan's buffer after checks of shape, dtype and
    device only: a NumPy masked array's masked elements were copied as data (a fully masked answer gave samples of
    its hidden 1e30 values), an object array reached NumPy's copy. They are refused as every input of the package is
    (_array). Seen failing before the fix: the masked answer told, the masked model's samples returned."""
    n = 4
    plan = ds.SamplingPlan.diffusion(n, 2, output="denoiser", sampler="ddpm", steps=2, seed=1)
    plan.reset()
    r = plan.ask()
    hidden = np.ma.masked_array(np.full((n, 2), 1e30, np.float32), mask=True)
    with pytest.raises(ds.InvalidArgument, match=r"^answer: a NumPy masked array; the library ignores the mask"):
        plan.tell(hidden)
    with pytest.raises(ds.InvalidArgument, match=r"^answer: dtype object \(NumPy dtype that no DLPack array holds\)"):
        plan.tell(np.zeros((n, 2), dtype=object))
    assert plan.position == r["index"]
    with pytest.raises(ds.InvalidArgument, match=r"^model: a NumPy masked array; the library ignores the mask"):
        plan.run(lambda x, a, s: hidden)
    torch = pytest.importorskip("torch")
    plan.reset()
    plan.ask()
    with pytest.raises(ds.InvalidArgument, match=r"^answer: a sparse_coo tensor; the library reads dense"):
        plan.tell(torch.zeros(n, 2).to_sparse())
    # A tensor with the negative bit is still read as the values it holds (torch's own copy resolves it).
    plan = ds.SamplingPlan.diffusion(n, 2, output="denoiser", sampler="ddpm", steps=2, seed=1)
    plan.reset()
    while not plan.done:
        r = plan.ask()
        good = mixture2.denoiser(np.ascontiguousarray(r["points"]), r["a"], r["s"])
        plan.tell(torch._neg_view(torch.from_numpy(-good)))
    np.testing.assert_array_equal(plan.samples(), ds.diffusion(mixture2, n, sampler="ddpm", steps=2, seed=1))


def test_plan_refuses_calls_out_of_sequence():
    # Seen failing before the checks: ask() and tell() ran on a plan never reset, and a second tell() after one ask()
    # applied the next ask with the previous answer.
    plan = ds.SamplingPlan.diffusion(8, 2, output="denoiser", sampler="ddpm", steps=2)
    with pytest.raises(ds.InvalidArgument, match=r"^ask: no trajectory started: call reset\(\) first"):
        plan.ask()
    with pytest.raises(ds.InvalidArgument, match=r"^tell: no trajectory started"):
        plan.tell()
    assert plan.ask(1)["index"] == 1  # the options' requests need no trajectory
    plan.reset()
    plan.ask()
    plan.tell()
    with pytest.raises(ds.InvalidArgument, match=r"^tell: ask 1 was not asked: ask 0 was already told"):
        plan.tell()
    assert plan.position == 1
    plan.ask()
    plan.tell()
    with pytest.raises(ds.InvalidArgument, match="done"):
        plan.tell()


def test_plan_tell_with_an_answer_names_tell_when_refused():
    # tell(answer) asks for the current ask itself; refused before reset() and once done, its error names tell (the
    # call made), as tell() without an answer does, not ask. Seen failing with the refusals of the inner ask()
    # passed through ("ask: no trajectory started", "ask: the trajectory is done").
    plan = ds.SamplingPlan.diffusion(8, 2, output="denoiser", sampler="ddpm", steps=1)
    answer = np.zeros((8, 2), dtype=np.float32)
    with pytest.raises(ds.InvalidArgument, match=r"^tell: no trajectory started: call reset\(\) first"):
        plan.tell(answer)
    assert plan.position == 0
    plan.reset()
    plan.tell(answer)
    assert plan.done
    with pytest.raises(ds.InvalidArgument, match=r"^tell: the trajectory is done \(1 asks\); call reset\(\)"):
        plan.tell(answer)
    with pytest.raises(ds.InvalidArgument, match=r"^ask: the trajectory is done"):
        plan.ask()  # ask() itself still names ask


# Two problems y_b = A_b x + sigma_y,b z on the d = 2 mixture, d_y = 1.
A2 = [np.array([[1.0, 0.5]]), np.array([[-0.3, 1.0]])]
Y2 = np.array([[1.0], [-0.5]])
SIGMA2 = [0.4, 0.6]


def test_guided_smc_plan_equals_guided_sample(mixture2):
    # The plan's tells weight, resample and mutate; fed the mixture's denoiser (direct path) the plan gives
    # guided_sample()'s outputs bit for bit, and a second trajectory equals guided_sample() with guided_run_seed(4, 1).
    names = ("samples", "log_weights", "log_normaliser", "ess_trace", "resample_count")
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, sampler="smc", output="denoiser", particles=61, steps=12,
                                  seed=4)
    assert plan.rows == 2 * 61 and plan.asks == 12
    # Trajectory t runs as guided_sample() with guided_run_seed(seed, t) = seed + t * 0xDA942042E4DD58B5 (mod 2^64).
    for seed in (4, (4 + 0xDA942042E4DD58B5) % 2**64):
        # The plan takes linear potentials for the default potentials='automatic' (guided_sample() twisted ones).
        fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, sampler="smc", potentials="linear", particles=61,
                                 steps=12, seed=seed, outputs=names)
        x = plan.run(lambda x, a, s: mixture2.denoiser(np.ascontiguousarray(x), a, s, path="direct"))
        got = plan.outputs(names)
        for name in names:
            np.testing.assert_array_equal(got[name], fused[name], err_msg=name)
        np.testing.assert_array_equal(x.reshape(2, 61, 2), ds.guided_sample(
            mixture2, A2, Y2, SIGMA2, sampler="smc", potentials="linear", particles=61, steps=12, seed=seed,
            outputs=("particles",)
        )["particles"])
    with pytest.raises(ds.InvalidArgument, match="initial"):
        plan.reset(np.zeros((122, 2), dtype=np.float32))
    with pytest.raises(ds.InvalidArgument, match="SMC"):
        ds.SamplingPlan.diffusion(4, 2, sampler="ddpm", steps=2).outputs()


def test_guided_smc_plan_runs_final_moves_on_scores(mixture2):
    # final_moves=K with output='score' and final_move_curvature: 1 + 2 K more asks, all at (a_K, 0) = (1, 0), the
    # first at the samples the plan without moves gives; its particles, log-weights and log-normaliser are those of
    # the plan without moves bit for bit, its samples repeat no row (the final resampling does), and its report
    # says K moves ran. A denoiser model's plan runs them too (at the last transition's channel), a plan without the
    # curvature names it. Seen
    # failing with the field left out of the binding (unknown keyword).
    opts = dict(sampler="smc", potentials="linear", output="score", particles=61, steps=12, seed=4, final_moves=0)
    names = ("particles", "log_weights", "log_normaliser", "samples")
    score = lambda x, a, s: mixture2.score(np.ascontiguousarray(x), a, s, path="direct")
    plain = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **opts)
    plain.run(score)
    before = plain.outputs(names)
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **dict(opts, final_moves=4, final_move_curvature=1 / 0.3))
    assert plan.asks == 12 + 1 + 2 * 4 and plan.report()["final_moves"] == 4
    channels = []
    plan.run(lambda x, a, s: channels.append((a, s)) or score(x, a, s))
    assert channels[12:] == [(1.0, 0.0)] * 9
    after = plan.outputs(names)
    for name in names[:3]:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    rows = lambda x: len(np.unique(np.asarray(x).reshape(-1, 2), axis=0))
    assert rows(before["samples"]) < 122 and rows(after["samples"]) == 122
    assert ds.GuidedOptions().final_move_curvature == 0.0
    denoised = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **dict(opts, output="denoiser", final_moves=4,
                                                                 final_move_curvature=1.0))
    assert denoised.asks == 12 + 1 + 2 * 4
    with pytest.raises(ds.InvalidArgument, match="final_move_curvature"):
        ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **dict(opts, final_moves=4))


def test_guided_plan_reports_the_settings_it_runs(mixture2):
    # report(): guided_sample()'s report of the run the plan makes, set when the plan is made. The default options
    # (potentials='automatic', final_moves=-1) resolve to linear potentials and no moves in the plan, to twisted ones
    # with both corrections and 4 moves in guided_sample() (d_y = 1); the plan's report made explicit is the run
    # guided_sample() reproduces bit for bit, reporting the same (launches aside: 0 in a plan). TMPD with the path
    # forced to gemm reports gemm in both; a plan that is not guided refuses, naming report.
    names = ("samples", "log_weights", "log_normaliser")
    opts = dict(sampler="smc", particles=23, steps=5, seed=3)
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **opts)
    made = plan.report()
    assert made == {"executor": "cpu", "launches": 0, "operator_path": "direct", "potentials": "linear",
                    "start_correction": False, "multistep_kernel": False, "final_moves": 0, "ess_threshold": 0.5}
    automatic = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=("samples",), **opts)["report"]
    assert (automatic["potentials"], automatic["start_correction"], automatic["final_moves"],
            automatic["ess_threshold"]) == ("twisted", True, 4, 0.2)
    explicit = dict(opts, potentials=made["potentials"], start_correction=made["start_correction"],
                    multistep_kernel=made["multistep_kernel"], final_moves=made["final_moves"])
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=names, **explicit)
    assert fused["report"]["launches"] > 0
    plan.run(lambda x, a, s: mixture2.denoiser(np.ascontiguousarray(x), a, s, path="direct"))
    got = plan.outputs(names)
    for name in names:
        np.testing.assert_array_equal(got[name], fused[name], err_msg=name)
    assert plan.report() == dict(fused["report"], launches=0)
    assert plan._plan.report() == made  # the core plan's own
    opts = dict(sampler="tmpd", particles=8, steps=3, seed=3, operator_path="gemm")
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **opts)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=("particles",), **opts)["report"]
    assert plan.report() == dict(fused, launches=0) and fused["operator_path"] == "gemm"
    with pytest.raises(ds.InvalidArgument, match="report: only a guided plan"):
        ds.SamplingPlan.diffusion(4, 2, sampler="ddpm", steps=2).report()


def test_core_write_outputs_checks_the_plans_own_sizes(mixture2):
    # diffsample._core's write_outputs takes problems, particles and steps from the caller; sizes other than the
    # plan's (one problem of 2 N particles for 2 problems of N, the same rows) would check a smaller log_normaliser
    # or ess_trace than the plan writes. They are refused and nothing is written, past the array or into it.
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, sampler="smc", particles=8, steps=3, seed=1)
    plan.run(lambda x, a, s: mixture2.denoiser(np.ascontiguousarray(x), a, s))
    core = plan._plan
    buf = np.full(4, 7.0)
    with pytest.raises(ds.InvalidArgument, match=r"^write_outputs: problems = 1, particles = 16, steps = 3, but "
                                                 r"the plan has 2 problems of 8 particles and 3 steps"):
        core.write_outputs(1, 16, 3, log_normaliser=buf[:1])
    ess = np.full((2, 3), 7.0, dtype=np.float32)
    with pytest.raises(ds.InvalidArgument, match=r"steps = 1, but the plan has .* and 3 steps"):
        core.write_outputs(2, 8, 1, ess_trace=ess[:, :2].copy())
    np.testing.assert_array_equal(buf, 7.0)
    # The plan's own sizes write what outputs() gives.
    core.write_outputs(2, 8, 3, log_normaliser=buf[:2])
    np.testing.assert_array_equal(buf[:2], plan.outputs(("log_normaliser",))["log_normaliser"])
    np.testing.assert_array_equal(buf[2:], 7.0)


def test_a_wrapped_core_plan_gives_the_outputs(mixture2):
    # SamplingPlan(core_plan) around a guided SMC plan of diffsample._core answered outputs() with "only a guided SMC
    # plan has outputs" (the sizes were kept by SamplingPlan.guided() only); the sizes are the core plan's own now,
    # so the wrapper gives what the plan that made it gives. What is no core plan is refused by name, not later with
    # an AttributeError.
    names = ("samples", "log_weights", "log_normaliser", "ess_trace", "resample_count")
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, sampler="smc", particles=8, steps=3, seed=2)
    model = lambda x, a, s: mixture2.denoiser(np.ascontiguousarray(x), a, s, path="direct")  # noqa: E731
    plan.run(model)
    wrapped = ds.SamplingPlan(plan._plan)
    assert plan._plan.guided_sizes == (2, 8, 3)
    got, want = wrapped.outputs(names), plan.outputs(names)
    for name in names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert ds.SamplingPlan.diffusion(4, 2, sampler="ddpm", steps=2)._plan.guided_sizes is None
    for bad in (None, 3, plan):
        with pytest.raises(ds.InvalidArgument, match=r"^core_plan: .*, expected a diffsample\._core\.SamplingPlan"):
            ds.SamplingPlan(bad)
    with pytest.raises(ds.InvalidArgument, match=r"^like: a str \('torch'\), expected None or an array"):
        ds.SamplingPlan(plan._plan, like="torch")


def test_dps_plan_asks_for_vector_jacobian_products(mixture2):
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, sampler="dps", particles=40, steps=10, seed=2,
                             outputs=("particles",))["particles"]
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, sampler="dps", particles=40, steps=10, seed=2)
    _answer_with_the_mixture(plan, mixture2)
    np.testing.assert_array_equal(plan.samples().reshape(2, 40, 2), fused)
    # run()'s model(points, a, s) cannot answer the J^T v asks: refused before any ask, the plan left as it was.
    calls = []
    with pytest.raises(ds.InvalidArgument, match=r"ask 1 .*J\^T v"):
        plan.run(lambda x, a, s: calls.append(a) or mixture2.denoiser(np.ascontiguousarray(x), a, s))
    assert calls == [] and plan.done


@pytest.mark.parametrize("path", ["automatic", "direct", "gemm"])
def test_dps_plan_runs_the_operator_path_guided_sample_runs(mixture2, path):
    # The plan takes its guidance as matrix products over all particles exactly where guided_sample() does (gemm
    # forced here; the size rule leaves these small operators direct under 'automatic'): the same particles bit for
    # bit and the same report. Seen failing with the plan running it per particle and reporting 'direct'.
    opts = dict(sampler="dps", particles=40, steps=6, seed=5, operator_path=path)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=("particles",), **opts)
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **opts)
    assert plan.report() == dict(fused["report"], launches=0)
    assert plan.report()["operator_path"] == ("gemm" if path == "gemm" else "direct")
    _answer_with_the_mixture(plan, mixture2)
    np.testing.assert_array_equal(plan.samples().reshape(2, 40, 2), fused["particles"])


def test_dcps_plan_asks_at_the_fits_draws_and_equals_guided_sample(mixture2):
    # DCPS asks at the particles (Langevin steps, transitions) and at its variational fits' draws q (gradient steps),
    # each J^T v ask at the points of the ask before it; fed the mixture's denoiser and J v it gives guided_sample()'s
    # particles bit for bit.
    opts = dict(sampler="dcps", particles=40, steps=8, seed=3, dcps_blocks=2, dcps_langevin_steps=2,
                dcps_langevin_step=0.05)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=("particles",), **opts)["particles"]
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **opts)
    plan.reset()
    away, vectors, last = 0, 0, None
    while not plan.done:
        r = plan.ask()
        x = np.ascontiguousarray(r["points"])
        if r["vector"] is None:
            away += not np.array_equal(x, plan.samples())
            r["answer"][...] = mixture2.denoiser(x, r["a"], r["s"], path="direct")
        else:
            vectors += 1
            np.testing.assert_array_equal(x, last)
            r["answer"][...] = mixture2.denoiser_jvp(x, np.ascontiguousarray(r["vector"]), r["a"], r["s"])
        last = x
        plan.tell()
    assert away > 0 and vectors > 0
    np.testing.assert_array_equal(plan.samples().reshape(2, 40, 2), fused)
    with pytest.raises(ds.InvalidArgument, match="SMC"):
        plan.outputs()


def test_tmpd_plan_asks_for_products_with_the_rows_of_a(mixture2):
    # TMPD: per step the denoiser, then J^T v for v = each row of the problem's A (d_y = 1 here: two asks per step);
    # fed the mixture's denoiser and J v it gives guided_sample()'s particles bit for bit.
    opts = dict(sampler="tmpd", particles=40, steps=10, seed=6)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=("particles",), **opts)["particles"]
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **opts)
    assert plan.asks == 20
    plan.reset()
    while not plan.done:
        r = plan.ask()
        x = np.ascontiguousarray(r["points"])
        if r["vector"] is None:
            r["answer"][...] = mixture2.denoiser(x, r["a"], r["s"], path="direct")
        else:
            rows = np.concatenate([np.repeat(A2[b], 40, axis=0) for b in range(2)]).astype(np.float32)
            np.testing.assert_array_equal(r["vector"], rows)
            r["answer"][...] = mixture2.denoiser_jvp(x, np.ascontiguousarray(r["vector"]), r["a"], r["s"])
        plan.tell()
    np.testing.assert_array_equal(plan.samples().reshape(2, 40, 2), fused)


def test_diffpir_plan_equals_guided_sample(mixture2):
    # One ask per step; the tell's data step and re-noising are the fused run's own, so fed the mixture's denoiser
    # (direct path) the plan gives guided_sample()'s particles bit for bit; a second trajectory draws fresh noise.
    options = dict(sampler="diffpir", particles=40, steps=10, seed=3, diffpir_zeta=0.4, diffpir_lambda=2.0)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=("particles",), **options)["particles"]
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **options)
    assert plan.asks == 10

    def model(x, a, s):
        return mixture2.denoiser(np.ascontiguousarray(x), a, s, path="direct")

    first = plan.run(model).copy()
    np.testing.assert_array_equal(first.reshape(2, 40, 2), fused)
    assert not np.array_equal(plan.run(model), first)


def test_ddrm_plan_equals_guided_sample(mixture2):
    # One ask per step at the particles; the tell is the fused run's DDRM update, so fed the mixture's denoiser
    # (direct path) the plan gives guided_sample()'s particles bit for bit; a second trajectory draws fresh noise.
    options = dict(sampler="ddrm", particles=40, steps=10, seed=4, ddrm_eta=0.6, ddrm_eta_b=0.9)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=("particles",), **options)["particles"]
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **options)
    assert plan.asks == 10

    def model(x, a, s):
        return mixture2.denoiser(np.ascontiguousarray(x), a, s, path="direct")

    first = plan.run(model).copy()
    np.testing.assert_array_equal(first.reshape(2, 40, 2), fused)
    assert not np.array_equal(plan.run(model), first)


def test_skrock_plan_asks_for_the_prior_score_at_its_stages(mixture2):
    # One ask per drift evaluation, the prior's score at (1, 0) at the stage's point; the plan needs a Lipschitz
    # bound of that score and the caller's initial particles. Two plans from the same particles agree (a plan's
    # first trajectory keys as guided_sample()); its second trajectory draws fresh noise.
    options = dict(sampler="skrock", particles=40, steps=4, seed=5, skrock_stages=3, skrock_step_fraction=0.05)
    with pytest.raises(ds.InvalidArgument, match="skrock_lipschitz"):
        ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, output="score", **options)
    with pytest.raises(ds.InvalidArgument, match="output"):
        ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, output="denoiser", skrock_lipschitz=1.0, **options)
    plans = [ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, output="score", skrock_lipschitz=1.0, **options)
             for _ in range(2)]
    assert plans[0].asks == 4 * 3
    with pytest.raises(ds.InvalidArgument, match="initial"):
        plans[0].reset()
    initial = mixture2.sample(80, seed=2)
    asked = []

    def model(x, a, s):
        asked.append((a, s))
        return mixture2.score(np.ascontiguousarray(x), a, s, path="direct")

    first = plans[0].run(model, initial)
    assert set(asked) == {(1.0, 0.0)} and len(asked) == 12
    np.testing.assert_array_equal(plans[1].run(model, initial), first)
    assert not np.array_equal(first, initial)
    assert not np.array_equal(plans[0].run(model, initial), first)


def test_moment_smc_plan_asks_for_the_rows_of_a(mixture2):
    # Moment-projected potentials: per transition the model's output, then J^T a_o for the row a_o of each
    # particle's A (d_y = 1 here); fed the mixture's denoiser and its JVP the plan gives guided_sample()'s outputs.
    names = ("samples", "log_weights", "log_normaliser")
    options = dict(sampler="smc", potentials="moment", particles=30, steps=8, seed=6)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=names, **options)
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **options)
    assert plan.asks == 8 * 2
    plan.reset()
    while not plan.done:
        r = plan.ask()
        x = np.ascontiguousarray(r["points"])
        if r["vector"] is None:
            r["answer"][...] = mixture2.denoiser(x, r["a"], r["s"], path="direct")
        else:
            v = np.asarray(r["vector"])
            np.testing.assert_array_equal(v[:30], np.broadcast_to(np.float32(A2[0][0]), (30, 2)))
            r["answer"][...] = mixture2.denoiser_jvp(x, np.ascontiguousarray(v), r["a"], r["s"])
        plan.tell()
    got = plan.outputs(names)
    for name in names:
        np.testing.assert_array_equal(got[name], fused[name], err_msg=name)


def test_twisted_smc_plan_equals_the_fused_run(mixture2):
    # Twisted potentials: the moment potentials' asks (the model's output, then J^T a_o, each into its own answer
    # buffer); the tells weight, resample and draw from the twisted proposal. Fed the mixture's denoiser and its JVP
    # the plan gives guided_sample()'s outputs bit for bit.
    names = ("particles", "samples", "log_weights", "log_normaliser", "ess_trace")
    options = dict(sampler="smc", potentials="twisted", particles=30, steps=8, seed=9)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=names, **options)
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **options)
    assert plan.asks == 8 * 2
    plan.reset()
    while not plan.done:
        r = plan.ask()
        x = np.ascontiguousarray(r["points"])
        if r["vector"] is None:
            r["answer"][...] = mixture2.denoiser(x, r["a"], r["s"], path="direct")
        else:
            v = np.ascontiguousarray(r["vector"])
            r["answer"][...] = mixture2.denoiser_jvp(x, v, r["a"], r["s"])
        plan.tell()
    got = plan.outputs(names)
    for name in names:
        np.testing.assert_array_equal(got[name], fused[name], err_msg=name)
    assert np.all(np.isfinite(got["samples"]))


@pytest.mark.parametrize("potentials", ["linear", "twisted"])
def test_smc_plan_with_the_start_correction_equals_the_fused_run(mixture2, potentials):
    # start_correction: four asks first, the model's output at u_n x (the Gauss-Legendre nodes u_n on [0, 1]) and
    # the first grid point's channel, then the transitions' asks. Fed the mixture's denoiser (and its JVP) the plan
    # gives guided_sample()'s outputs bit for bit; moment potentials refuse it, as guided_sample() does.
    names = ("particles", "samples", "log_weights", "log_normaliser", "ess_trace")
    options = dict(sampler="smc", potentials=potentials, particles=30, steps=8, seed=9, start_correction=True)
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=names, **options)
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **options)
    per = 1 if potentials == "linear" else 2
    assert plan.asks == 4 + 8 * per
    plan.reset()
    x0 = plan.samples().copy()
    nodes = [0.0694318442029737, 0.3300094782075719, 0.6699905217924281, 0.9305681557970263]
    while not plan.done:
        r = plan.ask()
        x = np.ascontiguousarray(r["points"])
        if r["index"] < 4:
            np.testing.assert_array_equal(x, np.float32(nodes[r["index"]]) * x0)
        if r["vector"] is None:
            r["answer"][...] = mixture2.denoiser(x, r["a"], r["s"], path="direct")
        else:
            r["answer"][...] = mixture2.denoiser_jvp(x, np.ascontiguousarray(r["vector"]), r["a"], r["s"])
        plan.tell()
    got = plan.outputs(names)
    for name in names:
        np.testing.assert_array_equal(got[name], fused[name], err_msg=name)
    with pytest.raises(ds.InvalidArgument, match="start_correction"):
        ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **dict(options, potentials="moment"))


@pytest.mark.parametrize("potentials,corrected", [("linear", False), ("moment", False), ("twisted", False),
                                                  ("linear", True), ("twisted", True)])
def test_smc_plan_with_the_multistep_kernel_equals_the_fused_run(mixture2, potentials, corrected):
    # multistep_kernel: the kernel mean takes m_k + w_k (m_k - m_{k-1}), m_{k-1} the denoiser output of the particle's
    # ancestor. Resampled at every transition (multinomial at threshold 1), fed the mixture's denoiser (and its JVP)
    # the plan gives guided_sample()'s outputs bit for bit; they differ from the run without the kernel. Other
    # samplers' plans refuse it, naming the sampler.
    names = ("particles", "samples", "log_weights", "log_normaliser", "ess_trace", "resample_count")
    options = dict(sampler="smc", potentials=potentials, particles=30, steps=8, seed=11, start_correction=corrected,
                   multistep_kernel=True, resampling=dict(scheme="multinomial", ess_threshold=1.0))
    fused = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=names, **options)
    # Columns 0 .. 8 of the ESS trace; the moment and twisted potentials' last transition is fully adapted (its
    # weights all equal), so their column 8 does not resample.
    resampled = 9 if potentials == "linear" else 8
    np.testing.assert_array_equal(fused["resample_count"], [resampled, resampled])
    plain = ds.guided_sample(mixture2, A2, Y2, SIGMA2, outputs=("particles",), **dict(options, multistep_kernel=False))
    assert not np.array_equal(plain["particles"], fused["particles"])
    plan = ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **options)
    assert plan.asks == (4 if corrected else 0) + 8 * (1 if potentials == "linear" else 2)
    _answer_with_the_mixture(plan, mixture2)
    got = plan.outputs(names)
    for name in names:
        np.testing.assert_array_equal(got[name], fused[name], err_msg=name)
    with pytest.raises(ds.InvalidArgument, match="multistep_kernel: not read by sampler pigdm"):
        # the SMC's other settings left out: Pi-GDM refuses each (the first named would be potentials)
        pigdm = {k: v for k, v in options.items() if k not in ("potentials", "start_correction", "resampling")}
        ds.SamplingPlan.guided(2, A2, Y2, SIGMA2, **dict(pigdm, sampler="pigdm"))


def _contend(call, first, rounds):
    """Runs first() `rounds` times on a thread (retrying a call refused because this thread's was running) while
    this thread calls call() until it ends; returns the messages of the refusals call() got (other errors
    propagate)."""
    import threading

    failures, refused = [], []

    def worker():
        try:
            done = 0
            while done < rounds:
                try:
                    first()
                    done += 1
                except ds.InvalidArgument as e:  # refused while this thread's call() ran: try again
                    if "another thread" not in str(e):
                        raise
        except BaseException as e:  # noqa: BLE001 (reported below)
            failures.append(e)

    t = threading.Thread(target=worker)
    t.start()
    while t.is_alive():
        try:
            call()
        except ds.InvalidArgument as e:
            if "another thread" not in str(e):
                raise
            refused.append(str(e))
    t.join()
    assert not failures, failures
    return refused


def test_a_plan_takes_one_call_at_a_time():
    # A plan's calls release the GIL while they run, so two threads sharing one plan ran its tell() / step() at once,
    # racing on the plan's state without a word. The second call is refused while the first runs (the first is not
    # disturbed). Seen failing before the fix: no refusal in either loop.
    n = 2**18
    plan = ds.DiffusionPlan(n, 2, sampler="ddpm", steps=100)
    x, m = np.zeros((n, 2), np.float32), np.zeros((n, 2), np.float32)
    x2, m2 = np.zeros((n, 2), np.float32), np.zeros((n, 2), np.float32)
    plan.reset(x)
    refused = _contend(lambda: plan.step(x2, m2), lambda: plan.step(x, m), 8)
    assert refused and refused[0] == ("step: the plan is running a call on another thread (a plan takes one call at a "
                                      "time; give each thread its own plan, or serialise the calls)")
    sp = ds.SamplingPlan.diffusion(n, 2, sampler="ddpm", steps=100)
    sp.reset()
    refused = _contend(lambda: sp.ask(), lambda: (sp.ask(), sp.tell()), 8)
    assert refused and refused[0].startswith("ask: the plan is running a call on another thread")


def _during_run(plan, model, call, refusal):
    """Runs plan.run(model) on another thread and, while that run waits in its model, call(), which must raise
    InvalidArgument matching refusal; returns the run's samples."""
    inside, done = threading.Event(), threading.Event()

    def waiting_model(x, a, s):
        inside.set()
        done.wait(10)
        return model(x, a, s)

    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("x", plan.run(waiting_model)))
    runner.start()
    assert inside.wait(10)
    try:
        with pytest.raises(ds.InvalidArgument, match=refusal):
            call()
    finally:
        done.set()
        runner.join()
    return result["x"]


def test_a_refused_tell_changes_nothing_of_the_running_call():
    """tell(answer) and run() are an ask, a copy into the plan's answer buffer and a tell: a second thread's
    tell(answer) made while the first thread's run() waited for its model copied its answer into the buffer (and told
    it) before anything refused it, so the first thread's trajectory carried the second's answer. Such a call is
    refused whole now, and the running trajectory is the one it gives alone. Seen failing before the fix: the second
    tell went through and the trajectory differed from its run alone."""
    n, d = 512, 2
    mix = ds.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [0.3, 0.2])

    def model(x, a, s):
        return mix.denoiser(x, a, s)

    alone = ds.SamplingPlan.diffusion(n, d, output="denoiser", sampler="ddpm", steps=4, seed=3).run(model)
    plan = ds.SamplingPlan.diffusion(n, d, output="denoiser", sampler="ddpm", steps=4, seed=3)
    ran = _during_run(plan, model, lambda: plan.tell(np.full((n, d), 7.0, np.float32)),
                      r"^tell: the plan is running a call on another thread")
    np.testing.assert_array_equal(ran, alone)


def test_one_object_is_constructed_once_whatever_threads_call_its_init():
    """The core classes' constructors release the GIL, and nanobind marks an object made only when its constructor
    returns: two threads calling __init__ on one object made with __new__ both passed nanobind's check and both
    constructed into it (the first object's tables leaked, or worse). One of them is refused now, whichever comes
    second: the one that finds the other running, or nanobind's refusal of an object already made. Seen failing
    before the fix: both calls returned on a 1000 x 1000 mixture (about 10 ms of construction without the GIL)."""
    import warnings

    K, d = 1000, 1000
    w, mu, v = np.full(K, 1.0 / K), np.zeros((K, d)), np.ones(K)
    for _ in range(3):
        obj = ds._core.GaussianMixtureCore.__new__(ds._core.GaussianMixtureCore)
        started, outcome = threading.Event(), {}

        def construct(who):
            try:
                obj.__init__(d, w, mu, v)
                outcome[who] = "made"
            except TypeError as e:
                outcome[who] = str(e)

        other = threading.Thread(target=lambda: (started.set(), construct("other")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanobind's note on an object already made
            other.start()
            started.wait(10)
            construct("this")
            other.join()
        assert list(outcome.values()).count("made") == 1, outcome
        refused = next(o for o in outcome.values() if o != "made")
        assert "running in another thread" in refused or "incompatible function arguments" in refused, outcome
        assert obj.components == K and obj.dim == d


def test_plan_resets_release_the_gil():
    """DiffusionPlan.reset() and SamplingPlan.reset() held the GIL for their initial draw (n x d normals, a step's
    work, on the library's threads), where every other call that runs work releases it: no other Python thread ran
    meanwhile. Seen failing before the fix: this thread never ran inside either reset (score(), which releases it,
    is the control)."""
    n, d = 2**17, 8
    x = np.zeros((n, d), np.float32)
    m = ds.GaussianMixture([0.5, 0.5], [[0.0] * d, [1.0] * d], [1.0, 1.0])
    assert runs_beside(lambda: m.score(x, out=np.empty_like(x)))
    plan = ds.DiffusionPlan(n, d, sampler="ddpm", steps=2)
    assert runs_beside(lambda: plan.reset(x))
    if ds._core.HAS_SAMPLING_PLANS:
        sp = ds.SamplingPlan.diffusion(n, d, sampler="ddpm", steps=2)
        assert runs_beside(lambda: sp.reset())
        assert runs_beside(lambda: sp.reset(x))


def test_an_answer_that_partly_overlaps_the_plans_buffer_is_refused():
    """An answer laid over the plan's own answer buffer otherwise than the buffer itself (an as_strided view of it)
    was PyTorch's RuntimeError ('unsupported operation: some elements of the input tensor and the written-to tensor
    refer to a single memory location') for a tensor, and a NumPy view was copied through a temporary without a
    word. Both are refused as InvalidArgument naming the argument; the buffer itself (and a view of it laid out the
    same way) is still taken, and the plan does not advance on a refusal. Seen failing before the fix: the
    RuntimeError, and no error for NumPy."""
    plan = ds.SamplingPlan.diffusion(4, 2, output="denoiser", sampler="ddpm", steps=2, seed=1)
    plan.reset()
    r = plan.ask()
    buffer = r["answer"]
    shifted = [np.lib.stride_tricks.as_strided(buffer.ravel()[1:], (4, 2), (4, 4))]
    torch = __import__("conftest").torch_or_none()
    if torch is not None:
        shifted.append(torch.from_numpy(buffer).as_strided((4, 2), (1, 1), 1))
    for bad in shifted:
        with pytest.raises(ds.InvalidArgument, match=r"^answer: partly overlaps the plan's buffer it is copied into "
                                                     r"\(the same memory laid out otherwise\)"):
            plan.tell(bad)
        assert plan.position == r["index"]
    buffer[...] = 0.5
    plan.tell(buffer.view())
    assert plan.position == r["index"] + 1


def _den_model(mix):
    return lambda x, a, s: mix.denoiser(x, a, s)


def test_a_plans_run_refuses_calls_that_move_it_from_inside_its_model():
    """A model that called reset() (or tell(), step()) on the plan whose run() was asking it went through: the same
    thread's nested call passed the whole-call guard (SamplingPlan) or there was none (DiffusionPlan), and run()
    went on answering a restarted trajectory's asks, returning samples of no trajectory without a word. Such a call
    is refused now; the plan stays usable and its next run() is a plain one. Seen failing before the fix: both runs
    returned, neither equal to a plain run."""
    n, d = 8, 2
    mix = ds.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.5, 0.5])
    den = _den_model(mix)
    sp = ds.SamplingPlan.diffusion(n, d, output="denoiser", sampler="ddpm", steps=6, seed=1)
    dp = ds.DiffusionPlan(n, d, output="denoiser", sampler="ddpm", steps=6, seed=1)
    restarts = {"sampling": lambda: sp.reset(), "sampling tell": lambda: sp.tell(),
                "diffusion": lambda: dp.reset(np.zeros((n, d), np.float32))}
    for name, restart in restarts.items():
        plan = dp if name == "diffusion" else sp
        calls = [0]

        def model(x, a, s):
            calls[0] += 1
            if calls[0] == 3:
                restart()
            return den(x, a, s)

        verb = "tell" if name.endswith("tell") else "reset"
        with pytest.raises(ds.InvalidArgument, match=rf"^{verb}: called from inside the model of this plan's run\(\)"):
            plan.run(model)
        assert calls[0] == 3, name
    # (a second trajectory's noise: plans keyed by trajectory; compare against fresh plans' second runs)
    again_s = ds.SamplingPlan.diffusion(n, d, output="denoiser", sampler="ddpm", steps=6, seed=1)
    again_s.run(den)
    again_s.run(den)
    np.testing.assert_array_equal(sp.run(den), again_s.run(den))
    again_d = ds.DiffusionPlan(n, d, output="denoiser", sampler="ddpm", steps=6, seed=1)
    again_d.run(den)
    np.testing.assert_array_equal(dp.run(den), again_d.run(den))


def test_a_running_plan_is_not_restarted_by_another_wrapper_or_thread():
    """SamplingPlan's whole-call guard was its wrapper's: a second SamplingPlan(core) of the same core plan reset it
    during the first's run(); DiffusionPlan had none, so another thread's reset() between the steps of its run() went
    through; both runs returned samples of no trajectory. The guard is the core plan's now, for both classes: the
    reset is refused and the run is its plain self. Seen failing before the fix: both resets accepted."""
    n, d = 8, 2
    mix = ds.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.5, 0.5])
    den = _den_model(mix)
    plain_s = ds.SamplingPlan.diffusion(n, d, output="denoiser", sampler="ddpm", steps=4, seed=2).run(den)
    plain_d = ds.DiffusionPlan(n, d, output="denoiser", sampler="ddpm", steps=4, seed=2).run(den)
    first = ds.SamplingPlan.diffusion(n, d, output="denoiser", sampler="ddpm", steps=4, seed=2)
    second = ds.SamplingPlan(first._plan)
    dp = ds.DiffusionPlan(n, d, output="denoiser", sampler="ddpm", steps=4, seed=2)
    cases = [(first, lambda: second.reset(), plain_s),
             (dp, lambda: dp.reset(np.zeros((n, d), np.float32)), plain_d)]
    for plan, restart, plain in cases:
        ran = _during_run(plan, den, restart, r"^reset: the plan is running a call on another thread")
        np.testing.assert_array_equal(ran, plain)


def test_a_mala_plan_of_no_rows_keeps_the_mala_protocol():
    """A MALA plan of 0 rows gave None for ask()['log_density'] and accepted(), as a plan that asks for no
    log-density does, so tell(answer, log_density) and run() with a model returning (output, log_density) were
    refused where 3 rows run (README: n = 0 runs, no work). Empty views now. Seen failing before the fix."""
    mix = ds.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.5, 0.5])
    model = lambda x, a, s: (mix.score(x, a, s), mix.log_density(x, a, s))  # noqa: E731
    for n in (3, 0):
        p = ds.SamplingPlan.langevin(n, 2, method="mala", steps=3, step_size=0.1)
        p.reset(np.zeros((n, 2), np.float32))
        r = p.ask()
        assert r["log_density"].shape == (n,) and p.accepted().shape == (n,)
        p.tell(mix.score(r["points"]), mix.log_density(r["points"]))
        p = ds.SamplingPlan.langevin(n, 2, method="mala", steps=3, step_size=0.1)
        assert p.run(model, np.zeros((n, 2), np.float32)).shape == (n, 2)
    assert ds.SamplingPlan.langevin(3, 2, method="ula", steps=3, step_size=0.1).accepted() is None


def test_a_refused_tell_changes_neither_buffer():
    """tell(answer, log_density) copied log_density into the plan's buffer before the answer was checked: a refused
    answer (float64) left the plan at its ask but with the new log-density in ask()['log_density']. Both are checked
    before either is copied now. Seen failing before the fix (7.0 became -1.0)."""
    n = 4
    p = ds.SamplingPlan.langevin(n, 2, method="mala", steps=2, step_size=0.1)
    p.reset(np.zeros((n, 2), np.float32))
    r = p.ask()
    r["log_density"][...] = 7.0
    with pytest.raises(ds.InvalidArgument, match=r"^answer: dtype float64, expected float32"):
        p.tell(np.zeros((n, 2)), np.full(n, -1.0, np.float32))
    np.testing.assert_array_equal(p.ask()["log_density"], np.full(n, 7.0, np.float32))
    assert p.position == 0


class _Misleading(DLPackOnly):
    """A DLPack export of one array with the shape and dtype attributes, and __array__, of another."""

    def __init__(self, exported, claimed):
        super().__init__(exported)
        self._claimed = claimed
        self.shape, self.dtype = claimed.shape, np.dtype(np.float32)

    def __array__(self, dtype=None, copy=None):
        return self._claimed


def test_an_answer_of_an_unknown_framework_is_read_as_exported():
    """tell(answer) checked an answer of no framework the package knows by its shape and dtype attributes and copied
    it through NumPy (its __array__, or float()): a DLPack-only array was NumPy's TypeError, one whose attributes said
    (n, d) over a (1, d) export was broadcast into every row, one whose __array__ differed from its export was
    copied from __array__. The export is what is checked and copied now, as run() and DiffusionPlan.step read it.
    Seen failing before the fix (TypeError; the broadcast accepted)."""
    n, d = 8, 2
    mix = ds.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.5, 0.5])
    p = ds.SamplingPlan.diffusion(n, d, output="denoiser", sampler="ddpm", steps=2, seed=1)
    p.reset()
    r = p.ask()
    out = mix.denoiser(r["points"], r["a"], r["s"])
    p.tell(DLPackOnly(out))
    p.reset()
    r = p.ask()
    with pytest.raises(ds.InvalidArgument, match=r"^answer: shape \(1, 2\), expected \(8, 2\)"):
        p.tell(_Misleading(out[:1].copy(), out))
    p.tell(_Misleading(out, np.zeros((1, d))))
    np.testing.assert_array_equal(r["answer"], out)
