"""diffsample.limits: the size limits of include/diffsample/limits.hpp, bound from the compiled C++ constants (not
retyped), and the generated docstrings' references to them, which name the Python constants with their values."""
import inspect
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import diffsample as ds

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import docstrings  # noqa: E402

HEADERS = sorted((ROOT / "include" / "diffsample").glob("*.hpp"))
# name -> value, evaluated from the initialisers' text in limits.hpp (independently of the compiled module).
HEADER_VALUES = docstrings.limits(HEADERS)


def public_limits():
    return {name: value for name, value in vars(ds.limits).items() if not name.startswith("_")}


def test_every_limit_of_the_header_is_bound_with_its_value():
    assert len(HEADER_VALUES) >= 20 and "max_steps" in HEADER_VALUES
    bound = public_limits()
    assert set(bound) == set(HEADER_VALUES)
    for name, value in HEADER_VALUES.items():
        assert type(bound[name]) is int, name
        assert bound[name] == value, f"diffsample.limits.{name} = {bound[name]}, limits.hpp says {value}"


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def test_values_equal_the_compiled_cpp_constants(tmp_path):
    # The C++ compiler's own values of diffsample::limits, printed by a program built against the header.
    cxx = _compiler()
    if cxx is None:
        pytest.skip("no C++ compiler to build the reference program")
    source = tmp_path / "limits.cpp"
    source.write_text("#include <diffsample/limits.hpp>\n#include <cstdio>\nint main() {\n" + "".join(
        f'  std::printf("{name} %lld\\n", static_cast<long long>(diffsample::limits::{name}));\n'
        for name in HEADER_VALUES) + "}\n")
    exe = tmp_path / "limits"
    subprocess.run([cxx, "-std=c++17", "-I", str(ROOT / "include"), str(source), "-o", str(exe)], check=True)
    printed = dict(line.split() for line in subprocess.run([str(exe)], check=True, capture_output=True,
                                                           text=True).stdout.splitlines())
    assert {name: int(v) for name, v in printed.items()} == public_limits()


def test_limits_import_as_a_module():
    import diffsample.limits as limits
    from diffsample.limits import max_stream_steps

    assert limits is ds.limits and max_stream_steps == ds.limits.max_stream_steps
    doc = ds.limits.__doc__
    for name, value in HEADER_VALUES.items():
        assert re.search(rf"^{name} = {value}\b", doc, re.M), f"{name} missing from diffsample.limits' docstring"


def _core_docstrings():
    """Every docstring of diffsample._core: its functions, classes, their members and properties."""
    docs = {}
    for name, obj in vars(ds._core).items():
        if name.startswith("__"):
            continue
        if getattr(obj, "__doc__", None):
            docs[name] = obj.__doc__
        if inspect.isclass(obj):
            for member, attr in vars(obj).items():
                doc = getattr(attr, "__doc__", None)
                if not member.startswith("__") and isinstance(doc, str):
                    docs[name + "." + member] = doc
    return docs


def test_generated_docstrings_name_the_python_limits():
    docs = _core_docstrings()
    refs = 0
    for where, doc in docs.items():
        assert "limits::" not in doc, f"{where}: a C++ constant name left in {doc!r}"
        for name, text in re.findall(r"diffsample\.limits\.([A-Za-z_0-9]+) \(([^)]*)\)", doc):
            assert name in HEADER_VALUES, f"{where}: diffsample.limits.{name} does not exist"
            assert text == docstrings.limit_text(getattr(ds.limits, name)), f"{where}: {name} ({text})"
            refs += 1
    assert refs > 0
    assert ds.GuidedOptions.steps.__doc__.startswith(
        f"transitions, 1..diffsample.limits.max_steps (2^{ds.limits.max_steps.bit_length() - 1})")


def test_the_limits_parser(tmp_path):
    h = tmp_path / "limits.hpp"
    h.write_text("namespace diffsample::limits {\n"
                 "/// A.\n"
                 "inline constexpr std::int64_t max_a = std::int64_t(1) << 24;\n"
                 "/// B.\n"
                 "inline constexpr std::int64_t max_b = (std::int64_t(1) << 62) - 1;\n"
                 "inline constexpr std::int64_t max_c = 1024;  // a comment\n"
                 "}\n")
    values = docstrings.limits([h])
    assert values == {"max_a": 1 << 24, "max_b": (1 << 62) - 1, "max_c": 1024}
    assert [docstrings.limit_text(v) for v in values.values()] == ["2^24", "2^62 - 1", "1024"]
    assert (docstrings.python_text("1..limits::max_a, <= limits::max_c - 1, limits::other", values) ==
            "1..diffsample.limits.max_a (2^24), <= diffsample.limits.max_c (1024) - 1, limits::other")
    h.write_text("inline constexpr int max_d = 3;\n")
    with pytest.raises(ValueError, match="max_d"):
        docstrings.limits([h])
