"""The typed stub of the extension (diffsample/_core.pyi, nanobind's stubgen at build time) against the extension
itself: every function, method, constructor and property setter of the stub has the runtime's parameters (names,
order, positional-only markers, defaults) and types, overload by overload, and every callable of the extension is in
the stub, so a stale or hand-edited stub fails here. The problem-data parameters are typed with the aliases of
diffsample/typing.py, never as a bare `object`, and those aliases describe what the binding accepts: values of each
alternative are read, values outside them are refused."""
import ast
import collections.abc
import importlib.util
import pathlib
import re
import subprocess
import sys
import typing

import numpy as np
import pytest

import diffsample as ds
import diffsample.typing as dst

core = ds._core
STUB = pathlib.Path(core.__file__).with_name("_core.pyi")


# ---- the stub ------------------------------------------------------------------------------------------------------


def _decorators(fn):
    return [ast.unparse(d) for d in fn.decorator_list]


def stub_entries():
    """{qualified name: [(kind, FunctionDef)]} of the stub: kind 'function' (overloads in order) or 'setter'."""
    tree = ast.parse(STUB.read_text())
    out = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")
            elif isinstance(node, ast.FunctionDef):
                decorators = _decorators(node)
                if "property" in decorators:
                    out.setdefault(prefix + node.name + ".fget", []).append(("getter", node))
                elif any(d.endswith(".setter") for d in decorators):
                    out.setdefault(prefix + node.name + ".fset", []).append(("setter", node))
                else:
                    out.setdefault(prefix + node.name, []).append(("function", node))

    visit(tree.body, "")
    return out


def stub_parameters(fn):
    """[(name, kind, annotation text, default text or None)] of a stub def, self/cls left out."""
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    out = []
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        kind = "positional-only" if i < len(a.posonlyargs) else "positional"
        out.append((arg.arg, kind, ast.unparse(arg.annotation) if arg.annotation else None, default))
    if a.vararg:
        out.append(("*" + a.vararg.arg, "var", ast.unparse(a.vararg.annotation) if a.vararg.annotation else None, None))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "keyword-only", ast.unparse(arg.annotation) if arg.annotation else None,
                    ast.unparse(default) if default is not None else None))
    if a.kwarg:
        out.append(("**" + a.kwarg.arg, "var", ast.unparse(a.kwarg.annotation) if a.kwarg.annotation else None, None))
    if out and out[0][0] in ("self", "cls"):
        out = out[1:]
    return out, ast.unparse(fn.returns) if fn.returns else None


# ---- the runtime ---------------------------------------------------------------------------------------------------


def _split_top(text, sep=","):
    depth, part, parts = 0, "", []
    for c in text:
        depth += 1 if c in "[(" else -1 if c in "])" else 0
        if c == sep and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += c
    parts.append(part)
    return [p.strip() for p in parts if p.strip()]


def runtime_parameters(sig, defaults):
    """[(name, kind, annotation text, default object or None)] and the return annotation of a nanobind signature
    string ('def name(a: int, b: float = \\0, /) -> R'); placeholders \\N index the signature's defaults."""
    inner = sig[sig.index("(") + 1:sig.rindex(") -> ")]
    ret = sig[sig.rindex(") -> ") + 5:]
    parts = _split_top(inner)
    out = []
    mode = "positional"
    if "/" in parts:
        mode = "positional-only"
    for p in parts:
        if p == "/":
            mode = "positional"
            continue
        if p == "*":
            mode = "keyword-only"
            continue
        default = None
        if "=" in p and re.search(r"= \\(\d+)$", p):
            m = re.search(r"\s*= \\(\d+)$", p)
            default = ("value", defaults[int(m.group(1))])
            p = p[:m.start()]
        elif re.search(r"\s=\s", p):  # a signature written out (nb::sig): the default as text
            p, _, text = p.partition(" = ")
            default = ("value", eval(text, dict(vars(core))))
        name, _, annotation = p.partition(":")
        name = name.strip()
        kind = "var" if name.startswith("*") else mode
        out.append((name, kind, annotation.strip() or None, default))
    if out and out[0][0] in ("self", "cls"):
        out = out[1:]
    return out, ret


