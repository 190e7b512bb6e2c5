"""Wrong calls of the package's public callables never reach nanobind's matching: a missing, extra or misspelt
argument is the TypeError Python words for a def (naming the call), a value of the wrong type an InvalidArgument
naming the argument (or the TypeError of a keyword setting), and the options classes take their settings as
keywords. Before, the callables the package re-exports from the binding (NoiseSchedule, ObservationOperator, the
options classes, cpu_threads() ...) answered every mismatch with nanobind's "f(): incompatible function arguments.
The following argument types are supported: ..." (or "no constructor defined!"), and a stream object with a
negative handle reached the binding's evaluate() with the same error. MixturePosterior.sample's dtype compared an
array with the dtype names (NumPy's "truth value of an array ... is ambiguous" ValueError)."""
import re

import numpy as np
import pytest

import diffsample as ds

NANOBIND = re.compile(r"incompatible function arguments|no constructor defined|Invoked with types")
S = ds.NoiseSchedule
A = ds.ObservationOperator


class Handle:
    def __init__(self, value):
        self.cuda_stream = value


def posterior(m):
    return ds.MixturePosterior(m, [[1.0, 0.0]], 0.5, [0.5])


@pytest.fixture(scope="module")
def m():
    return ds.GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0])


# (id, call(m), exception, regex of its message)
CASES = [
    ("LangevinOptions-positional", lambda m: ds.LangevinOptions(3), TypeError,
     r"^LangevinOptions\(\) takes keyword settings only \(LangevinOptions\(field=value, \.\.\.\)\), but 1 positional "
     r"argument was given$"),
    ("DiffusionOptions-unknown", lambda m: ds.DiffusionOptions(stpes=3), TypeError,
     r"^DiffusionOptions has no setting 'stpes'$"),
    ("ResamplingOptions-private", lambda m: ds.ResamplingOptions(__class__=3), TypeError,
     r"^ResamplingOptions has no setting '__class__'$"),
    ("GuidedOptions-method", lambda m: ds.GuidedOptions(steps=2, sampler=3), TypeError,
     r"^sampler: a int \(3\), expected a name"),
    ("GuidedOptions-value", lambda m: ds.GuidedOptions(eta=float("nan")), ds.InvalidArgument,
     r"^eta: nan, expected a finite number"),
    ("GuidedProblems-positional", lambda m: ds.GuidedProblems(1, 2), TypeError,
     r"^GuidedProblems\(\) takes keyword settings only .* but 2 positional arguments were given$"),
    ("GuidedProblems-y", lambda m: ds.GuidedProblems(y="1 0"), ds.InvalidArgument, r"^y: a str"),
    ("NoiseSchedule-positional", lambda m: S("vp_linear"), TypeError, r"^NoiseSchedule\(\) takes keyword settings"),
    ("NoiseSchedule-read-only", lambda m: S(at=1.0), TypeError, r"^NoiseSchedule has no setting 'at'$"),
    ("ObservationOperator()", lambda m: A(), TypeError,
     r"^ObservationOperator\(\) makes no operator: use ObservationOperator\.dense\(A\), ObservationOperator\.mask"),
    ("dense-missing", lambda m: A.dense(), TypeError,
     r"^ObservationOperator\.dense\(\) missing 1 required argument: 'A'$"),
    ("dense-extra", lambda m: A.dense(np.eye(2), 3), TypeError,
     r"^ObservationOperator\.dense\(\) takes 1 positional argument but 2 were given$"),
    ("dense-keyword", lambda m: A.dense(a=np.eye(2)), TypeError,
     r"^ObservationOperator\.dense\(\) got an unexpected keyword argument 'a'$"),
    ("dense-twice", lambda m: A.dense(np.eye(2), A=np.eye(2)), TypeError,
     r"^ObservationOperator\.dense\(\) got multiple values for argument 'A'$"),
    ("mask-missing", lambda m: A.mask(2), TypeError,
     r"^ObservationOperator\.mask\(\) missing 1 required argument: 'indices'$"),
    ("svd-missing", lambda m: A.svd(), TypeError,
     r"^ObservationOperator\.svd\(\) missing 3 required arguments: 'U', 'singular_values', 'V'$"),
    ("matrix-extra", lambda m: A.dense(np.eye(2)).matrix(1), TypeError,
     r"^ObservationOperator\.matrix\(\) takes 0 positional arguments but 1 was given$"),
    ("vp_linear-extra", lambda m: S.vp_linear(0.1, 20.0, 3), TypeError,
     r"^NoiseSchedule\.vp_linear\(\) takes 2 positional arguments but 3 were given$"),
    ("vp_linear-keyword", lambda m: S.vp_linear(beta=1), TypeError,
     r"^NoiseSchedule\.vp_linear\(\) got an unexpected keyword argument 'beta'$"),
    ("vp_linear-None", lambda m: S.vp_linear(None), ds.InvalidArgument, r"^beta_min: None, expected a real number"),
    ("vp_cosine-extra", lambda m: S.vp_cosine(0.1, 2), TypeError, r"^NoiseSchedule\.vp_cosine\(\) takes 1 positional"),
    ("vp_table-missing", lambda m: S.vp_table(), TypeError,
     r"^NoiseSchedule\.vp_table\(\) missing 1 required argument: 'alpha_bar'$"),
    ("variance_exploding-keyword", lambda m: S.variance_exploding(sigma=1), TypeError,
     r"^NoiseSchedule\.variance_exploding\(\) got an unexpected keyword argument 'sigma'$"),
    ("ornstein_uhlenbeck-extra", lambda m: S.ornstein_uhlenbeck(1, 2), TypeError,
     r"^NoiseSchedule\.ornstein_uhlenbeck\(\) takes 1 positional argument but 2 were given$"),
    ("linear_interpolant-extra", lambda m: S.linear_interpolant(1), TypeError,
     r"^NoiseSchedule\.linear_interpolant\(\) takes 0 positional arguments but 1 was given$"),
    ("stochastic_localization-keyword", lambda m: S.stochastic_localization(t=1), TypeError,
     r"^NoiseSchedule\.stochastic_localization\(\) got an unexpected keyword argument 't'$"),
    ("with_grid-missing", lambda m: S.vp_linear().with_grid("uniform"), TypeError,
     r"^NoiseSchedule\.with_grid\(\) missing 2 required arguments: 'start', 'end'$"),
    ("with_times-missing", lambda m: S.vp_linear().with_times(), TypeError,
     r"^NoiseSchedule\.with_times\(\) missing 1 required argument: 'times'$"),
    ("at-missing", lambda m: S.vp_linear().at(), TypeError, r"^NoiseSchedule\.at\(\) missing 1 required argument: 't'$"),
    ("at-None", lambda m: S.vp_linear().at(None), ds.InvalidArgument, r"^t: None, expected a real number"),
    ("points-extra", lambda m: S.vp_linear().points(2, 3), TypeError,
     r"^NoiseSchedule\.points\(\) takes 1 positional argument but 2 were given$"),
    ("cpu_threads-extra", lambda m: ds.cpu_threads(4), TypeError,
     r"^cpu_threads\(\) takes 0 positional arguments but 1 was given$"),
    ("cpu_blas_name-keyword", lambda m: ds.cpu_blas_name(name="x"), TypeError,
     r"^cpu_blas_name\(\) got an unexpected keyword argument 'name'$"),
    ("cuda_available-extra", lambda m: ds.cuda_available(0), TypeError, r"^cuda_available\(\) takes 0 positional"),
    ("cuda_unavailable_reason-extra", lambda m: ds.cuda_unavailable_reason(0), TypeError,
     r"^cuda_unavailable_reason\(\) takes 0 positional"),
    ("score-stream-negative-handle", lambda m: m.score(np.zeros((4, 2), np.float32), stream=Handle(-1)),
     ds.InvalidArgument, r"^stream: a Handle whose cuda_stream is a int \(-1\)"),
    ("posterior-dtype-array", lambda m: posterior(m).sample(4, dtype=np.zeros(3)), ds.InvalidArgument,
     r"^dtype: a ndarray \(array\(\[0\., 0\., 0\.\]\)\), expected 'float32' or 'float64'$"),
    ("posterior-dtype-list", lambda m: posterior(m).sample(4, dtype=["float32"]), ds.InvalidArgument,
     r"^dtype: a list \(\['float32'\]\), expected 'float32' or 'float64'$"),
    ("posterior-dtype-int32", lambda m: posterior(m).sample(4, dtype=np.int32), ds.InvalidArgument,
     r"^dtype: 'int32', expected 'float32' or 'float64'$"),
    ("plan-stream-negative-handle", lambda m: ds.DiffusionPlan(4, 2, steps=2, stream=Handle(-1)),
     ds.InvalidArgument, r"^stream: a Handle whose cuda_stream is a int \(-1\)"),
]


