"""The Python docstrings of diffsample._core from the C++ headers' Doxygen comments (one text for both).

Reads include/diffsample/*.hpp and collects the documentation comment of every documented declaration: the `///`
lines before it or the `///<` comment after it (continued on `///<` lines below), keyed by its scope and name,
`langevin_options::step_size`, `sampling_plan::tell`, `gaussian_mixture::evaluate`; an overloaded name's first
documented declaration has that key and the k-th `name#k` (`mixture_posterior::sample#3`, DS_DOC_OVERLOAD(scope,
name, k) in the bindings). As a script it writes a C++ header that python/src/core.cpp includes (python/CMakeLists.txt runs
it at every build, so the extension's docstrings are the headers' text of that build):

    python3 python/docstrings.py OUT.hpp [--limits-stub limits.pyi] include/diffsample/*.hpp

`DS_DOC(langevin_options, step_size)` in the bindings is then that comment as a C string, and a name without a
comment does not compile. tests/python/test_docstrings.py checks the built module against the headers.

The headers name the size limits of include/diffsample/limits.hpp as C++ constants (`limits::max_steps`); Python has
them as diffsample.limits, bound from those constants. The comments' references read as the Python names with their
values ("diffsample.limits.max_steps (2^24)"), and the generated header also lists the limits' names
(`DS_LIMITS(X)`: X(max_dim) X(max_components) ...) and the module's docstring (`DS_LIMITS_DOC`) for the binding;
--limits-stub also writes the module's typed stub (nanobind's stubgen sees it only as an attribute of _core).
"""
import ast
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCOPE = re.compile(r"^\s*(?:struct|class)\s+(?:DIFFSAMPLE_API\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?:final\s*)?(?::[^{]*)?\{")
_ENUM = re.compile(r"^\s*enum\s+class\s+([A-Za-z_][A-Za-z0-9_]*)")
_SKIP = {"const", "noexcept", "override", "static", "inline", "constexpr", "explicit", "operator", "DIFFSAMPLE_API",
         "return", "if", "template", "typename"}


def _code(line: str) -> str:
    """The line without comments and string literals (for brace counting and names)."""
    line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
    return line.split("//", 1)[0]


def _declared_name(code: str) -> str:
    """The name a declaration line introduces: a function's name before its '(', else the last identifier before
    '=', '{', ';' or ','; '' when there is none."""
    code = re.sub(r"\[\[[^\]]*\]\]", "", code)  # attributes ([[deprecated("...")]])
    if re.search(r"(?<![A-Za-z0-9_])operator(?![A-Za-z0-9_])", code):
        return ""  # an operator overload (operator=, operator()), not a name that contains "operator"
    paren, equal = code.find("("), code.find("=")
    if equal >= 0 and (paren < 0 or equal < paren):
        paren = -1  # a member with an initialiser: `noise_schedule schedule = noise_schedule::vp_linear();`
    head = code[:paren] if paren >= 0 else re.split(r"[={;,]", code, maxsplit=1)[0]
    names = [n for n in _IDENT.findall(head) if n not in _SKIP]
    return names[-1] if names else ""


def _clean(lines: List[str]) -> str:
    text = "\n".join(l.rstrip() for l in lines).strip()
    return text.replace("@brief ", "")