def runtime_entries():
    """{qualified name: nanobind function} of every callable the extension binds: module functions, class methods,
    static methods, constructors and property getters and setters (enums and exceptions are Python classes)."""
    out = {}
    for name, obj in vars(core).items():
        if name.startswith("_"):  # private (_read_host): stubgen leaves them out
            continue
        if hasattr(obj, "__nb_signature__"):
            out[name] = obj
        elif isinstance(obj, type) and obj.__module__.split(".")[-1] == "_core" and "__nb_enum__" not in vars(obj):
            for member, attr in vars(obj).items():
                if member.startswith("_") and member != "__init__":
                    continue
                if isinstance(attr, property):
                    for which in ("fget", "fset"):
                        f = getattr(attr, which)
                        if f is not None:
                            out[f"{name}.{member}.{which}"] = f
                elif hasattr(attr, "__nb_signature__"):
                    out[f"{name}.{member}"] = attr
    return out


# ---- comparing types -----------------------------------------------------------------------------------------------

_QUALIFIED = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


def _plain(annotation):
    """An annotation without module qualifiers ('diffsample._core.Quantity' -> 'Quantity')."""
    return _QUALIFIED.sub(r"\1", annotation or "").replace(" ", "")


def same_type(runtime, stub):
    """Whether a stub annotation renders the runtime's (nanobind's array types are rewritten by stubgen: an
    ArrayLike (nb::array_api) parameter as Any, a NumPy ndarray as NDArray, with the read-only flag)."""
    if runtime is None or stub is None:
        return runtime == stub
    if "ArrayLike[" in runtime:
        return ("Any" in stub and "NDArray" not in stub and
                ("writable=False" in runtime) == ("writable=False" in stub))
    if "ndarray" in runtime:
        return "NDArray" in stub and ("writable=False" in runtime) == ("writable=False" in stub)
    return _plain(runtime) == _plain(stub)


def same_default(runtime, stub_text):
    if runtime is None or stub_text is None:
        return runtime is None and stub_text is None
    value = runtime[1]
    stub_value = eval(stub_text, dict(vars(core)))  # the stub's defaults name the module's own enums
    return type(stub_value) is type(value) and stub_value == value


def compare(name, runtime_fn, stub_defs):
    """Every difference between a runtime callable's signatures and its stub defs, as text."""
    sigs = runtime_fn.__nb_signature__
    problems = []
    if len(sigs) != len(stub_defs):
        return [f"{name}: {len(sigs)} runtime signature(s), {len(stub_defs)} in the stub"]
    for k, ((sig, _, defaults), (_, fn)) in enumerate(zip(sigs, stub_defs)):
        where = f"{name}" + (f" (overload {k})" if len(sigs) > 1 else "")
        rt, rt_ret = runtime_parameters(sig, defaults)
        st, st_ret = stub_parameters(fn)
        if [(p[0], p[1]) for p in rt] != [(p[0], p[1]) for p in st]:
            problems.append(f"{where}: parameters {[(p[0], p[1]) for p in rt]} at runtime, "
                            f"{[(p[0], p[1]) for p in st]} in the stub")
            continue
        for (pname, _, rt_ann, rt_def), (_, _, st_ann, st_def) in zip(rt, st):
            if not same_type(rt_ann, st_ann):
                problems.append(f"{where}: {pname}: type {rt_ann!r} at runtime, {st_ann!r} in the stub")
            if not same_default(rt_def, st_def):
                problems.append(f"{where}: {pname}: default {rt_def and rt_def[1]!r} at runtime, {st_def!r} in "
                                f"the stub")
        if not same_type(rt_ret, st_ret):
            problems.append(f"{where}: returns {rt_ret!r} at runtime, {st_ret!r} in the stub")
    return problems