@pytest.mark.parametrize("call,kind,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_calls_are_worded_not_nanobinds(m, call, kind, pattern):
    with pytest.raises(kind, match=pattern) as caught:
        call(m)
    assert not NANOBIND.search(str(caught.value))


def test_the_callables_still_take_what_their_signatures_say():
    """Positional and keyword forms, defaults, and None for mask's diagonal, as the signatures (and the stub) give
    them; the options classes with keyword settings equal the fields set one by one."""
    assert S.vp_linear(beta_max=10.0).beta_max == 10.0 and S.vp_linear().beta_min == 0.1
    assert S.vp_linear(0.2, 15.0).beta_min == 0.2
    assert S.vp_cosine(offset=0.01).cosine_offset == 0.01
    assert S.variance_exploding(0.02).sigma_min == 0.02 and S.ornstein_uhlenbeck(horizon=3.0).t_start == 3.0
    assert S.stochastic_localization(t_max=100.0).kind == S.stochastic_localization().kind
    assert S.linear_interpolant().kind == S.linear_interpolant().kind
    assert S.vp_table(alpha_bar=[0.9, 0.5, 0.1]).alpha_bar == [0.9, 0.5, 0.1]
    np.testing.assert_array_equal(S.vp_linear().with_grid(grid="quadratic", start=1.0, end=0.01).points(4),
                                  S.vp_linear().with_grid("quadratic", 1.0, 0.01).points(steps=4))
    assert S.vp_linear().with_times(times=[1.0, 0.5, 0.0]).times == [1.0, 0.5, 0.0]
    assert S.vp_linear().at(t=0.5) == S.vp_linear().at(0.5)
    np.testing.assert_array_equal(A.dense(A=np.eye(2)).matrix(), np.eye(2))
    np.testing.assert_array_equal(A.mask(3, [0, 2], None).matrix(), A.mask(d_x=3, indices=[0, 2]).matrix())
    np.testing.assert_array_equal(A.svd(U=np.eye(2), singular_values=[2.0, 1.0], V=np.eye(2)).matrix(),
                                  np.diag([2.0, 1.0]))
    o = ds.GuidedOptions(particles=8, steps=3, sampler="dps", eta=0.5, final_moves="auto")
    one = ds.GuidedOptions()
    one.particles, one.steps, one.sampler, one.eta, one.final_moves = 8, 3, "dps", 0.5, "auto"
    for field in ("particles", "steps", "sampler", "eta", "final_moves"):
        assert getattr(o, field) == getattr(one, field)
    assert ds.LangevinOptions(target_a=0.5, method="mala").target_a == 0.5
    assert ds.ResamplingOptions(scheme="systematic").scheme == ds._core.ResamplingScheme.systematic
    assert ds.GuidedProblems(y=[[0.5, 1.0]], sigma_y=0.25).sigma_y == [0.25]
    assert ds.NoiseSchedule(beta_max=5.0).beta_max == 5.0
    assert ds.DiffusionOptions().steps == ds.DiffusionOptions(steps=ds.DiffusionOptions().steps).steps
    # MixturePosterior.sample's dtype: a name, or NumPy's type or dtype of it.
    m = ds.GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0])
    assert posterior(m).sample(4, dtype=np.float64).dtype == np.float64
    assert posterior(m).sample(4, dtype=np.dtype("float32")).dtype == np.float32
    assert isinstance(ds.cpu_threads(), int) and isinstance(ds.cpu_blas_name(), str)
    assert isinstance(ds.cuda_available(), bool) and isinstance(ds.cuda_unavailable_reason(), str)