def parse(paths: Iterable[Path]) -> Dict[str, str]:
    """Every documented declaration of the headers: 'scope::name' (or 'name' at namespace scope) -> its comment."""
    docs: Dict[str, str] = {}
    documented: Dict[str, int] = {}  # documented declarations of each key so far (overloads)
    for path in paths:
        scopes: List[tuple] = []  # (name, brace depth inside it)
        depth = 0
        pending: List[str] = []
        last_key = ""
        for raw in Path(path).read_text().splitlines():
            stripped = raw.strip()
            if stripped.startswith("///<"):
                if last_key:
                    docs[last_key] = docs[last_key] + "\n" + stripped[4:].strip()
                continue
            if stripped.startswith("///"):
                pending.append(stripped[3:].lstrip() if not stripped.startswith("/// ") else stripped[4:])
                continue
            code = _code(raw)
            last_key = ""
            scope = ".".join(s[0] for s in scopes)
            m_scope = _SCOPE.match(code)
            m_enum = _ENUM.match(code)
            name = m_scope.group(1) if m_scope else m_enum.group(1) if m_enum else _declared_name(code)
            key = (scope.replace(".", "::") + "::" + name) if scope and name else name
            trailing = raw.split("///<", 1)[1].strip() if "///<" in raw else None
            if name and stripped and not stripped.startswith(("//", "#", "}", "public:", "private:", "protected:")):
                text = trailing if trailing is not None else _clean(pending) if pending else None
                if text is not None:
                    documented[key] = documented.get(key, 0) + 1
                    if documented[key] > 1:  # an overload: its own key, 'scope::name#k'
                        key = f"{key}#{documented[key]}"
                    docs.setdefault(key, text)
                    last_key = key if trailing is not None and docs[key] == text else ""
            if stripped and not stripped.startswith("//"):
                pending = []
            opened = code.count("{") - code.count("}")
            if m_scope or m_enum:
                scopes.append((name, depth + 1))
            depth += opened
            while scopes and depth < scopes[-1][1]:
                scopes.pop()
    values = limits(paths)
    return {key: python_text(text, values) for key, text in docs.items()}


_LIMIT = re.compile(r"^inline constexpr std::int64_t ([A-Za-z_][A-Za-z0-9_]*) = (.+);$")
_LIMIT_REF = re.compile(r"\blimits::([A-Za-z_][A-Za-z0-9_]*)")


def _integer(expression: str) -> int:
    """The value of a limit's initialiser: integer literals, std::int64_t(...) casts, <<, +, -, * and parentheses."""
    tree = ast.parse(expression.replace("std::int64_t(", "("), mode="eval")

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp):
            ops = {ast.LShift: lambda a, b: a << b, ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
                   ast.Mult: lambda a, b: a * b}
            if type(node.op) in ops:
                return ops[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"limits.hpp: cannot evaluate {expression!r} ({ast.dump(node)})")

    return value(tree.body)


def limits(paths: Iterable[Path]) -> Dict[str, int]:
    """Every constant of limits.hpp among the paths (namespace diffsample::limits): name -> value, in header order.
    A constexpr line of another form is an error, so no limit is left out unnoticed."""
    out: Dict[str, int] = {}
    for path in paths:
        if Path(path).name != "limits.hpp":
            continue
        for raw in Path(path).read_text().splitlines():
            code = _code(raw).strip()
            if "constexpr" not in code:
                continue
            m = _LIMIT.match(code)
            if m is None:
                raise ValueError(f"{path}: a limit not of the form 'inline constexpr std::int64_t name = value;': "
                                 f"{raw!r}")
            out[m.group(1)] = _integer(m.group(2))
    return out


def limit_text(value: int) -> str:
    """A limit's value as the library's messages word it: 2^k, 2^k - 1 for the large ones, else decimal."""
    for k in range(16, 64):
        if value == 1 << k:
            return f"2^{k}"
        if value == (1 << k) - 1:
            return f"2^{k} - 1"
    return str(value)


# The exceptions of error.hpp under their Python names (diffsample.InvalidArgument, ...).
_EXCEPTIONS = {"invalid_argument": "InvalidArgument", "out_of_memory": "OutOfMemory", "cuda_error": "CudaError",
               "error": "Error"}