# ---- tests ---------------------------------------------------------------------------------------------------------


def test_the_package_ships_the_stub():
    assert STUB.is_file(), f"{STUB}: missing (python/CMakeLists.txt installs it beside the extension)"
    assert (STUB.parent / "py.typed").is_file()


def test_the_comparison_reads_both_sides():
    rt, st = runtime_entries(), stub_entries()
    for name in ("ObservationOperator.dense", "ObservationOperator.mask", "MixturePosterior.__init__",
                 "GuidedProblems.A.fset", "GuidedProblems.A.fget", "guided_sample", "GaussianMixtureCore.__init__",
                 "component_weights", "NoiseSchedule.vp_linear"):
        assert name in rt and name in st, name
    assert len(st["component_weights"]) == 2  # overloads in order
    params, ret = runtime_parameters(*core.ObservationOperator.mask.__nb_signature__[0][::2])
    assert params == [("d_x", "positional", "int", None), ("indices", "positional", "ProblemIndices", None),
                      ("diagonal", "positional", "ProblemData | None", ("value", None))]
    assert ret == "diffsample._core.ObservationOperator"


def test_every_stub_signature_is_the_extensions():
    rt, st = runtime_entries(), stub_entries()
    problems = []
    for name, defs in sorted(st.items()):
        if name not in rt:
            problems.append(f"{name}: in the stub, not in the extension")
            continue
        problems += compare(name, rt[name], defs)
    for name in sorted(set(rt) - set(st)):
        problems.append(f"{name}: in the extension, not in the stub")
    assert not problems, "the stub differs from the extension:\n" + "\n".join(problems)


def test_the_stub_detects_a_renamed_parameter(tmp_path, monkeypatch):
    # The check itself: the shipped stub with one parameter renamed and one default changed is reported.
    text = STUB.read_text()
    assert "def dense(A: ProblemData)" in text and "sigma_y: ProblemScalar, y: ProblemData" in text
    changed = tmp_path / "_core.pyi"
    changed.write_text(text.replace("def dense(A: ProblemData)", "def dense(matrix: ProblemData)")
                       .replace("first_index: int = 0", "first_index: int = 1", 1))
    monkeypatch.setattr(sys.modules[__name__], "STUB", changed)
    st, rt = stub_entries(), runtime_entries()
    assert compare("ObservationOperator.dense", rt["ObservationOperator.dense"], st["ObservationOperator.dense"])
    assert any(compare(n, rt[n], st[n]) for n in st if n in rt and n != "ObservationOperator.dense")


def test_array_parameters_are_not_typed_as_numpy_arrays():
    # The binding reads and writes any DLPack array (NumPy, PyTorch, JAX, CuPy): its array parameters are
    # nb::array_api arrays, which the stub types as Any (NumPy's NDArray would make a type checker refuse tensors);
    # a read-only input keeps its flag. Only the host-side results (NumPy arrays the binding makes) are NDArray.
    st = stub_entries()
    params = {f"{n}: {p[0]}": p[2] for n, defs in st.items() for _, fn in defs for p in stub_parameters(fn)[0]}
    numpy_typed = [k for k, ann in params.items() if ann and "NDArray" in ann]
    assert not numpy_typed, f"array parameters typed as NumPy arrays: {numpy_typed}"
    assert params["GaussianMixtureCore.evaluate: x"] == "Annotated[Any, dict(writable=False)]"
    assert params["GaussianMixtureCore.evaluate: out"] == "Any"
    assert params["resample: ancestors"] == "Any | None"


