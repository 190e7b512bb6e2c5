"""Fields of the options objects set one by one (opts.particles = ..., opts.resampling.ess_threshold = ...): every
field of LangevinOptions, DiffusionOptions, ResamplingOptions, GuidedOptions, NoiseSchedule and GuidedProblems checks
the value it is given and names the field (python/src/core.cpp, def_setting), as the keyword settings do.

Seen failing against the binding before: None, a str for an enum, a float for an int and an int for a bool were
nanobind's TypeError "incompatible function arguments" naming neither the field nor the value; an int was taken as
an enum value (potentials = 2 ran twisted potentials), an enum's name was refused, and NaN was stored
(opts.sigma = nan, opts.resampling.ess_threshold = nan) to be refused later or not at all (a DDPM run ignores sigma).
"""
import math

import numpy as np
import pytest

import diffsample as ds

CLASSES = [ds.LangevinOptions, ds.DiffusionOptions, ds.ResamplingOptions, ds.GuidedOptions, ds.NoiseSchedule,
           ds.GuidedProblems]
# Problem data (read and copied as problem data is, errors InvalidArgument naming the field).
PROBLEM_DATA = {"A", "y", "sigma_y"}


def fields(cls):
    return [name for name, attr in vars(cls).items() if isinstance(attr, property) and attr.fset is not None]


def every_field():
    return [(cls, name) for cls in CLASSES for name in fields(cls)]


@pytest.mark.parametrize("cls,name", every_field(), ids=[f"{c.__name__}.{n}" for c, n in every_field()])
def test_none_and_wrong_types_are_refused_by_name(cls, name):
    obj = cls()
    before = getattr(obj, name)
    wrong = [None, object()]
    if not isinstance(before, str):
        wrong.append("text")
    for value in wrong:
        with pytest.raises((TypeError, ds.InvalidArgument), match=rf"^{name}: "):
            setattr(obj, name, value)
        after = getattr(obj, name)
        assert after == before if not isinstance(before, (ds.NoiseSchedule, ds.ResamplingOptions)) else True
    if isinstance(before, (int, float)) and not isinstance(before, bool):
        with pytest.raises(TypeError, match=rf"^{name}: a bool, expected (int|float)$"):
            setattr(obj, name, True)
    if isinstance(before, bool):
        with pytest.raises(TypeError, match=rf"^{name}: a int \(1\), expected bool$"):
            setattr(obj, name, 1)
        setattr(obj, name, np.True_)
        assert getattr(obj, name) is True


def test_integer_fields():
    o = ds.GuidedOptions()
    with pytest.raises(TypeError, match=r"^particles: a float \(2\.5\), expected int$"):
        o.particles = 2.5
    with pytest.raises(TypeError, match=r"^particles: None, expected int$"):
        o.particles = None
    with pytest.raises(ds.InvalidArgument, match=r"^seed: -1 is outside \[0, 18446744073709551615\] \(the setting's "
                                                 r"integer type\)$"):
        o.seed = -1
    with pytest.raises(ds.InvalidArgument, match=r"^particles: 9223372036854775808 is outside "
                                                 r"\[-9223372036854775808, 9223372036854775807\]"):
        o.particles = 2**63
    o.seed, o.particles = np.uint64(2**64 - 1), np.int32(12)
    assert (o.seed, o.particles) == (2**64 - 1, 12)
    # A value of the right type outside the library's range is stored and refused where the options are used, by
    # the library, naming the field (options.particles).
    o.particles = -3
    assert o.particles == -3
    prior = ds.GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    problems = ds.GuidedProblems()
    problems.problems, problems.d_y = 1, 1
    problems.operators = [ds.ObservationOperator.dense([[1.0, 0.0]])]
    problems.y, problems.sigma_y = [0.5], 0.3
    with pytest.raises(ds.InvalidArgument, match=r"particles"):
        ds._core.guided_sample(prior._m, problems, o, samples=np.zeros((1, 1, 2), dtype=np.float32))
    with pytest.raises(ds.InvalidArgument, match=r"^options\.particles"):
        ds.guided_sample(prior, [[1.0, 0.0]], [0.5], 0.3, particles=-3)