# ---- a sweep of wrong values ---------------------------------------------------------------------------------------

WRONG = [None, "x", 1.5, -1, 2**70, object(), [], {}, b"ab", np.zeros(3), np.zeros((4, 2)), (1, 2), True,
         float("nan"), lambda *a: 0]


def _x():
    return np.zeros((4, 2), np.float32)


def _model(points, a, s):
    return np.zeros((4, 2), np.float32)


def _sweep_calls(m):
    """(name, callable, args, kwargs) of a valid call of every public entry point that takes arguments."""
    post = ds.MixturePosterior(m, [[1.0, 0.0]], 0.5, [0.5])

    def plan():
        return ds.DiffusionPlan(4, 2, steps=2)

    def ask_plan():
        p = ds.SamplingPlan.diffusion(4, 2, steps=2)
        p.reset()
        return p

    def stepped(*a, **k):
        p = plan()
        p.reset(_x())
        return p.step(*a, **k)

    def outputs(*a, **k):
        p = ds.SamplingPlan.guided(2, [[1.0, 0.0]], [0.5], 0.5, steps=2, particles=4)
        p.run(_model)
        return p.outputs(*a, **k)

    return [
        ("GaussianMixture", ds.GaussianMixture, [[0.5, 0.5], [[0, 0], [1, 1]], [1, 1]], {}),
        ("empirical", ds.GaussianMixture.empirical, [np.zeros((2, 2)), 1.0], {}),
        ("grid", ds.GaussianMixture.grid, [2, 2, 1.0, 1.0], {}),
        ("score", m.score, [_x(), 1.0, 0.5], {"path": "automatic", "out": _x()}),
        ("log_density", m.log_density, [_x(), 1.0, 0.5], {}),
        ("denoiser_jvp", m.denoiser_jvp, [_x(), _x(), 1.0, 0.5], {}),
        ("evaluate_fp64", m.evaluate_fp64, ["score", np.zeros((4, 2)), 1.0, 0.5], {}),
        ("denoiser_jvp_fp64", m.denoiser_jvp_fp64, [np.zeros((4, 2)), np.zeros((4, 2)), 1.0, 0.5], {}),
        ("sample", m.sample, [4, 1.0, 0.5], {"seed": 1, "labels": False, "first_index": 0}),
        ("langevin", ds.langevin, [m, _x()], {"steps": 2, "step_size": 0.1, "target": (1.0, 0.0)}),
        ("diffusion", ds.diffusion, [m, 4], {"steps": 2, "schedule": "vp_linear"}),
        ("DiffusionPlan", ds.DiffusionPlan, [4, 2], {"steps": 2, "output": "denoiser", "device": "cpu"}),
        ("DiffusionPlan.step_channel", lambda *a, **k: plan().step_channel(*a, **k), [0], {}),
        ("DiffusionPlan.reset", lambda *a, **k: plan().reset(*a, **k), [_x()], {}),
        ("DiffusionPlan.step", stepped, [_x(), _x()], {}),
        ("DiffusionPlan.run", lambda *a, **k: plan().run(*a, **k), [_model], {}),
        ("SamplingPlan.diffusion", ds.SamplingPlan.diffusion, [4, 2], {"steps": 2}),
        ("SamplingPlan.langevin", ds.SamplingPlan.langevin, [4, 2], {"steps": 2, "step_size": 0.1}),
        ("SamplingPlan.guided", ds.SamplingPlan.guided, [2, [[1.0, 0.0]], [0.5], 0.5], {"steps": 2, "particles": 2}),
        ("SamplingPlan.ask", lambda *a, **k: ask_plan().ask(*a, **k), [0], {}),
        ("SamplingPlan.tell", lambda *a, **k: ask_plan().tell(*a, **k), [_x()], {}),
        ("SamplingPlan.reset", lambda *a, **k: ds.SamplingPlan.diffusion(4, 2, steps=2).reset(*a, **k), [_x()], {}),
        ("SamplingPlan.outputs", outputs, [("samples",)], {}),
        ("resample", ds.resample, [np.zeros((2, 4), np.float32)], {"scheme": "systematic", "reports": True}),
        ("gather_particles", ds.gather_particles, [np.zeros((1, 4, 2), np.float32), np.zeros((1, 4), np.int32)], {}),
        ("MixturePosterior", ds.MixturePosterior, [m, [[1.0, 0.0]], 0.5, [0.5]], {}),
        ("MixturePosterior.sample", post.sample, [4], {"seed": 0, "dtype": "float32", "labels": False}),
        ("guided_sample", ds.guided_sample, [m, [[1.0, 0.0]], [0.5], 0.5],
         {"steps": 2, "particles": 2, "outputs": ("samples",), "resampling": {"scheme": "systematic"}}),
        ("sliced_wasserstein", ds.sliced_wasserstein, [_x(), _x()], {"directions": 4, "seed": 0, "p": 1}),
        ("component_weights", ds.component_weights, [m, _x()], {}),
        ("component_weight_error", ds.component_weight_error, [post, _x()], {}),
        ("with_grid", ds.NoiseSchedule.vp_linear().with_grid, ["uniform", 1.0, 0.0], {}),
        ("mask", ds.ObservationOperator.mask, [2, [0]], {"diagonal": [1.0]}),
        ("svd", ds.ObservationOperator.svd, [np.eye(2), [1.0, 1.0], np.eye(2)], {}),
        ("dense", ds.ObservationOperator.dense, [np.eye(2)], {}),
        ("vp_linear", S.vp_linear, [0.1, 20.0], {}),
        ("vp_cosine", S.vp_cosine, [0.008], {}),
        ("vp_table", S.vp_table, [[0.9, 0.1]], {}),
        ("variance_exploding", S.variance_exploding, [0.01, 50.0], {}),
        ("ornstein_uhlenbeck", S.ornstein_uhlenbeck, [5.0], {}),
        ("stochastic_localization", S.stochastic_localization, [1e-3, 1e3], {}),
        ("with_times", S.vp_linear().with_times, [[1.0, 0.0]], {}),
        ("at", S.vp_linear().at, [0.5], {}),
        ("points", S.vp_linear().points, [2], {}),
        ("LangevinOptions", ds.LangevinOptions, [], {"steps": 2, "method": "ula", "target_a": 1.0}),
        ("DiffusionOptions", ds.DiffusionOptions, [], {"steps": 2, "schedule": S.vp_linear(), "draw_initial": True}),
        ("GuidedOptions", ds.GuidedOptions, [], {"particles": 4, "final_moves": "auto",
                                                 "resampling": ds.ResamplingOptions()}),
        ("GuidedProblems", ds.GuidedProblems, [], {"y": [[0.5]], "A": [[1.0, 0.0]], "operators": [], "problems": 1}),
        ("ResamplingOptions", ds.ResamplingOptions, [], {"scheme": "systematic", "ess_threshold": 0.5}),
        ("NoiseSchedule", ds.NoiseSchedule, [], {"times": [1.0, 0.0], "kind": "vp_linear"}),
    ]