# Every problem-data parameter of the extension and its alias.
PROBLEM_DATA = {
    "GaussianMixtureCore.__init__": {"weights": "ProblemData", "means": "ProblemData", "variances": "ProblemData"},
    "GaussianMixtureCore.empirical": {"points": "ProblemData"},
    "GaussianMixtureCore.grid": {"weights": "ProblemData | None"},
    "ObservationOperator.dense": {"A": "ProblemData"},
    "ObservationOperator.mask": {"indices": "ProblemIndices", "diagonal": "ProblemData | None"},
    "ObservationOperator.svd": {"U": "ProblemData", "singular_values": "ProblemData", "V": "ProblemData"},
    "MixturePosterior.__init__": {"sigma_y": "ProblemScalar", "y": "ProblemData"},
    "GuidedProblems.A.fset": {"arg": "ProblemData"},
    "GuidedProblems.y.fset": {"arg": "ProblemData"},
    "GuidedProblems.sigma_y.fset": {"arg": "ProblemData"},
}


def test_problem_data_parameters_are_typed_with_the_aliases():
    st = stub_entries()
    for name, params in PROBLEM_DATA.items():
        got = {p[0]: p[2] for p in stub_parameters(st[name][0][1])[0]}
        for pname, alias in params.items():
            assert got[pname] == alias, f"{name}: {pname}: {got[pname]!r} in the stub, expected {alias!r}"
    # No parameter of the stub is left as a bare object, and the aliases come from diffsample.typing.
    bare = [f"{n}: {p[0]}" for n, defs in st.items() for _, fn in defs for p in stub_parameters(fn)[0]
            if p[2] is not None and re.fullmatch(r"object( \| None)?", p[2])]
    assert not bare, f"parameters typed as object in the stub: {bare}"
    # Nor a result (the plans' views of their memory are arrays of the executor's kind: Any).
    results = [n for n, defs in st.items() for _, fn in defs if stub_parameters(fn)[1] == "object"]
    assert not results, f"results typed as object in the stub: {results}"
    assert "from .typing import ProblemData, ProblemIndices, ProblemScalar" in STUB.read_text()


# ---- the aliases against what the binding reads --------------------------------------------------------------------


def conforms(value, tp, seen=()):
    """Whether value is of the alias tp structurally (Unions, the protocols by their methods, float (int too, as type
    checkers read it), Sequence[...] item by item, the recursive NestedReals)."""
    if isinstance(tp, typing.ForwardRef):
        tp = getattr(dst, tp.__forward_arg__)
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        return any(conforms(value, arg) for arg in typing.get_args(tp))
    if origin is collections.abc.Sequence:
        (item,) = typing.get_args(tp)
        return (isinstance(value, collections.abc.Sequence) and not isinstance(value, (str, bytes))
                and all(conforms(v, item) for v in value))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type) and issubclass(tp, typing.Protocol):
        names = [n for n in vars(tp) if n.startswith("__array") or n.startswith("__dlpack")]
        return all(hasattr(value, n) for n in names)
    raise AssertionError(f"unexpected type {tp!r}")


class DLPackOnly:
    """An array known to the binding by __dlpack__ alone."""

    def __init__(self, a):
        self._a = np.asarray(a, dtype=np.float64)

    def __dlpack__(self, *args, **kwargs):
        return self._a.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class ArrayMethodOnly:
    """An array known by __array__ alone (NumPy's conversion)."""

    def __init__(self, a):
        self._a = np.asarray(a, dtype=np.float64)

    def __array__(self, dtype=None, copy=None):
        return self._a


class ArrayInterfaceOnly:
    """An array known by __array_interface__ alone."""

    def __init__(self, a):
        self._a = np.ascontiguousarray(a, dtype=np.float64)
        self.__array_interface__ = self._a.__array_interface__


def read(value, ndims, expected="(test)"):
    return core._read_host(value, "v", list(ndims), expected)


