"""Scalar, enum, boolean and required-array arguments of the package's functions are checked by name before the
binding sees them (diffsample/__init__.py: _integer, _int64, _real, _flag, _enum, _array(required=True),
_mixture): a value nanobind would refuse with a TypeError naming neither the argument nor the value (None for a
float or an array, an integer beyond the binding's int64 or int32, an int for an enum), or that Python's own
conversions would take silently (int(1.5) == 1, float('2') == 2.0, bool('no') is True, an int as an enum value), is an
InvalidArgument naming the argument. Sizes of the outputs the package allocates are checked against the library's
limits before the allocation (n and the guided outputs), and a failed allocation is the package's OutOfMemory
naming n. Seen failing against the package before these checks (each row: a TypeError, AttributeError or ValueError
naming nothing, NumPy's MemoryError or ValueError, or no error at all)."""
import numpy as np
import pytest

import diffsample as ds

MIXTURE = dict(weights=[0.5, 0.5], means=[[0.0, 0.0], [1.0, 1.0]], variances=[1.0, 1.0])


def x4():
    return np.zeros((4, 2), np.float32)


@pytest.fixture(scope="module")
def m():
    return ds.GaussianMixture(**MIXTURE)


# (id, call(m), regex of the InvalidArgument's message)
CASES = [
    ("empirical-variance-None", lambda m: ds.GaussianMixture.empirical(np.zeros((2, 2)), None),
     r"^variance: None, expected a real number"),
    ("empirical-variance-str", lambda m: ds.GaussianMixture.empirical(np.zeros((2, 2)), "1.0"),
     r"^variance: a str \('1.0'\), expected a real number"),
    ("grid-grid-int32", lambda m: ds.GaussianMixture.grid(2, 2**33, 1.0, 1.0),
     r"^grid: 8589934592 is outside \[-2147483648, 2147483647\] \(the argument's integer type, int32\)"),
    ("grid-dim-int64", lambda m: ds.GaussianMixture.grid(2**63, 2, 1.0, 1.0),
     r"^dim: 9223372036854775808 is outside \[-9223372036854775808, 9223372036854775807\]"),
    ("grid-dim-float", lambda m: ds.GaussianMixture.grid(2.0, 2, 1.0, 1.0), r"^dim: expected an integer"),
    ("grid-spacing-None", lambda m: ds.GaussianMixture.grid(2, 2, None, 1.0), r"^spacing: None, expected"),
    ("score-path-int", lambda m: m.score(x4(), path=7),
     r"^path: a int \(7\), expected a name \(automatic, direct, gemm\) or a diffsample._core.MixturePath"),
    ("score-path-bool", lambda m: m.score(x4(), path=True), r"^path: True, expected a name"),
    ("score-x-None", lambda m: m.score(None), r"^x: None, expected a float32 array"),
    ("score-a-None", lambda m: m.score(x4(), None, 0.5), r"^a: None, expected a real number"),
    ("score-s-str", lambda m: m.score(x4(), 1.0, "0.5"), r"^s: a str \('0.5'\), expected a real number"),
    ("score-a-bool", lambda m: m.score(x4(), True, 0.5), r"^a: True, expected a real number"),
    ("score-stream-uint64", lambda m: m.score(x4(), stream=2**64),
     r"^stream: 18446744073709551616 is outside \[0, 18446744073709551615\] \(a CUDA stream handle\)"),
    ("score-stream-negative", lambda m: m.score(x4(), stream=-1), r"^stream: -1 is outside"),
    ("jvp-v-None", lambda m: m.denoiser_jvp(x4(), None), r"^v: None, expected a float32 array"),
    ("fp64-s-None", lambda m: m.evaluate_fp64("score", np.zeros((2, 2)), 1.0, None), r"^s: None"),
    ("sample-a-None", lambda m: m.sample(4, None), r"^a: None, expected a real number"),
    ("langevin-x-None", lambda m: ds.langevin(m, None, steps=2), r"^x: None, expected a float32 array"),
    ("langevin-mixture", lambda m: ds.langevin(None, x4(), steps=2), r"^mixture: None, expected a GaussianMixture"),
    ("langevin-target-str", lambda m: ds.langevin(m, x4(), target=("1", 0.0), steps=2),
     r"^target\[0\] \(a\): a str \('1'\), expected a real number"),
    ("diffusion-mixture", lambda m: ds.diffusion("prior", 4, steps=2), r"^mixture: a str \('prior'\), expected"),
    ("diffusion-schedule-int", lambda m: ds.diffusion(m, 4, steps=2, schedule=3),
     r"^schedule: a int \(3\), expected None, a NoiseSchedule or a schedule kind's name"),
    ("diffusion-sampler-int", lambda m: ds.diffusion(m, 4, steps=2, sampler=7), None),  # TypeError: a setting
    ("plan-n-float", lambda m: ds.DiffusionPlan(4.5, 2, steps=2), r"^n: expected an integer"),
    ("plan-d-None", lambda m: ds.DiffusionPlan(4, None, steps=2), r"^d: expected an integer .*got None"),
    ("plan-n-int64", lambda m: ds.DiffusionPlan(2**63, 2, steps=2), r"^n: 9223372036854775808 is outside"),
    ("plan-device-None", lambda m: ds.DiffusionPlan(4, 2, device=None, steps=2),
     r"^device: None, expected a name \(automatic, cuda, cpu\)"),
    ("plan-device-unknown", lambda m: ds.DiffusionPlan(4, 2, device="tpu", steps=2),
     r"^device: unknown name 'tpu' \(expected auto, cuda or cpu\)$"),
    ("plan-output-bool", lambda m: ds.DiffusionPlan(4, 2, output=True, steps=2), r"^output: True, expected a name"),
    ("plan-step_channel-k", lambda m: ds.DiffusionPlan(4, 2, steps=2).step_channel(2**63), r"^k: 9223372036854775808"),
    ("plan-step_time-k", lambda m: ds.DiffusionPlan(4, 2, steps=2).step_time(None), r"^k: expected an integer"),
    ("plan-reset-x-None", lambda m: ds.DiffusionPlan(4, 2, steps=2).reset(None), r"^x: None, expected"),
    ("plan-run-model", lambda m: ds.DiffusionPlan(4, 2, steps=2).run(None), r"^model: None, expected a callable"),
    ("sp-ask-k", lambda m: ds.SamplingPlan.diffusion(4, 2, steps=2).ask(2**63),
     r"^k: 9223372036854775808 is outside \[-9223372036854775808, 9223372036854775807\]"),
    ("sp-ask-k-float", lambda m: ds.SamplingPlan.diffusion(4, 2, steps=2).ask(1.0), r"^k: expected an integer"),
    ("sp-langevin-d", lambda m: ds.SamplingPlan.langevin(4, "2", steps=2), r"^d: expected an integer"),
    ("sp-guided-d", lambda m: ds.SamplingPlan.guided(None, [[1.0, 0.0]], [0.5], 0.5, steps=2, particles=4),
     r"^d: expected an integer"),
    ("sp-run-model", lambda m: ds.SamplingPlan.diffusion(4, 2, steps=2).run(3), r"^model: a int \(3\), expected"),
    ("gather-states-None", lambda m: ds.gather_particles(None, np.zeros((1, 4), np.int32)), r"^states: None"),
    ("gather-ancestors-None", lambda m: ds.gather_particles(np.zeros((1, 4, 2), np.float32), None),
     r"^ancestors: None, expected an array"),
    ("posterior-prior", lambda m: ds.MixturePosterior(None, [[1.0, 0.0]], 0.5, [0.5]), r"^prior: None, expected"),
    ("guided-prior", lambda m: ds.guided_sample(3, [[1.0, 0.0]], [0.5], 0.5, steps=2, particles=4),
     r"^prior: a int \(3\), expected a GaussianMixture"),
    ("guided-sampler-None", lambda m: ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, sampler=None, steps=2),
     r"^sampler: None, expected a name"),
    ("guided-resampling-str", lambda m: ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, resampling="systematic"),
     r"^resampling: a str \('systematic'\), expected None or a dict"),
    ("guided-outputs-None", lambda m: ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, outputs=None, steps=2),
     r"^outputs: None, expected a sequence of names"),
    ("sliced-b-None", lambda m: ds.sliced_wasserstein(x4(), None), r"^b: None, expected a float32 array"),
    ("weights-reference", lambda m: ds.component_weights("m", x4()), r"^reference: a str \('m'\), expected"),
    ("weights-x-None", lambda m: ds.component_weight_error(m, None), r"^x: None, expected a float32 array"),
]