def test_real_fields_refuse_non_finite_values():
    for obj, name in [(ds.DiffusionOptions(), "sigma"), (ds.GuidedOptions(), "eta"), (ds.LangevinOptions(), "target_s"),
                      (ds.NoiseSchedule(), "beta_max"), (ds.GuidedOptions().resampling, "ess_threshold")]:
        before = getattr(obj, name)
        for value in (float("nan"), math.inf, -math.inf, np.float32("nan")):
            with pytest.raises(ds.InvalidArgument, match=rf"^{name}: -?(nan|inf), expected a finite number$"):
                setattr(obj, name, value)
            assert getattr(obj, name) == before
        with pytest.raises(TypeError, match=rf"^{name}: a str \('0\.5'\), expected float$"):
            setattr(obj, name, "0.5")
        setattr(obj, name, np.float32(0.25))
        assert getattr(obj, name) == 0.25
    # Through a nested options object too: the GuidedOptions' own resampling settings.
    g = ds.GuidedOptions()
    with pytest.raises(ds.InvalidArgument, match=r"^ess_threshold: nan"):
        g.resampling.ess_threshold = float("nan")
    g.resampling.ess_threshold = 0.25
    assert g.resampling.ess_threshold == 0.25
    # A sampler that ignores sigma ran with a NaN one, silently; now the keyword is refused as the field is.
    with pytest.raises(ds.InvalidArgument, match=r"^sigma: nan, expected a finite number$"):
        ds.diffusion(ds.GaussianMixture([1.0], [[0.0]], [1.0]), 4, sampler="ddpm", steps=2, sigma=float("nan"))


def test_enum_fields_take_names_and_values_only():
    g = ds.GuidedOptions()
    g.potentials = "twisted"
    assert g.potentials == ds._core.GuidedPotentials.twisted
    g.potentials = ds._core.GuidedPotentials.linear
    assert g.potentials == ds._core.GuidedPotentials.linear
    with pytest.raises(ds.InvalidArgument, match=r"^potentials: unknown .*'nonsense'"):
        g.potentials = "nonsense"
    for value, shown in [(2, r"a int \(2\)"), (True, "a bool"), (None, "None")]:
        with pytest.raises(TypeError, match=rf"^potentials: {shown}, expected a name \(linear, moment, twisted, "
                                            r"automatic\) or a diffsample\._core\.GuidedPotentials$"):
            g.potentials = value
    assert g.potentials == ds._core.GuidedPotentials.linear
    d = ds.DiffusionOptions()
    d.sampler = "ddim"
    assert d.sampler == ds._core.DiffusionSampler.ddim
    with pytest.raises(TypeError, match=r"^method: a int \(1\), expected a name \(ula, "):
        ds.LangevinOptions().method = 1


def test_enum_settings_name_the_setting_once():
    # The parser of an enum names what it parses ("path: unknown name 'cuda'"), and the setting's name was put
    # before it: "operator_path: path: unknown name 'cuda'". Seen failing before the fix: that doubled prefix.
    g = ds.GuidedOptions()
    with pytest.raises(ds.InvalidArgument, match=r"^operator_path: unknown name 'cuda' \(expected auto, direct or "
                                                 r"gemm\)$"):
        g.operator_path = "cuda"
    with pytest.raises(ds.InvalidArgument, match=r"^kind: unknown kind 'nonsense' \(expected vp_linear, "):
        ds.NoiseSchedule().kind = "nonsense"
    with pytest.raises(ds.InvalidArgument, match=r"^sampler: unknown diffusion sampler 'nonsense' "):
        ds.DiffusionOptions().sampler = "nonsense"


def test_object_fields():
    g = ds.GuidedOptions()
    with pytest.raises(TypeError, match=r"^schedule: None, expected a diffsample\._core\.NoiseSchedule$"):
        g.schedule = None
    with pytest.raises(TypeError, match=r"^resampling: a dict \(\{\}\), expected a diffsample\._core\."
                                        r"ResamplingOptions$"):
        g.resampling = {}
    g.schedule = ds.NoiseSchedule.vp_cosine()
    assert g.schedule.kind == ds._core.ScheduleKind.vp_cosine
    p = ds.GuidedProblems()
    with pytest.raises(TypeError, match=r"^operators: None, expected a sequence of diffsample\._core\."
                                        r"ObservationOperator$"):
        p.operators = None
    with pytest.raises(ds.InvalidArgument, match=r"^A: None, expected \(d_y, d_x\)"):
        p.A = None
    with pytest.raises(TypeError, match=r"^times: None, expected a sequence of floats$"):
        ds.NoiseSchedule().times = None
    with pytest.raises(AttributeError):
        g.partcles = 3  # no such field: not created