@pytest.mark.filterwarnings("ignore")
def test_no_wrong_value_reaches_nanobind_or_escapes_unnamed(m):
    """Every public entry point, each argument in turn replaced by each of WRONG: the call runs, or raises the
    package's Error or a TypeError without nanobind's words; never nanobind's TypeError, and never another exception
    (AttributeError, ValueError, IndexError: naming nothing). Before the fixes of this file and of
    test_export_errors.py the sweep found bytes reaching the binding's writable arrays (labels, x) and an array as
    MixturePosterior.sample's dtype (ValueError)."""
    found = []
    for name, call, args, kwargs in _sweep_calls(m):
        call(*args, **kwargs)  # the valid call runs
        slots = [(i, None) for i in range(len(args))] + [(None, k) for k in kwargs]
        for (i, key), wrong in ((slot, value) for slot in slots for value in WRONG):
            a, k = list(args), dict(kwargs)
            if key is None:
                a[i] = wrong
            else:
                k[key] = wrong
            try:
                call(*a, **k)
            except ds.Error:
                pass
            except TypeError as e:
                if NANOBIND.search(str(e)):
                    found.append(f"{name} {i if key is None else key}={wrong!r:.20}: {str(e)[:100]}")
            except Exception as e:  # noqa: BLE001 (what the sweep looks for)
                found.append(f"{name} {i if key is None else key}={wrong!r:.20}: {type(e).__name__}: {e}"[:160])
    assert not found, "\n".join(found)