def _doxygen(text: str) -> str:
    """A comment's Doxygen commands in words: `@throws invalid_argument when ...` as `Raises InvalidArgument when
    ...` (the Python exception), `@return x` as `Returns x`, `@param name  text` as `name: text`, `@p name` as
    the name."""
    text = re.sub(r"@throws\s+([A-Za-z_]+)", lambda m: "Raises " + _EXCEPTIONS.get(m.group(1), m.group(1)), text)
    text = re.sub(r"@returns?\b", "Returns", text)
    text = re.sub(r"@param\s+([A-Za-z_][A-Za-z0-9_, ]*?)\s{2,}|@param\s+([A-Za-z_][A-Za-z0-9_]*)\s",
                  lambda m: (m.group(1) or m.group(2)) + ": ", text)
    return re.sub(r"@p\s+([A-Za-z_])", r"\1", text)


def python_text(text: str, values: Dict[str, int]) -> str:
    """A comment as Python's docstrings read it: its `limits::name` references as the Python names with their values
    (names not among the limits are left as they are) and its Doxygen commands in words (_doxygen)."""
    def ref(m: "re.Match") -> str:
        name = m.group(1)
        if name not in values:
            return m.group(0)
        return f"diffsample.limits.{name} ({limit_text(values[name])})"

    return _doxygen(_LIMIT_REF.sub(ref, text))


def limits_doc(docs: Dict[str, str], values: Dict[str, int]) -> str:
    """The docstring of diffsample.limits: the namespace's comment, then each limit with its value and comment."""
    lines = [docs.get("limits", "The size and count limits of the public API."), "",
             "Values beyond a limit are refused with InvalidArgument naming the argument, its value and the limit.",
             ""]
    for name, value in values.items():
        text = limit_text(value)
        lines.append(f"{name} = {value}" + (f" ({text})" if text != str(value) else "") + ": " +
                     docs.get(name, "").replace("\n", " "))
    return "\n".join(lines)


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def header(docs: Dict[str, str], values: Dict[str, int]) -> str:
    lines = ["// Generated by python/docstrings.py from include/diffsample/*.hpp: do not edit.", "#pragma once", ""]
    for key in sorted(docs):
        lines.append("#define DS_DOC_" + key.replace("::", "__").replace("#", "__") + " " + _c_string(docs[key]))
    lines += ["", "/// The constants of diffsample::limits (limits.hpp), as X(name) for each.",
              "#define DS_LIMITS(X) " + " ".join(f"X({name})" for name in values),
              "/// The docstring of the Python module diffsample.limits.",
              "#define DS_LIMITS_DOC " + _c_string(limits_doc(docs, values))]
    lines += ["", "/// The Doxygen comment of scope::name in the public headers, as a C string.",
              "#define DS_DOC(scope, name) DS_DOC_##scope##__##name",
              "/// The comment of the k-th documented declaration of scope::name (k >= 2: an overload).",
              "#define DS_DOC_OVERLOAD(scope, name, k) DS_DOC_##scope##__##name##__##k",
              "/// The Doxygen comment of a declaration at namespace scope.", "#define DS_DOC_FREE(name) DS_DOC_##name",
              ""]
    return "\n".join(lines)


def limits_stub(docs: Dict[str, str], values: Dict[str, int]) -> str:
    """The typed stub of diffsample.limits (limits.pyi): each constant with its value and comment."""
    lines = ['"""' + limits_doc(docs, values) + '\n"""', ""]
    for name, value in values.items():
        lines += [f"{name}: int = {value}", '"""' + docs.get(name, "") + '"""', ""]
    return "\n".join(lines)


def _write(out: Path, text: str) -> None:
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def main(argv: List[str]) -> int:
    """OUT.hpp [--limits-stub OUT.pyi] HEADER..."""
    out, rest = Path(argv[1]), argv[2:]
    stub = None
    if rest[:1] == ["--limits-stub"]:
        stub, rest = Path(rest[1]), rest[2:]
    headers = [Path(p) for p in rest]
    docs, values = parse(headers), limits(headers)
    _write(out, header(docs, values))
    if stub is not None:
        _write(stub, limits_stub(docs, values))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