def test_a_diffusion_plans_settings_are_read_only():
    # DiffusionPlan.options was the options object the plan was made from: setting a field there (plan.options.steps
    # = 3) was accepted and changed nothing (the plan's table was built), as did plan.n = 5 until run() allocated
    # the wrong x. Both are refused now; the values read as before. Seen failing before: no error for any.
    plan = ds.DiffusionPlan(4, 2, steps=10, schedule="vp_cosine", seed=3)
    assert (plan.options.steps, plan.options.seed, plan.n, plan.d) == (10, 3, 4, 2)
    assert plan.options.schedule.kind == ds._core.ScheduleKind.vp_cosine
    with pytest.raises(AttributeError, match=r"^DiffusionPlan\.options\.steps: the plan's settings are fixed when "
                                             r"it is made"):
        plan.options.steps = 3
    with pytest.raises(AttributeError, match=r"^DiffusionPlan\.options\.schedule\.beta_max: the plan's settings"):
        plan.options.schedule.beta_max = 5.0
    for name in ("n", "d"):
        with pytest.raises(AttributeError):
            setattr(plan, name, 5)
    assert plan.steps == 10 and plan.options.steps == 10 and plan.n == 4


def test_the_package_objects_take_no_other_attributes(mixture2):
    # plan.eta = 0.5, mixture.variance = 2 or a misspelt name was stored on the Python object and read by nothing:
    # the settings are fixed when the object is made. Such an assignment is an AttributeError now. Seen failing
    # before (no error for any).
    objects = [mixture2, ds.DiffusionPlan(4, 2, steps=3), ds.MixturePosterior(mixture2, [[1.0, 0.0]], 0.5, [0.1])]
    if ds._core.HAS_SAMPLING_PLANS:
        objects.append(ds.SamplingPlan.diffusion(4, 2, steps=3))
    for obj in objects:
        with pytest.raises(AttributeError):
            obj.eta = 0.5
        assert not hasattr(obj, "eta")
    import weakref

    assert all(weakref.ref(obj)() is obj for obj in objects)


LOSSY_SEQUENCES = [
    ("bool-item", [True, 0.5, 0.9]),
    ("complex-item", [np.complex128(0.1 + 2j), 0.5, 0.9]),
    ("bool-array", np.array([True, False, True])),
    ("complex-array", np.array([0.1 + 2j, 0.5, 0.9])),
]


@pytest.mark.parametrize("value", [c[1] for c in LOSSY_SEQUENCES], ids=[c[0] for c in LOSSY_SEQUENCES])
def test_float_sequences_refuse_bools_and_complex_values(value):
    """A sequence of floats (NoiseSchedule.times, with_times(), vp_table()) went through nanobind's conversion, which
    takes each value as float() does: True as 1.0, a NumPy complex value as its real part with a ComplexWarning only.
    Refused naming the field, as a single real setting refuses them. Seen failing before the fix: each value taken."""
    pattern = r"expected a sequence of floats \(a bool or complex value is no real number\)$"
    with pytest.raises(TypeError, match=r"^times: a (list|ndarray) \(.*\), " + pattern):
        ds.NoiseSchedule().times = value
    with pytest.raises(ds.InvalidArgument, match=r"^times: .*" + pattern):
        ds.NoiseSchedule.vp_linear().with_times(value)
    with pytest.raises(ds.InvalidArgument, match=r"^alpha_bar: .*" + pattern):
        ds.NoiseSchedule.vp_table(value)
    ds.NoiseSchedule.vp_linear().with_times([0.1, 0.5, 0.9])  # floats still pass


def test_float_sequences_refuse_non_finite_values():
    """A NaN or an infinity in a sequence of floats (NoiseSchedule.times and alpha_bar, with_times(), vp_table()) was
    kept, and refused only where the schedule was used, as a time out of order ("schedule.times[1]: nan after 0.9 is
    not strictly monotone"), where a real field refuses it when set. Refused naming the item; seen failing before the
    fix: each value taken."""
    for bad, shown in ((float("nan"), "nan"), (math.inf, "inf"), (-math.inf, "-inf"), (np.float32("nan"), "nan")):
        s = ds.NoiseSchedule()
        before = (s.times, s.alpha_bar)
        for name in ("times", "alpha_bar"):
            with pytest.raises(ds.InvalidArgument, match=rf"^{name}\[1\]: {shown}, expected a finite number$"):
                setattr(s, name, [0.9, bad, 0.1])
        assert (s.times, s.alpha_bar) == before
        with pytest.raises(ds.InvalidArgument, match=rf"^times\[2\]: {shown}, expected a finite number$"):
            ds.NoiseSchedule.vp_linear().with_times(np.array([0.9, 0.5, bad]))
        with pytest.raises(ds.InvalidArgument, match=rf"^alpha_bar\[0\]: {shown}, expected a finite number$"):
            ds.NoiseSchedule.vp_table([bad, 0.5])
    ds.NoiseSchedule.vp_table([0.9, 0.5])  # finite values still pass
