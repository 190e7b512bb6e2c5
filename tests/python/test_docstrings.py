"""The Python docstrings are the C++ headers' Doxygen comments (python/docstrings.py generates them at build time):
every property of the bound classes, and of the package's classes that forward to them, that names a documented
C++ member carries that member's comment (a note for Python may follow it), so the two cannot drift."""
import pathlib
import sys

import pytest

import diffsample as ds

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import docstrings  # noqa: E402

DOCS = docstrings.parse(sorted((ROOT / "include" / "diffsample").glob("*.hpp")))

# Classes of diffsample._core and the C++ class each binds.
CORE = {
    "NoiseSchedule": "noise_schedule",
    "LangevinOptions": "langevin_options",
    "DiffusionOptions": "diffusion_options",
    "ResamplingOptions": "resampling_options",
    "GuidedProblems": "guided_problems",
    "GuidedOptions": "guided_options",
    "GaussianMixtureCore": "gaussian_mixture",
    "ObservationOperator": "observation_operator",
    "MixturePosterior": "mixture_posterior",
    "DiffusionPlan": "diffusion_plan",
    "SamplingPlan": "sampling_plan",
}
# Python names of C++ members named otherwise.
RENAMED = {"executor": "where"}
# The package's classes whose properties forward to a core class.
PACKAGE = {"GaussianMixture": "GaussianMixtureCore", "MixturePosterior": "MixturePosterior",
           "DiffusionPlan": "DiffusionPlan", "SamplingPlan": "SamplingPlan"}


def documented(core_name):
    """(python name, C++ key, property) of every property of the core class that names a documented C++ member."""
    cls = getattr(ds._core, core_name, None)
    if cls is None:
        return []
    out = []
    for name, attr in vars(cls).items():
        key = CORE[core_name] + "::" + RENAMED.get(name, name)
        if isinstance(attr, property) and key in DOCS:
            out.append((name, key, attr))
    return out


@pytest.mark.parametrize("core_name", sorted(CORE))
def test_core_properties_carry_the_headers_comments(core_name):
    props = documented(core_name)
    assert props, core_name + ": no property found that names a documented C++ member"
    for name, key, prop in props:
        assert prop.__doc__ is not None and prop.__doc__.startswith(DOCS[key]), (
            f"{core_name}.{name}: docstring {prop.__doc__!r} is not the header's comment of {key}: {DOCS[key]!r}")


# Classes and enums of diffsample._core documented by their C++ type's comment.
TYPES = {"Executor": "executor", "Quantity": "quantity", "MixturePath": "mixture_path", "ScheduleKind": "schedule_kind",
         "TimeGrid": "time_grid", "DiffusionSampler": "diffusion_sampler", "ModelOutput": "model_output",
         "LangevinMethod": "langevin_method", "ResamplingScheme": "resampling_scheme",
         "GuidedSampler": "guided_sampler", "DpsStepForm": "dps_step_form", "GuidedPotentials": "guided_potentials",
         "GuidedGrid": "guided_grid", "ObservationKind": "observation_kind", "NoiseSchedule": "noise_schedule",
         "LangevinOptions": "langevin_options", "DiffusionOptions": "diffusion_options",
         "ResamplingOptions": "resampling_options", "GuidedProblems": "guided_problems",
         "GuidedOptions": "guided_options", "ObservationOperator": "observation_operator"}


@pytest.mark.parametrize("name", sorted(TYPES))
def test_types_carry_the_headers_comments(name):
    assert getattr(ds._core, name).__doc__ == DOCS[TYPES[name]], name


def test_static_members_carry_the_headers_comments():
    for name in ("vp_linear", "vp_cosine", "vp_table", "variance_exploding", "ornstein_uhlenbeck",
                 "linear_interpolant", "stochastic_localization"):
        doc = getattr(ds.NoiseSchedule, name).__doc__
        assert DOCS["noise_schedule::" + name] in doc, name
    if ds._core.HAS_SAMPLING_PLANS:
        assert DOCS["sampling_plan::langevin"] in ds._core.SamplingPlan.langevin.__doc__


@pytest.mark.parametrize("package_name", sorted(PACKAGE))
def test_package_properties_forward_the_core_docstrings(package_name):
    core = getattr(ds._core, PACKAGE[package_name], None)
    if core is None:
        pytest.skip(PACKAGE[package_name] + " is not in this build")
    cls = getattr(ds, package_name)
    checked = 0
    for name, _, prop in documented(PACKAGE[package_name]):
        if isinstance(vars(cls).get(name), property):
            assert vars(cls)[name].__doc__ == prop.__doc__, f"{package_name}.{name}"
            checked += 1
    assert checked > 0


def test_the_parser_reads_the_comment_forms_of_the_headers(tmp_path):
    # The forms the headers use: `///` lines before a declaration, a trailing `///<` continued on `///<` lines,
    # members with initialisers that call functions, overloads (the first comment kept), nested scopes.
    h = tmp_path / "h.hpp"
    h.write_text(
        "/// A struct.\n"
        "struct s {\n"
        "  double a = 1.0;  ///< the a\n"
        "                   ///< continued\n"
        "  /// Before b.\n"
        "  noise_schedule b = noise_schedule::vp_linear();\n"
        "  int c{};\n"
        "  /// First f.\n"
        "  void f(int x = 3) const;\n"
        "  /// Second f.\n"
        "  void f(double x);\n"
        "};\n"
        "/// Free g.\n"
        "int g(const s& v);\n")
    docs = docstrings.parse([h])
    assert docs == {"s": "A struct.", "s::a": "the a\ncontinued", "s::b": "Before b.", "s::f": "First f.",
                    "g": "Free g."}
