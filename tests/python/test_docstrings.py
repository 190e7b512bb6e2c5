"""The Python docstrings are the C++ headers' Doxygen comments (python/docstrings.py generates them at build time):
every property of the bound classes, and of the package's classes that forward to them, that names a documented
C++ member carries that member's comment (a note for Python may follow it), so the two cannot drift."""
import inspect
import pathlib
import re
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
    # The header's comment first; the constructor's part of the binding may follow (the options classes' keyword
    # settings, ObservationOperator's refused constructor).
    assert getattr(ds._core, name).__doc__.startswith(DOCS[TYPES[name]]), name


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
    # members with initialisers that call functions, overloads (the first comment under the name, the k-th under
    # name#k), nested scopes.
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
                    "s::f#2": "Second f.", "g": "Free g."}


def test_the_parser_reads_operator_names_overloads_and_doxygen_commands(tmp_path):
    # A name containing "operator" is a name (observation_operator's factories were left out when any "operator" in
    # the declaration read as an operator overload); the k-th documented overload is 'name#k'; Doxygen commands
    # read as words with the Python exceptions.
    h = tmp_path / "h.hpp"
    h.write_text(
        "class observation_operator {\n"
        "  /// Empty.\n"
        "  observation_operator() = default;\n"
        "  /// Dense.\n"
        "  /// @param A  the matrix\n"
        "  /// @throws invalid_argument when @p A is empty\n"
        "  static observation_operator dense(std::vector<double> A);\n"
        "  /// Assignment.\n"
        "  observation_operator& operator=(const observation_operator&);\n"
        "  /// First sample.\n"
        "  void sample(float* out) const;\n"
        "  void sample(int) const;\n"
        "  /// Second sample.\n"
        "  /// @return the executor\n"
        "  executor sample(double* out) const;\n"
        "};\n")
    docs = docstrings.parse([h])
    assert docs == {"observation_operator::observation_operator": "Empty.",
                    "observation_operator::dense": "Dense.\nA: the matrix\nRaises InvalidArgument when A is empty",
                    "observation_operator::sample": "First sample.",
                    "observation_operator::sample#2": "Second sample.\nReturns the executor"}
    out = tmp_path / "docs.hpp"
    docstrings.main(["docstrings.py", str(out), str(h)])
    assert '#define DS_DOC_observation_operator__sample__2 "Second sample.\\nReturns the executor"' in out.read_text()


# The guided and posterior calls of diffsample._core and the headers' comments each docstring carries.
CALLS = {
    ("ObservationOperator", "dense"): ["observation_operator::dense"],
    ("ObservationOperator", "mask"): ["observation_operator::mask"],
    ("ObservationOperator", "svd"): ["observation_operator::svd"],
    ("MixturePosterior", "__init__"): ["mixture_posterior::mixture_posterior#3", "mixture_posterior::mixture_posterior"],
    ("MixturePosterior", "mean"): ["mixture_posterior::mean"],
    ("MixturePosterior", "covariance"): ["mixture_posterior::covariance"],
    ("MixturePosterior", "sample"): ["mixture_posterior::sample#3", "mixture_posterior::sample#4"],
    (None, "guided_sample"): ["guided_sample"],
    ("SamplingPlan", "guided"): ["sampling_plan::guided"],
    ("SamplingPlan", "write_outputs"): ["sampling_plan::write_outputs"],
}


@pytest.mark.parametrize("owner, name", sorted(CALLS, key=str))
def test_guided_and_posterior_calls_carry_the_headers_comments(owner, name):
    if owner == "SamplingPlan" and not ds._core.HAS_SAMPLING_PLANS:
        pytest.skip("no plans in this build")
    obj = getattr(getattr(ds._core, owner) if owner else ds._core, name)
    doc = "\n".join(d for _, d, _ in obj.__nb_signature__)
    for key in CALLS[(owner, name)]:
        assert DOCS[key] in doc, f"{owner}.{name}: docstring {doc!r} lacks the header's comment of {key}: {DOCS[key]!r}"
    assert "@" not in doc, f"{owner}.{name}: a Doxygen command left in {doc!r}"