@pytest.mark.parametrize("call,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_arguments_are_refused_by_name(m, call, pattern):
    if pattern is None:  # a keyword setting: a TypeError naming it (README, "Errors")
        with pytest.raises(TypeError, match=r"^sampler: a int \(7\), expected a name \(ddpm, "):
            call(m)
        return
    with pytest.raises(ds.InvalidArgument, match=pattern):
        call(m)


def test_valid_scalars_still_pass(m):
    """What the checks take: NumPy integers and floats, 0-d arrays, ints for floats, NumPy bools, enum values."""
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    ref = m.score(x, 1.0, 0.5)
    np.testing.assert_array_equal(m.score(x, np.float32(1.0), np.array(0.5), path=ds._core.MixturePath.automatic),
                                  ref)
    np.testing.assert_array_equal(m.score(x, 1, 0.5, stream=np.uint64(0)), ref)
    plan = ds.SamplingPlan.diffusion(np.int64(4), np.int32(2), steps=2)
    assert plan.ask(np.int64(0))["index"] == 0
    assert ds.DiffusionPlan(4, 2, steps=3).step_channel(np.int64(3)) == ds.DiffusionPlan(4, 2, steps=3).step_channel(3)
    g = ds.GaussianMixture.grid(np.int64(2), np.int32(3), np.float64(1.0), 1)
    assert g.components == 9


LOSSY_REALS = [
    ("complex128", np.complex128(1 + 2j), "complex128"),
    ("complex64", np.complex64(0.5), "complex64"),
    ("bool-0d", np.array(True), "ndarray"),
]
try:
    import torch

    LOSSY_REALS += [("torch-complex", torch.tensor(1 + 2j), "Tensor"), ("torch-bool", torch.tensor(True), "Tensor")]
except ImportError:
    pass


@pytest.mark.parametrize("value,kind", [c[1:] for c in LOSSY_REALS], ids=[c[0] for c in LOSSY_REALS])
def test_complex_and_bool_values_are_no_real_numbers(m, value, kind):
    """float() takes NumPy's complex scalars, dropping the imaginary part with a ComplexWarning only, and bool
    arrays and tensors as 1.0 or 0.0 (a complex tensor was torch's RuntimeError naming nothing): the package's real
    arguments (_real), the bound classes' (real_arg) and the options' float fields (setting_value) took them without
    a word. Each refuses them by name, as it refuses a bool and a complex number. Seen failing before the fix: each
    value accepted (the complex tensor's RuntimeError for the package's and real_arg's)."""
    shown = rf"a {kind} \(.*\)"
    with pytest.raises(ds.InvalidArgument, match=rf"^a: {shown}, expected a real number$"):
        m.score(x4(), value, 0.5)
    with pytest.raises(ds.InvalidArgument, match=rf"^variance: {shown}, expected a real number$"):
        ds.GaussianMixture.empirical(np.zeros((2, 2)), value)
    with pytest.raises(ds.InvalidArgument, match=rf"^beta_min: {shown}, expected a real number$"):
        ds.NoiseSchedule.vp_linear(value)
    o = ds.DiffusionOptions()
    with pytest.raises(TypeError, match=rf"^eta: {shown}, expected float$"):
        o.eta = value
    with pytest.raises(TypeError, match=rf"^eta: {shown}, expected float$"):
        ds.diffusion(m, 4, steps=2, eta=value)


@pytest.mark.skipif("torch" not in globals(), reason="PyTorch is not installed")
def test_a_bool_tensor_is_no_integer():
    """torch.tensor(True) has __index__, so the binding's integer readers (the options' int fields, the bound
    classes' integers such as ObservationOperator.mask's d_x) took it as 1, where a bool is refused. Refused by name;
    an integer tensor still passes. Seen failing before the fix: steps set to 1, a mask of d_x = 1."""
    o = ds.DiffusionOptions()
    with pytest.raises(TypeError, match=r"^steps: a Tensor \(tensor\(True\)\), expected int$"):
        o.steps = torch.tensor(True)
    with pytest.raises(ds.InvalidArgument, match=r"^d_x: expected an integer in .*, got tensor\(True\)$"):
        ds.ObservationOperator.mask(torch.tensor(True), [0])
    o.steps = torch.tensor(3)
    assert o.steps == 3


# ---- booleans -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["no", "", 1, 0, None, 1.0])
def test_resample_reports_takes_booleans_only(value):
    lw = np.zeros((2, 4), np.float32)
    with pytest.raises(ds.InvalidArgument, match=r"^reports: .*expected True or False"):
        ds.resample(lw, reports=value)


def test_numpy_bools_are_booleans(m):
    lw = np.zeros((2, 4), np.float32)
    assert ds.resample(lw, reports=np.bool_(False))[2] is None
    assert ds.resample(lw, reports=np.bool_(True))[2].shape == (2,)
    out, labels = m.sample(8, seed=3, labels=np.bool_(True))
    assert labels.shape == (8,) and labels.dtype == np.int32
    np.testing.assert_array_equal(out, m.sample(8, seed=3))
    assert isinstance(m.sample(8, seed=3, labels=np.bool_(False)), np.ndarray)
    post = ds.MixturePosterior(m, [[1.0, 0.0]], 0.5, [0.5])
    assert len(post.sample(8, labels=np.bool_(True))) == 2
    # A boolean setting takes a NumPy bool as the bool it is (the binding alone refuses it).
    start = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    np.testing.assert_array_equal(ds.diffusion(m, out=start.copy(), steps=3, draw_initial=np.bool_(False)),
                                  ds.diffusion(m, out=start.copy(), steps=3, draw_initial=False))


@pytest.mark.parametrize("value", ["no", 1, None])
def test_posterior_labels_take_booleans_only(m, value):
    post = ds.MixturePosterior(m, [[1.0, 0.0]], 0.5, [0.5])
    with pytest.raises(ds.InvalidArgument, match=r"^labels: .*expected True or False"):
        post.sample(4, labels=value)


def test_boolean_settings_refuse_strings(m):
    with pytest.raises(TypeError, match=r"^draw_initial: a str \('no'\), expected bool"):
        ds.diffusion(m, 4, steps=2, draw_initial="no")


def test_draw_initial_false_needs_the_initial_states(m):
    # With draw_initial=False the chains start from the array's values: diffusion() without out= and
    # DiffusionPlan.run(model) without x started them from a new np.empty array's leftovers (NaN or garbage samples,
    # different from run to run), where SamplingPlan.reset() refuses the same. Seen failing before the fix: both ran.
    with pytest.raises(ds.InvalidArgument, match=r"^out: None, but draw_initial is False: the chains start from "
                                                 r"out's values, which a new array does not hold; pass out=, "):
        ds.diffusion(m, 4, steps=2, draw_initial=False)
    plan = ds.DiffusionPlan(4, 2, steps=2, draw_initial=False)
    model = lambda x, a, s: m.denoiser(x, a, s)  # noqa: E731
    with pytest.raises(ds.InvalidArgument, match=r"^x: None, but the plan's draw_initial is False: the chains start "
                                                 r"from x's values, which a new array does not hold; pass x, "):
        plan.run(model)
    # Given the states, both run from them, alike.
    start = np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(plan.run(model, start.copy()),
                                  ds.diffusion(m, out=start.copy(), steps=2, draw_initial=False))


def test_options_are_validated_before_the_trajectory_is_sized(m):
    # The binding sized the trajectory from options the library had not validated yet: record_every beyond the steps
    # asked for a (0, n, d) trajectory ("trajectory: shape (1, 4, 2), expected (0, 4, 2)"), which the library then
    # refused for record_every. Seen failing before the fix: that shape message, for langevin and diffusion.
    traj = np.zeros((1, 4, 2), np.float32)
    with pytest.raises(ds.InvalidArgument, match=r"^options\.record_every: 5 is more than options\.steps = 3 "):
        ds.langevin(m, x4(), trajectory=traj, steps=3, record_every=5, step_size=0.1)
    with pytest.raises(ds.InvalidArgument, match=r"^options\.record_every: 5 is more than the run's 3 steps "):
        ds.diffusion(m, out=x4(), trajectory=traj, steps=3, record_every=5)
    # A shape that is wrong for valid options is still the trajectory's.
    with pytest.raises(ds.InvalidArgument, match=r"^trajectory: shape \(1, 4, 2\), expected \(3, 4, 2\)$"):
        ds.langevin(m, x4(), trajectory=traj, steps=3, record_every=1, step_size=0.1)


# ---- sizes of the outputs the package allocates ---------------------------------------------------------------------


def test_outputs_sized_by_an_input_are_checked_against_max_host_bytes(m, monkeypatch):
    # The outputs sized by an input array (score's, log_density's and denoiser_jvp's out, resample's ancestors,
    # normalised weights and reports, gather_particles' out) skipped the package's limits.max_host_bytes check, which
    # the outputs sized by n pass (here a limit of 16 bytes, for the check alone). Seen failing before the fix: each
    # call ran.
    monkeypatch.setattr(ds.limits, "max_host_bytes", 16)
    pattern = r"^{}: needs {} bytes of host memory for the {} {} output, the limit is 16 "
    for call in (m.score, m.denoiser):
        with pytest.raises(ds.OutOfMemory, match=pattern.format("x", 32, r"\(4, 2\)", "float32")):
            call(x4())
    with pytest.raises(ds.OutOfMemory, match=pattern.format("x", 32, r"\(4, 2\)", "float32")):
        m.denoiser_jvp(x4(), x4())
    with pytest.raises(ds.OutOfMemory, match=pattern.format("x", 32, r"\(8,\)", "float32")):
        m.log_density(np.zeros((8, 2), np.float32))
    with pytest.raises(ds.OutOfMemory, match=pattern.format("log_weights", 32, r"\(2, 4\)", "int32")):
        ds.resample(np.zeros((2, 4), np.float32))
    with pytest.raises(ds.OutOfMemory, match=pattern.format("states", 32, r"\(1, 4, 2\)", "float32")):
        ds.gather_particles(np.zeros((1, 4, 2), np.float32), np.zeros((1, 4), np.int32))
    m.score(np.zeros((2, 2), np.float32))  # 16 bytes: within the limit


def test_huge_n_is_refused_before_allocating(m):
    # 2^45 x 2 float32 = 2^48 bytes: above limits.max_host_bytes (2^46), refused as the library refuses such a request.
    assert 2**45 * 2 * 4 > ds.limits.max_host_bytes
    pattern = r"^n: needs 281474976710656 bytes of host memory for the \(35184372088832, 2\) float32 output, the " \
              r"limit is 70368744177664 \(2\^46\)"
    with pytest.raises(ds.OutOfMemory, match=pattern):
        m.sample(2**45)
    with pytest.raises(ds.OutOfMemory, match=pattern):
        ds.diffusion(m, 2**45, steps=2)
    post = ds.MixturePosterior(m, [[1.0, 0.0]], 0.5, [0.5])
    with pytest.raises(ds.OutOfMemory, match=r"^n: needs 562949953421312 bytes .*float64 output"):
        post.sample(2**45, dtype="float64")
    # n x d elements beyond a 64-bit byte count: the library's check_count, an InvalidArgument.
    for n in (2**62, 2**63, 2**64):
        with pytest.raises(ds.InvalidArgument, match=rf"^n: {n} x 2 elements overflow a 64-bit byte count"):
            m.sample(n)


def test_a_failed_allocation_is_out_of_memory_naming_n(m, monkeypatch):
    """Below the limit the allocation itself may fail: NumPy's MemoryError becomes the package's OutOfMemory
    (still a MemoryError) naming n. np.empty is replaced by one that fails, so nothing large is asked of the host."""
    def failing(*args, **kwargs):
        raise MemoryError("Unable to allocate")

    monkeypatch.setattr(np, "empty", failing)
    with pytest.raises(ds.OutOfMemory, match=r"^n: the \(1048576, 2\) float32 output \(8388608 bytes\) could not be "
                                             r"allocated") as e:
        m.sample(2**20)
    assert isinstance(e.value, MemoryError)
    with pytest.raises(ds.OutOfMemory, match=r"^n: the \(16, 2\) float32 output"):
        ds.DiffusionPlan(16, 2, steps=2).run(lambda x, a, s: x)


def test_guided_outputs_are_checked_before_allocating(m):
    # 2^24 particles x 2^20 problems x d = 2: 2^45 float32 values, 2^47 bytes.
    y = np.zeros((2**20, 1))
    with pytest.raises(ds.OutOfMemory, match=r"^options.particles: needs 140737488355328 bytes of host memory"):
        ds.guided_sample(m, [[1.0, 0.0]], y, 0.5, outputs=("particles",), particles=2**24, steps=2)


# ---- the bound classes the package re-exports: ObservationOperator.mask, NoiseSchedule ------------------------------
# Their int and float parameters are converted by the binding (core.cpp: int64_arg, real_arg), in the package's
# words. Seen failing against the binding before (nanobind's TypeError naming nothing; bools taken as numbers). None
# is refused the same way (the NONE_CASES: nanobind's TypeError naming nothing before); the parameters take it
# (nb::arg().none()) only to refuse it, and keep their types in the stub (signatures written out with nb::sig).

CORE_CASES = [
    ("mask-d_x-int64", lambda: ds.ObservationOperator.mask(2**63, [0]),
     r"^d_x: 9223372036854775808 is outside \[-9223372036854775808, 9223372036854775807\] \(the argument's integer "
     r"type, int64\)"),
    ("mask-d_x-float", lambda: ds.ObservationOperator.mask(2.0, [0]), r"^d_x: expected an integer .*, got 2.0"),
    ("mask-d_x-bool", lambda: ds.ObservationOperator.mask(True, [0]), r"^d_x: expected an integer .*, got True"),
    ("points-steps-int64", lambda: ds.NoiseSchedule.vp_linear().points(-2**63 - 1),
     r"^steps: -9223372036854775809 is outside"),
    ("points-steps-float", lambda: ds.NoiseSchedule.vp_linear().points(3.0), r"^steps: expected an integer"),
    ("vp_linear-str", lambda: ds.NoiseSchedule.vp_linear("0.1"), r"^beta_min: a str \('0.1'\), expected a real number"),
    ("vp_cosine-bool", lambda: ds.NoiseSchedule.vp_cosine(True), r"^offset: True, expected a real number"),
    ("ve-sigma_max", lambda: ds.NoiseSchedule.variance_exploding(0.01, np.bool_(True)),
     r"^sigma_max: a bool \(np.True_\), expected"),
    ("ou-horizon", lambda: ds.NoiseSchedule.ornstein_uhlenbeck("5"), r"^horizon: a str \('5'\), expected"),
    ("sl-t_max", lambda: ds.NoiseSchedule.stochastic_localization(1e-3, b"1"), r"^t_max: a bytes \(b'1'\), expected"),
    ("at-t", lambda: ds.NoiseSchedule.vp_linear().at("0.5"), r"^t: a str \('0.5'\), expected a real number"),
    ("with_grid-end", lambda: ds.NoiseSchedule.vp_linear().with_grid(ds._core.TimeGrid.uniform, 1.0, [0.0]),
     r"^end: a list \(\[0.0\]\), expected a real number"),
]


SCHEDULE = ds.NoiseSchedule.vp_linear()
NONE_CASES = [
    ("mask-d_x", lambda: ds.ObservationOperator.mask(None, [0]), r"^d_x: expected an integer .*, got None$"),
    ("mask-indices", lambda: ds.ObservationOperator.mask(2, None), r"^indices: None, expected \(d_y,\) integers$"),
    ("dense-A", lambda: ds.ObservationOperator.dense(None), r"^A: None, expected \(d_y, d_x\)$"),
    ("svd-U", lambda: ds.ObservationOperator.svd(None, [1.0], [[1.0]]), r"^U: None, expected \(d_y, r\)$"),
    ("svd-V", lambda: ds.ObservationOperator.svd([[1.0]], [1.0], None), r"^V: None, expected \(d_x, r\)$"),
    ("svd-s", lambda: ds.ObservationOperator.svd([[1.0]], None, [[1.0]]), r"^singular_values: None, expected"),
    ("vp_linear", lambda: ds.NoiseSchedule.vp_linear(None), r"^beta_min: None, expected a real number$"),
    ("vp_linear-max", lambda: ds.NoiseSchedule.vp_linear(0.1, None), r"^beta_max: None, expected a real number$"),
    ("vp_cosine", lambda: ds.NoiseSchedule.vp_cosine(None), r"^offset: None, expected a real number$"),
    ("vp_table", lambda: ds.NoiseSchedule.vp_table(None), r"^alpha_bar: None, expected a sequence of floats$"),
    ("vp_table-str", lambda: ds.NoiseSchedule.vp_table("0.5"), r"^alpha_bar: a str \('0.5'\), expected a sequence"),
    ("ve", lambda: ds.NoiseSchedule.variance_exploding(None), r"^sigma_min: None, expected a real number$"),
    ("ou", lambda: ds.NoiseSchedule.ornstein_uhlenbeck(None), r"^horizon: None, expected a real number$"),
    ("sl", lambda: ds.NoiseSchedule.stochastic_localization(1e-3, None), r"^t_max: None, expected a real number$"),
    ("with_grid-grid", lambda: SCHEDULE.with_grid(None, 1.0, 0.0),
     r"^grid: None, expected a name \(uniform, .*\) or a diffsample\._core\.TimeGrid$"),
    ("with_grid-grid-int", lambda: SCHEDULE.with_grid(1, 1.0, 0.0), r"^grid: a int \(1\), expected a name"),
    ("with_grid-grid-name", lambda: SCHEDULE.with_grid("nonsense", 1.0, 0.0), r"^grid: .*'nonsense'"),
    ("with_grid-start", lambda: SCHEDULE.with_grid("uniform", None, 0.0), r"^start: None, expected a real number$"),
    ("with_times", lambda: SCHEDULE.with_times(None), r"^times: None, expected a sequence of floats$"),
    ("at", lambda: SCHEDULE.at(None), r"^t: None, expected a real number$"),
    ("points", lambda: SCHEDULE.points(None), r"^steps: expected an integer .*, got None$"),
]


@pytest.mark.parametrize("call,pattern", [c[1:] for c in NONE_CASES], ids=[c[0] for c in NONE_CASES])
def test_bound_class_arguments_refuse_none_by_name(call, pattern):
    with pytest.raises(ds.InvalidArgument, match=pattern):
        call()


def test_with_grid_takes_a_grid_name():
    a = SCHEDULE.with_grid("quadratic", 1.0, 0.0)
    b = SCHEDULE.with_grid(ds._core.TimeGrid.quadratic, 1.0, 0.0)
    assert a.grid == b.grid == ds._core.TimeGrid.quadratic
    np.testing.assert_array_equal(a.points(4), b.points(4))


@pytest.mark.parametrize("call,pattern", [c[1:] for c in CORE_CASES], ids=[c[0] for c in CORE_CASES])
def test_bound_class_arguments_are_refused_by_name(call, pattern):
    with pytest.raises(ds.InvalidArgument, match=pattern):
        call()


def test_bound_class_arguments_take_numbers():
    assert ds.ObservationOperator.mask(np.int64(3), [0]).d_x == 3
    assert ds.NoiseSchedule.vp_linear().points(np.int32(3)).shape == (4, 5)
    a = ds.NoiseSchedule.vp_linear(np.float32(0.5), 10).at(np.float64(0.25))
    b = ds.NoiseSchedule.vp_linear(0.5, 10.0).at(0.25)
    assert a == b
    assert ds.NoiseSchedule.vp_linear().with_grid(ds._core.TimeGrid.uniform, 1, 0).t_end == 0.0


def test_counts_from_options_do_not_overflow_in_the_binding(mixture2):
    # The binding sizes a sequential-measurements trajectory as steps x measurements: 2^40 x 2^40 overflowed int64
    # (undefined; it wrapped to 0 and the message asked for a (0, 4, 2) trajectory). Seen failing before the fix
    # ("trajectory: shape (1, 4, 2), expected (0, 4, 2)"). The binding now has the library validate the options
    # before it sizes the trajectory, so the steps are refused against their limit first.
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ds.InvalidArgument, match=r"^options\.steps = 1099511627776, the limit is 16777216 "):
        ds.diffusion(mixture2, out=x, sampler="sequential_measurements", steps=2**40, measurements=2**40,
                     record_every=1, trajectory=np.zeros((1, 4, 2), np.float32))
    # The guided ess_trace's steps + 1: the library's limit check runs first.
    pr, o = ds._guided_setup([[1.0, 0.0]], [0.5], 0.3, "smc", None, None, {"steps": 2**63 - 1, "particles": 4})
    with pytest.raises(ds.InvalidArgument, match=r"^options\.steps = 9223372036854775807, the limit is"):
        ds._core.guided_sample(mixture2._m, pr, o, ess_trace=np.zeros((1, 1), np.float32))