@pytest.mark.parametrize("call,name,shown", [
    (lambda: S.vp_linear(float("nan")), "beta_min", "nan"),
    (lambda: S.vp_linear(beta_max=float("inf")), "beta_max", "inf"),
    (lambda: S.vp_cosine(float("nan")), "offset", "nan"),
    (lambda: S.variance_exploding(sigma_max=float("inf")), "sigma_max", "inf"),
    (lambda: S.ornstein_uhlenbeck(float("nan")), "horizon", "nan"),
    (lambda: S.stochastic_localization(t_min=float("-inf")), "t_min", "-inf"),
    (lambda: S.vp_linear().with_grid("uniform", float("nan"), 0.0), "start", "nan"),
    (lambda: S.vp_linear().at(float("nan")), "t", "nan"),
], ids=["vp_linear", "vp_linear-beta_max", "vp_cosine", "variance_exploding", "ornstein_uhlenbeck",
        "stochastic_localization", "with_grid", "at"])
def test_schedule_factories_refuse_non_finite_numbers(call, name, shown):
    """NoiseSchedule's factories took NaN and infinity and made the schedule, refused only where it was used
    (schedule.beta_min: must be >= 0 and finite, got nan), though the same field set by itself (s.beta_min = nan)
    is refused at once. Seen failing before the fix: the schedules made without an error."""
    with pytest.raises(ds.InvalidArgument, match=rf"^{name}: {shown}, expected a finite number$"):
        call()