def test_the_package_carries_the_headers_comments_of_its_wrapped_calls():
    assert ds._core.MixturePosterior.__doc__ == DOCS["mixture_posterior"]
    for key, text in ds._core._header_docs.items():
        assert text == DOCS[key], key
    for obj, keys in ((ds.MixturePosterior, ["mixture_posterior", "mixture_posterior::mixture_posterior#3",
                                             "mixture_posterior::mixture_posterior"]),
                      (ds.guided_sample, ["guided_problems", "guided_sample"])):
        doc = inspect.getdoc(obj)
        for key in keys:
            assert DOCS[key] in doc, f"{obj.__name__}: lacks the header's comment of {key}"


# ---- every public callable of the package documents its parameters ------------------------------------------------


def _parameters(obj):
    """(parameter names, docstring text without nanobind's signature lines) of a function or method."""
    sigs = getattr(obj, "__nb_signature__", None)
    if sigs is not None:  # a nanobind function: its signature string(s) and its docstring, per overload
        names, docs = [], []
        for sig, doc, _ in sigs:
            inner = sig[sig.index("(") + 1:sig.rindex(")")]
            depth, part, parts = 0, "", []
            for c in inner:  # split on the top-level commas (types hold commas in brackets)
                depth += c in "[(" and 1 or c in "])" and -1 or 0
                if c == "," and depth == 0:
                    parts.append(part)
                    part = ""
                else:
                    part += c
            parts.append(part)
            for p in parts:
                name = re.split(r"[:=]", p, maxsplit=1)[0].strip().lstrip("*")
                if name and name not in ("self", "/", "*") and name not in names:
                    names.append(name)
            docs.append(doc or "")
        return names, "\n".join(docs)
    params = inspect.signature(obj).parameters
    return [n for n in params if n not in ("self", "cls") and not n.startswith("_")], obj.__doc__ or ""


def public_callables():
    """(name, object, parameters, docstring) of every public function, class and method of the package: the names
    of __all__ and the classes and functions the package defines or re-exports, with their public methods (static
    and class methods included); a class's parameters are its constructor's."""
    out = []
    for name in sorted(dir(ds)):
        obj = getattr(ds, name)
        if name.startswith("_") or inspect.ismodule(obj) or not callable(obj):
            continue
        if name not in ds.__all__ and not getattr(obj, "__module__", "").startswith("diffsample"):
            continue
        if inspect.isclass(obj):
            init = vars(obj).get("__init__")  # a Python or nanobind constructor (not a slot wrapper)
            documented_init = inspect.isfunction(init) or hasattr(init, "__nb_signature__")
            params = _parameters(init)[0] if documented_init and not issubclass(obj, BaseException) else []
            out.append((name, obj, params, obj.__doc__ or ""))
            if issubclass(obj, BaseException):
                continue
            for member, attr in vars(obj).items():
                if member.startswith("_"):
                    continue
                if isinstance(attr, (staticmethod, classmethod)):
                    attr = attr.__func__
                if isinstance(attr, property) or not callable(attr):
                    continue
                out.append((name + "." + member, attr, *_parameters(attr)))
        else:
            out.append((name, obj, *_parameters(obj)))
    return out


def test_public_callables_are_found():
    names = {c[0] for c in public_callables()}
    for expected in ("diffusion", "GaussianMixture", "GaussianMixture.score", "GaussianMixture.grid",
                     "SamplingPlan.run", "SamplingPlan.guided", "DiffusionPlan.step", "NoiseSchedule.with_grid",
                     "ObservationOperator.mask", "resample", "cuda_available"):
        assert expected in names, expected


@pytest.mark.parametrize("name", sorted(c[0] for c in public_callables()))
def test_every_public_callable_documents_its_parameters(name):
    _, obj, params, doc = next(c for c in public_callables() if c[0] == name)
    assert doc.strip(), f"{name}: no docstring"
    missing = [p for p in params if not re.search(rf"(?<![\w.]){re.escape(p)}(?!\w)", doc)]
    assert not missing, f"{name}: its docstring does not name the parameter(s) {missing}: {doc!r}"