def test_mask_indices_beyond_int64_are_refused_by_name():
    # A uint64 index from 2^63 on was converted to int64 (undefined: it read as -2^63, and the library's message
    # named that value). Seen failing before the fix ("index 0 is -9223372036854775808").
    with pytest.raises(ds.InvalidArgument, match=r"^indices: index 1 is 9223372036854775813, outside \[0, d_x\)$"):
        ds.ObservationOperator.mask(3, np.array([1, 2**63 + 5], dtype=np.uint64))
    np.testing.assert_array_equal(ds.ObservationOperator.mask(3, np.array([2, 0], dtype=np.uint64)).matrix(),
                                  [[0, 0, 1], [1, 0, 0]])


def test_mask_indices_are_read_as_integers():
    # Indices were read through the float64 copy of problem data: 2^63 - 1 rounded to 2^63 and was refused as "at
    # least 2^63"; an empty list, which NumPy reads as float64, was refused for a dtype the caller never gave; bool
    # indices were refused as no real numbers. Seen failing before the fix: those three messages.
    with pytest.raises(ds.InvalidArgument, match=r"^observation\.indices: index 0 is 9223372036854775807, outside "
                                                 r"\[0, 3\)$"):
        ds.ObservationOperator.mask(3, np.array([2**63 - 1], np.int64))
    for empty in ([], (), np.zeros(0, np.int32)):
        with pytest.raises(ds.InvalidArgument, match=r"^observation\.indices: a mask needs at least one observed "
                                                     r"coordinate$"):
            ds.ObservationOperator.mask(3, empty)
    for bad, dtype in (([True], "bool8?"), (np.array([True, False]), "bool8?"), ([0.0], "float64"),
                       (np.float16([1]), "float16")):
        with pytest.raises(ds.InvalidArgument, match=rf"^indices: dtype {dtype}, expected an integer dtype$"):
            ds.ObservationOperator.mask(3, bad)
    for good in ([2, 0], np.array([2, 0], np.int8), np.array([2, 0], np.uint16), np.array([2, 0], np.int64)):
        np.testing.assert_array_equal(ds.ObservationOperator.mask(3, good).matrix(), [[0, 0, 1], [1, 0, 0]])