@pytest.mark.parametrize("make,field,kind", [
    (lambda: _set(S.vp_cosine(), alpha_bar=[0.9, 0.5]), "alpha_bar", "vp_cosine"),
    (lambda: _set(S.variance_exploding(), beta_max=10.0), "beta_max", "variance_exploding"),
    (lambda: _set(S.vp_linear(), sigma_min=0.02), "sigma_min", "vp_linear"),
    (lambda: _set(S.ornstein_uhlenbeck(), cosine_offset=0.01), "cosine_offset", "ornstein_uhlenbeck"),
], ids=["alpha_bar-vp_cosine", "beta_max-variance_exploding", "sigma_min-vp_linear", "cosine_offset-ou"])
def test_schedule_fields_of_another_kind_are_refused(make, field, kind):
    """A field the schedule's kind does not read (a table on vp_cosine) was ignored, and the run took the kind's
    channel. Refused by points() and at() (and so by every sampler), naming the field and the kind. Seen failing
    before the fix: no exception."""
    s = make()
    pattern = rf"^schedule\.{field}: .* (is|are) set, but schedule\.kind {kind} does not read"
    with pytest.raises(ds.InvalidArgument, match=pattern):
        s.points(4)
    with pytest.raises(ds.InvalidArgument, match=pattern):
        s.at(s.t_end)


def _set(schedule, **fields):
    for name, value in fields.items():
        setattr(schedule, name, value)
    return schedule