def test_values_of_each_alternative_are_read():
    M = [[1.0, 2.0], [3.0, 4.0]]
    data = [np.array(M), np.array(M, dtype=np.float32), np.array(M, dtype=np.int32).T, DLPackOnly(M),
            ArrayMethodOnly(M), ArrayInterfaceOnly(M), M, [np.array([1.0, 2.0]), [3, 4]], (1.5, 2), 2.5, 3]
    for value in data:
        assert conforms(value, dst.ProblemData), value
        got = read(value, (0, 1, 2))
        assert got.dtype == np.float64 and got.size >= 1
    np.testing.assert_array_equal(read(DLPackOnly(M), (2,)), M)
    np.testing.assert_array_equal(read(ArrayMethodOnly(M), (2,)), M)
    np.testing.assert_array_equal(read(ArrayInterfaceOnly(M), (2,)), M)
    for value in (0.5, 2, np.float32(0.5), np.array(0.5), DLPackOnly(0.5)):
        assert conforms(value, dst.ProblemScalar), value
        assert read(value, (0,)).shape == ()
    for value in ([0, 2], (1,), np.array([0, 2]), np.array([1], dtype=np.uint8)):
        assert conforms(value, dst.ProblemIndices), value
        op = core.ObservationOperator.mask(3, value)
        assert op.d_y == len(value)


def test_values_outside_the_aliases_are_refused():
    # None, a dict, a complex number, a set: outside every alias, and refused by the binding naming the argument.
    for value in (None, {"a": 1.0}, 1 + 2j, {1.0, 2.0}, object()):
        assert not conforms(value, dst.ProblemData), value
        with pytest.raises(ds.InvalidArgument, match=r"^v: "):
            read(value, (0, 1, 2))
    # A sequence as a scalar, floats as indices.
    assert not conforms([0.5], dst.ProblemScalar)
    with pytest.raises(ds.InvalidArgument, match=r"^v: shape \(1,\), expected a scalar"):
        read([0.5], (0,), "a scalar")
    assert not conforms([0.5, 1.5], dst.ProblemIndices)
    with pytest.raises(ds.InvalidArgument, match=r"^indices: dtype float64, expected an integer dtype"):
        core.ObservationOperator.mask(3, [0.5, 1.5])


_USAGE = '''
import numpy as np
import diffsample as ds
from diffsample import _core

A = np.array([[1.0, 0.5]])
op = _core.ObservationOperator.dense(A)
mask = _core.ObservationOperator.mask(3, [0, 2], [1.0, 2.0])
svd = _core.ObservationOperator.svd([[1.0]], [2.0], [[1.0], [0.0]])
g = _core.GaussianMixtureCore(2, [0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], np.ones(2, dtype=np.float32))
post = _core.MixturePosterior(g, op, np.float64(0.5), [0.25])
problems = _core.GuidedProblems()
problems.A = A
problems.y = [[0.25]]
problems.sigma_y = 0.5
prior = ds.GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [0.5, 0.5])
p = ds.MixturePosterior(prior, [[1.0, 0.0]], 0.5, np.zeros(1))
out = ds.guided_sample(prior, (op, A), [[0.25], [0.5]], [0.5, 0.25], particles=8)
print(mask.d_y, svd.d_y, post.dim, problems.d_y, p.dim, len(out))
'''
_MISUSE = '''
from diffsample import _core
op = _core.ObservationOperator.dense([[1.0]])
g = _core.GaussianMixtureCore(1, [1.0], [[0.0]], [1.0])
_core.MixturePosterior(g, op, [0.5], [0.25])
_core.ObservationOperator.mask(3, [0.5, 1.5])
_core.ObservationOperator.dense(None)
_core.ObservationOperator.dense(1 + 2j)
'''


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_strict_reads_the_stub(tmp_path):
    # Typed usage passes mypy --strict; each misuse (a list as sigma_y's scalar, float indices, None, a complex
    # number) is reported on its line. mypy comes with scripts/install-deps.sh; the test skips without it.
    (tmp_path / "usage.py").write_text(_USAGE)
    (tmp_path / "misuse.py").write_text(_MISUSE)
    run = lambda f: subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(f)],
                                   capture_output=True, text=True, cwd=tmp_path)
    ok = run(tmp_path / "usage.py")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = run(tmp_path / "misuse.py")
    lines = [l for l in bad.stdout.splitlines() if ": error:" in l]
    assert sorted({int(l.split(":")[1]) for l in lines}) == [5, 6, 7, 8], bad.stdout