def test_n_given_with_out_must_agree(mixture2):
    # n and out= given together: n was ignored without a word (sample(10, out=a 5-row array) filled 5 rows and
    # returned them). A count that disagrees with out's rows is refused naming n; the same count is accepted.
    # Seen failing before the fix (no error in any case).
    posterior = ds.MixturePosterior(mixture2, [[1.0, 0.0]], 0.5, [0.1])
    out = np.zeros((5, 2), np.float32)
    calls = [
        lambda n: mixture2.sample(n, out=out),
        lambda n: ds.diffusion(mixture2, n, out=out, steps=2),
        lambda n: posterior.sample(n, out=out),
    ]
    for call in calls:
        with pytest.raises(ds.InvalidArgument, match=r"^n: 10, but out has 5 rows \(out= sets the number of "
                                                     r"samples; give n or out, or the same count\)$"):
            call(10)
        assert not out.any()
        assert call(5) is out
        assert call(None) is out
        out[:] = 0
    # dtype given with out: it was ignored too (dtype="float64" filled a float32 out).
    with pytest.raises(ds.InvalidArgument, match=r"^dtype: 'float64', but out is float32 \(out= sets the dtype; "):
        posterior.sample(out=out, dtype="float64")
    assert not out.any()
    assert posterior.sample(out=out, dtype="float32") is out
    assert posterior.sample(3, dtype="float64").dtype == np.float64 and posterior.sample(3).dtype == np.float32


@pytest.mark.skipif(not ds._core.HAS_SAMPLING_PLANS, reason="the library has no ask/tell plans")
def test_langevin_target_is_set_by_target_only(mixture2):
    # langevin(..., target_a=0.5, target_s=0.5) set the options' fields and then overwrote them with target's
    # default (1, 0): the chains ran on the mixture itself without a word. The keywords are refused, naming target=.
    # Seen failing before the fix (no error; the run equalled the one without them).
    x = np.ones((4, 2), np.float32)
    for key in ("target_a", "target_s"):
        with pytest.raises(TypeError, match=rf"^{key}: set the target channel with target=\(a, s\), not {key}=$"):
            ds.langevin(mixture2, x.copy(), steps=3, step_size=0.1, **{key: 0.5})
        with pytest.raises(TypeError, match=rf"^{key}: set the target channel with target="):
            ds.SamplingPlan.langevin(4, 2, steps=3, step_size=0.1, **{key: 0.5})
    np.testing.assert_array_equal(x, 1.0)


# The low-level functions of diffsample._core, which the package's checks do not guard when called directly: every
# real parameter of the module goes through the binding's one conversion (finite_real_arg).
CORE_REALS = [
    ("evaluate-a", lambda m, v: m._m.evaluate(ds._core.Quantity.score, x4(), v, 0.5, x4()), "a"),
    ("evaluate-s", lambda m, v: m._m.evaluate(ds._core.Quantity.log_density, x4(), 1.0, v, np.zeros(4, np.float32)),
     "s"),
    ("denoiser_jvp-s", lambda m, v: m._m.denoiser_jvp(x4(), x4(), 1.0, v, x4()), "s"),
    ("evaluate_fp64-a", lambda m, v: m._m.evaluate_fp64(ds._core.Quantity.score, np.zeros((4, 2)), v, 0.5,
                                                        np.zeros((4, 2))), "a"),
    ("denoiser_jvp_fp64-a", lambda m, v: m._m.denoiser_jvp_fp64(np.zeros((4, 2)), np.zeros((4, 2)), v, 0.5,
                                                                np.zeros((4, 2))), "a"),
    ("sample-s", lambda m, v: m._m.sample(x4(), 1.0, v, 0), "s"),
    ("empirical-variance", lambda m, v: ds._core.GaussianMixtureCore.empirical(np.zeros((2, 2)), v), "variance"),
    ("grid-spacing", lambda m, v: ds._core.GaussianMixtureCore.grid(2, 2, v, 1.0), "spacing"),
    ("grid-variance", lambda m, v: ds._core.GaussianMixtureCore.grid(2, 2, 1.0, v), "variance"),
]
CORE_BAD_REALS = [
    ("True", True, r"True, expected a real number"),
    ("numpy-complex", np.complex128(0.5 + 1j), r"a complex128 \(.*\), expected a real number"),
    ("nan", float("nan"), r"nan, expected a finite number"),
    ("inf", np.float64("inf"), r"inf, expected a finite number"),
]


@pytest.mark.parametrize("value,message", [c[1:] for c in CORE_BAD_REALS], ids=[c[0] for c in CORE_BAD_REALS])
@pytest.mark.parametrize("call,name", [c[1:] for c in CORE_REALS], ids=[c[0] for c in CORE_REALS])
def test_core_real_parameters_refuse_bools_complex_values_and_nan_by_name(m, call, name, value, message):
    """The _core functions' real parameters were nanobind's float conversion: True ran as 1.0, a NumPy complex value
    as its real part (a ComplexWarning only), and a NaN went on to the library, which refused it naming its own field
    (ch.a: must be >= 0 and finite) or not at all. Refused here naming the argument. Seen failing before the fix:
    each True and complex value ran, each NaN was 'ch.a: ...' or 'variance: must be in ...'."""
    with pytest.raises(ds.InvalidArgument, match=rf"^{name}: {message}$"):
        call(m, value)


@pytest.mark.parametrize("call,name", [c[1:] for c in CORE_REALS], ids=[c[0] for c in CORE_REALS])
def test_core_real_parameters_take_real_numbers(m, call, name):
    """Python and NumPy reals and integers still pass (a 0-d float array too)."""
    for value in (0.5, 1, np.float32(0.25), np.int64(1), np.array(0.5)):
        call(m, value)


# Every integer parameter of diffsample._core's own functions and methods, given value v, the others valid:
# (id, call(m, v), name, a valid value). They were nanobind's int conversion, which took a bool as 0 or 1
# (stream=True ran on handle 1, cudaStreamLegacy; seed=True as seed 1; GaussianMixtureCore(True, ...) made a 1-d
# mixture) and refused numpy.True_ and a float with nanobind's TypeError naming neither argument nor value. They go
# through the binding's one conversion of integer parameters (int_arg), as the package's _integer() checks them:
# ints and NumPy integers only, by name.
def _plans_or_skip():
    if not ds._core.HAS_SAMPLING_PLANS:
        pytest.skip("the library has no ask/tell plans")


def _diffusion_plan(n=4, d=2, output=None, executor=None, stream=0):
    output = ds._core.ModelOutput.denoiser if output is None else output
    executor = ds._core.Executor.cpu if executor is None else executor
    return ds._core.DiffusionPlan(n, d, ds.DiffusionOptions(steps=3), output, executor, stream)


def _sampling_plan(kind="diffusion", n=4, d=2, output=None, executor=None, stream=0):
    _plans_or_skip()
    if kind == "guided":
        args = (d, _guided_problems(), ds.GuidedOptions(particles=4, steps=3))
    elif kind == "langevin":
        args = (n, d, ds.LangevinOptions(steps=3, step_size=0.1))
    else:
        args = (n, d, ds.DiffusionOptions(steps=3))
    make = getattr(ds._core.SamplingPlan, kind)
    kwargs = {} if output is None else {"output": output}
    if executor is not None:
        kwargs["executor"] = executor
    return make(*args, stream=stream, **kwargs)


def _guided_problems():
    pr = ds.GuidedProblems(problems=1, d_y=1)
    pr.operators = [ds.ObservationOperator.dense([[1.0, 1.0]])]
    pr.y, pr.sigma_y = [0.5], [0.5]
    return pr


def _started(plan):
    plan.reset()
    return plan


def _guided_plan():
    return _sampling_plan("guided")


def _posterior(m):
    return ds.MixturePosterior(m, [[1.0, 1.0]], 0.5, [0.5])._p


_Q = ds._core.Quantity
CORE_INTS = [
    ("GaussianMixtureCore-dim", lambda m, v: ds._core.GaussianMixtureCore(v, [1.0], [[0.0, 0.0]], [1.0]), "dim", 2),
    ("evaluate-stream", lambda m, v: m._m.evaluate(_Q.score, x4(), 1.0, 0.5, x4(), stream=v), "stream", 0),
    ("denoiser_jvp-stream", lambda m, v: m._m.denoiser_jvp(x4(), x4(), 1.0, 0.5, x4(), stream=v), "stream", 0),
    ("sample-seed", lambda m, v: m._m.sample(x4(), 1.0, 0.0, v), "seed", 1),
    ("sample-first_index", lambda m, v: m._m.sample(x4(), 1.0, 0.0, 1, first_index=v), "first_index", 1),
    ("sample-stream", lambda m, v: m._m.sample(x4(), 1.0, 0.0, 1, stream=v), "stream", 0),
    ("grid-dim", lambda m, v: ds._core.GaussianMixtureCore.grid(v, 2, 1.0, 1.0), "dim", 2),
    ("grid-grid", lambda m, v: ds._core.GaussianMixtureCore.grid(2, v, 1.0, 1.0), "grid", 2),
    ("langevin-stream", lambda m, v: ds._core.langevin(m._m, x4(), ds.LangevinOptions(steps=1, step_size=0.1),
                                                       stream=v), "stream", 0),
    ("diffusion-stream", lambda m, v: ds._core.diffusion(m._m, x4(), ds.DiffusionOptions(steps=2), stream=v),
     "stream", 0),
    ("DiffusionPlan-n", lambda m, v: _diffusion_plan(n=v), "n", 2),
    ("DiffusionPlan-d", lambda m, v: _diffusion_plan(d=v), "d", 2),
    ("DiffusionPlan-stream", lambda m, v: _diffusion_plan(stream=v), "stream", 0),
    ("DiffusionPlan.step_channel-k", lambda m, v: _diffusion_plan().step_channel(v), "k", 1),
    ("DiffusionPlan.step_time-k", lambda m, v: _diffusion_plan().step_time(v), "k", 1),
    ("DiffusionPlan.reset-stream", lambda m, v: _diffusion_plan().reset(x4(), stream=v), "stream", 0),
    ("DiffusionPlan.step-stream", lambda m, v: _diffusion_plan().step(x4(), x4(), stream=v), "stream", 0),
    ("DiffusionPlan.finish-stream", lambda m, v: _diffusion_plan().finish(x4(), x4(), stream=v), "stream", 0),
    ("SamplingPlan.diffusion-n", lambda m, v: _sampling_plan("diffusion", n=v), "n", 2),
    ("SamplingPlan.diffusion-d", lambda m, v: _sampling_plan("diffusion", d=v), "d", 2),
    ("SamplingPlan.diffusion-stream", lambda m, v: _sampling_plan("diffusion", stream=v), "stream", 0),
    ("SamplingPlan.langevin-n", lambda m, v: _sampling_plan("langevin", n=v), "n", 2),
    ("SamplingPlan.langevin-d", lambda m, v: _sampling_plan("langevin", d=v), "d", 2),
    ("SamplingPlan.langevin-stream", lambda m, v: _sampling_plan("langevin", stream=v), "stream", 0),
    ("SamplingPlan.guided-d", lambda m, v: _sampling_plan("guided", d=v), "d", 2),
    ("SamplingPlan.guided-stream", lambda m, v: _sampling_plan("guided", stream=v), "stream", 0),
    ("SamplingPlan.write_outputs-problems", lambda m, v: _guided_plan().write_outputs(v, 4, 3), "problems", 1),
    ("SamplingPlan.write_outputs-particles", lambda m, v: _guided_plan().write_outputs(1, v, 3), "particles", 4),
    ("SamplingPlan.write_outputs-steps", lambda m, v: _guided_plan().write_outputs(1, 4, v), "steps", 3),
    ("SamplingPlan.write_outputs-stream", lambda m, v: _guided_plan().write_outputs(1, 4, 3, stream=v), "stream", 0),
    ("SamplingPlan.ask-k", lambda m, v: _sampling_plan().ask(v), "k", 1),
    ("SamplingPlan.tell-stream", lambda m, v: _started(_sampling_plan()).tell(stream=v), "stream", 0),
    ("SamplingPlan.reset-stream", lambda m, v: _sampling_plan().reset(stream=v), "stream", 0),
    ("resample-stream", lambda m, v: ds._core.resample(np.zeros((1, 4), np.float32), ds.ResamplingOptions(),
                                                       stream=v), "stream", 0),
    ("gather_particles-stream", lambda m, v: ds._core.gather_particles(
        np.zeros((1, 4, 2), np.float32), np.zeros((1, 4), np.int32), np.zeros((1, 4, 2), np.float32), stream=v),
     "stream", 0),
    ("_check_limit-value", lambda m, v: ds._core._check_limit("n", v, 0, 5), "value", 1),
    ("_check_limit-lo", lambda m, v: ds._core._check_limit("n", 1, v, 5), "lo", 1),
    ("_check_limit-limit", lambda m, v: ds._core._check_limit("n", 1, 0, v), "limit", 1),
    ("MixturePosterior.sample-seed", lambda m, v: _posterior(m).sample(x4(), v), "seed", 1),
    ("MixturePosterior.sample-first_index", lambda m, v: _posterior(m).sample(x4(), 1, first_index=v),
     "first_index", 1),
    ("MixturePosterior.sample-stream", lambda m, v: _posterior(m).sample(x4(), 1, stream=v), "stream", 0),
    ("guided_sample-stream", lambda m, v: ds._core.guided_sample(
        m._m, _guided_problems(), ds.GuidedOptions(particles=4, steps=3), stream=v), "stream", 0),
    ("sliced_wasserstein-directions", lambda m, v: ds._core.sliced_wasserstein(x4(), x4(), v), "directions", 4),
    ("sliced_wasserstein-seed", lambda m, v: ds._core.sliced_wasserstein(x4(), x4(), 4, v), "seed", 1),
    ("sliced_wasserstein-p", lambda m, v: ds._core.sliced_wasserstein(x4(), x4(), 4, 0, v), "p", 1),
    ("sliced_wasserstein-stream", lambda m, v: ds._core.sliced_wasserstein(x4(), x4(), stream=v), "stream", 0),
]
# Not integers: bools of every kind (a 0-d bool array has __index__ in NumPy < 2, a bool tensor always), and floats
# even with an integral value (the package's rule, _integer(): DiffusionPlan(4.0, 2) is refused as 4.5 is).
CORE_BAD_INTS = [
    ("True", True, "True"), ("False", False, "False"), ("numpy-True", np.True_, r"np\.True_|True"),
    ("numpy-False", np.False_, r"np\.False_|False"), ("bool-array", np.array(True), r"array\(True\)"),
    ("float-1.0", 1.0, r"1\.0"), ("numpy-float-1.0", np.float64(1.0), r"(np\.float64\()?1\.0\)?"),
]


@pytest.mark.parametrize("value,shown", [c[1:] for c in CORE_BAD_INTS], ids=[c[0] for c in CORE_BAD_INTS])
@pytest.mark.parametrize("call,name,good", [c[1:] for c in CORE_INTS], ids=[c[0] for c in CORE_INTS])
def test_core_integer_parameters_refuse_bools_and_floats_by_name(m, call, name, good, value, shown):
    """Seen failing before the fix: each True and False ran as 1 and 0 (or was refused as a value by the library
    naming the field, not as a bool), each NumPy bool and float was nanobind's TypeError naming nothing."""
    with pytest.raises(ds.InvalidArgument, match=rf"^{name}: expected an integer in \[-?\d+, \d+\], got ({shown})$"):
        call(m, value)


@pytest.mark.parametrize("call,name,good", [c[1:] for c in CORE_INTS], ids=[c[0] for c in CORE_INTS])
def test_core_integer_parameters_take_ints_and_numpy_integers(m, call, name, good):
    """Python ints, NumPy integer scalars of any width and 0-d integer arrays still pass (a guided plan's
    write_outputs then refuses only the trajectory that is not done)."""
    for value in (good, np.int64(good), np.int32(good), np.uint8(good), np.array(good)):
        try:
            call(m, value)
        except ds.InvalidArgument as e:
            assert "the trajectory is not done" in str(e), (value, str(e))


@pytest.mark.parametrize("call,name,good", [c[1:] for c in CORE_INTS], ids=[c[0] for c in CORE_INTS])
def test_core_integer_parameters_refuse_values_beyond_their_type_by_name(m, call, name, good):
    """An integer beyond the parameter's C++ type was nanobind's TypeError naming nothing."""
    with pytest.raises(ds.InvalidArgument, match=rf"^{name}: 1180591620717411303424 is outside \[-?\d+, \d+\] \("):
        call(m, 2**70)


# The enum parameters of _core's own functions: the enum or its name, nothing else. nanobind's enum conversion took
# an int or a bool as the value it equals (what=1 evaluated the score, executor=True asked for CUDA, output=0 made
# a score plan) and refused another int (what=7) or a name with its TypeError naming nothing.
CORE_ENUMS = [
    ("evaluate-what", lambda m, v: m._m.evaluate(v, x4(), 1.0, 0.5, x4()), "what", _Q.score, "score"),
    ("evaluate-path", lambda m, v: m._m.evaluate(_Q.score, x4(), 1.0, 0.5, x4(), path=v), "path",
     ds._core.MixturePath.direct, "direct"),
    ("evaluate_fp64-what", lambda m, v: m._m.evaluate_fp64(v, np.zeros((4, 2)), 1.0, 0.5, np.zeros((4, 2))), "what",
     _Q.denoiser, "denoiser"),
    ("DiffusionPlan-output", lambda m, v: _diffusion_plan(output=v), "output", ds._core.ModelOutput.eps, "eps"),
    ("DiffusionPlan-executor", lambda m, v: _diffusion_plan(executor=v), "executor", ds._core.Executor.cpu, "cpu"),
    ("SamplingPlan.diffusion-output", lambda m, v: _sampling_plan("diffusion", output=v), "output",
     ds._core.ModelOutput.eps, "eps"),
    ("SamplingPlan.diffusion-executor", lambda m, v: _sampling_plan("diffusion", executor=v), "executor",
     ds._core.Executor.cpu, "cpu"),
    ("SamplingPlan.langevin-output", lambda m, v: _sampling_plan("langevin", output=v), "output",
     ds._core.ModelOutput.score, "score"),
    ("SamplingPlan.langevin-executor", lambda m, v: _sampling_plan("langevin", executor=v), "executor",
     ds._core.Executor.cpu, "cpu"),
    ("SamplingPlan.guided-output", lambda m, v: _sampling_plan("guided", output=v), "output",
     ds._core.ModelOutput.denoiser, "denoiser"),
    ("SamplingPlan.guided-executor", lambda m, v: _sampling_plan("guided", executor=v), "executor",
     ds._core.Executor.cpu, "cpu"),
]


@pytest.mark.parametrize("value", [1, True, np.int64(1), 7, 1.0], ids=["1", "True", "numpy-1", "7", "1.0"])
@pytest.mark.parametrize("call,name,member,text", [c[1:] for c in CORE_ENUMS], ids=[c[0] for c in CORE_ENUMS])
def test_core_enum_parameters_refuse_ints_and_bools_by_name(m, call, name, member, text, value):
    """Seen failing before the fix: 1, True and numpy 1 ran as the enum's value 1, 7 and 1.0 were nanobind's
    TypeError naming nothing."""
    with pytest.raises(ds.InvalidArgument, match=rf"^{name}: a (bool|\w+ \(.*\)), expected a name \(.*\) or a "
                                                 rf"diffsample\._core\.\w+$"):
        call(m, value)


@pytest.mark.parametrize("call,name,member,text", [c[1:] for c in CORE_ENUMS], ids=[c[0] for c in CORE_ENUMS])
def test_core_enum_parameters_take_the_enum_and_its_name(m, call, name, member, text):
    call(m, member)
    call(m, text)
    with pytest.raises(ds.InvalidArgument, match=rf"^{name}: .*'nonsense'"):
        call(m, "nonsense")


def test_mixture_sample_labels_none_is_refused(m):
    """labels takes True, False or an int32 array; None ran as False without a word (MixturePosterior.sample and
    resample's reports refused it). Seen failing before the fix: the call returned the samples alone."""
    with pytest.raises(ds.InvalidArgument, match=r"^labels: None, expected True, False or an \(n,\) int32 array$"):
        m.sample(4, labels=None)
    assert m.sample(4, labels=False).shape == (4, 2)
    out, lab = m.sample(4, labels=True)
    assert lab.dtype == np.int32 and lab.shape == (4,)


@pytest.mark.parametrize("sampler", ["dps", "pigdm", "diffpir", "skrock", "tmpd", "ddrm", "dcps"])
def test_guided_smc_outputs_are_refused_for_the_other_samplers(m, sampler):
    """log_weights, log_normaliser, ess_trace and resample_count are written by smc only: for the other samplers
    guided_sample allocated them and returned them unwritten (NumPy's uninitialised memory, read as results). Refused
    naming outputs (the package) and the library's output (diffsample._core.guided_sample). Seen failing before the
    fix: every call returned, its 'log_normaliser' holding whatever the allocation held."""
    A, y = [[1.0, 1.0]], [0.5]
    settings = dict(sampler=sampler, particles=4, steps=4)
    for name in ("log_weights", "log_normaliser", "ess_trace", "resample_count"):
        with pytest.raises(ds.InvalidArgument, match=rf"^outputs: '{name}' is written by smc only; sampler "
                                                     rf"'{sampler}' writes 'particles' and 'samples'"):
            ds.guided_sample(m, A, y, 0.5, outputs=("samples", name), **settings)
        pr = ds.GuidedProblems(problems=1, d_y=1)
        pr.operators = [ds.ObservationOperator.dense(A)]
        pr.y, pr.sigma_y = y, [0.5]
        o = ds.GuidedOptions(**settings)
        arrays = {"log_weights": np.full((1, 4), -7, np.float32), "log_normaliser": np.full(1, -7.0),
                  "ess_trace": np.full((1, 5), -7, np.float32), "resample_count": np.full(1, -7, np.int32)}
        with pytest.raises(ds.InvalidArgument, match=rf"^outputs\.{name}: written by smc only; {sampler} writes "):
            ds._core.guided_sample(m._m, pr, o, **{name: arrays[name]})
        assert (arrays[name] == -7).all()
    r = ds.guided_sample(m, A, y, 0.5, outputs=("particles", "samples"), **settings)
    np.testing.assert_array_equal(r["particles"], r["samples"])
    smc = ds.guided_sample(m, A, y, 0.5, sampler="smc", particles=4, steps=4,
                           outputs=("log_weights", "log_normaliser", "ess_trace", "resample_count"))
    assert np.isfinite(smc["log_normaliser"]).all() and (smc["resample_count"] >= 0).all()


def test_evaluate_fp64_takes_the_quantity_enum(m):
    """evaluate_fp64's what took names only: the enum, which every other enum argument of the package takes, was
    refused as 'what: Quantity.score is not ...'. Seen failing before the fix. Anything else is refused by name."""
    x = np.array([[0.5, -0.25], [1.0, 2.0]])
    for name in ("score", "denoiser", "log_density"):
        np.testing.assert_array_equal(m.evaluate_fp64(getattr(ds._core.Quantity, name), x), m.evaluate_fp64(name, x))
    for bad in (1, True, None):
        with pytest.raises(ds.InvalidArgument, match=r"^what: .*expected a name \(log_density, score, denoiser\)"):
            m.evaluate_fp64(bad, x)
    with pytest.raises(ds.InvalidArgument, match=r"^what: 'scores' is not 'score', 'denoiser' or 'log_density'$"):
        m.evaluate_fp64("scores", x)


def test_an_equal_dtype_that_is_another_object_is_taken(m):
    """An array through pickle (or a process pool) has a dtype equal to float32 but not NumPy's own object: the
    package compared dtypes by identity and refused it as 'x: dtype float32, expected float32', in every call that
    reads or writes arrays in place (int32 labels and int64 acceptance counts alike). Seen failing before the fix."""
    import pickle

    x = pickle.loads(pickle.dumps(np.zeros((4, 2), np.float32)))
    labels = pickle.loads(pickle.dumps(np.zeros(4, np.int32)))
    if x.dtype is np.dtype(np.float32):
        pytest.skip("this NumPy gives the unpickled array its own dtype object")
    np.testing.assert_array_equal(m.score(x), m.score(np.zeros((4, 2), np.float32)))
    m.sample(out=x, labels=labels, seed=1)
    plan = ds.DiffusionPlan(4, 2, sampler="ddpm", steps=2)
    plan.reset(x)


def test_diffusion_plan_calls_name_x_of_another_dtype():
    """DiffusionPlan.reset / step / finish skipped their check of x for any writable C-contiguous NumPy array, so x of
    another dtype (big-endian float32, structured, string) reached the binding's argument matching: nanobind's
    TypeError naming no argument. Refused naming x now. Seen failing before the fix."""
    plan = ds.DiffusionPlan(4, 2, sampler="ddpm", steps=2)
    model = np.zeros((4, 2), np.float32)
    for dtype in (">f4", [("a", "<f4")], "U1", "f8"):
        x = np.zeros((4, 2) if dtype != [("a", "<f4")] else (4, 2), dtype)
        for call in (lambda: plan.reset(x), lambda: plan.step(x, model), lambda: plan.finish(x, model)):
            with pytest.raises(ds.InvalidArgument, match=r"^x: dtype"):
                call()


def test_a_settings_key_that_is_no_string_is_a_type_error():
    """resampling={1: 0.5} was AttributeError ('int' object has no attribute 'startswith') out of the settings
    parser; an unknown setting is a TypeError naming it. Seen failing before the fix."""
    mix = ds.GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    with pytest.raises(TypeError, match=r"has no setting 1"):
        ds.guided_sample(mix, [[1.0, 0.0]], [0.5], 0.5, particles=4, steps=2, resampling={1: 0.5})
