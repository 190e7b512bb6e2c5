"""diffsample: Python bindings of libdiffsample.

Fused Langevin, reverse-diffusion and SMC posterior samplers, exact Gaussian-mixture scores and posteriors, on the
GPU (CUDA executor) or the CPU (the same kernels on the library's thread pool).

Arrays cross by DLPack in both directions without copies: NumPy arrays, PyTorch CPU and CUDA tensors, CuPy arrays
and JAX arrays (inputs) are read in place, and outputs are written into the caller's ``out=`` array or into a new
array of the input's framework on the input's device. The executor follows the arrays' device (CPU arrays: the CPU
executor; CUDA arrays: the CUDA executor, on the arrays' device, made current for the call). One rule for every
call: each array it takes is on the call's device, an array given only to say where it runs included
(``guided_sample``'s ``device=``, a ``SamplingPlan``'s ``like=``); arrays on two devices are refused, and a call
without any array runs on the CPU. On CUDA the calls run
on the framework's current stream of that device (PyTorch: ``torch.cuda.current_stream()``, CuPy:
``cupy.cuda.get_current_stream()``) unless ``stream=`` names one of that device (an int handle, a
``torch.cuda.Stream``, a ``cupy.cuda.Stream`` or any object with ``cuda_stream``, ``ptr`` or ``__cuda_stream__``;
a stream for a call on CPU arrays is refused); they are asynchronous on that stream, as in C++. Long calls release
the GIL. Errors raise ``diffsample.Error`` subclasses (``InvalidArgument`` is also a ``ValueError``) carrying the
library's message, which names the argument and value.
The size limits those messages name are ``diffsample.limits`` (``diffsample.limits.max_steps`` ...), the C++
constants of ``include/diffsample/limits.hpp``.

Every array argument is checked for dtype, shape, C-contiguity and device before anything runs; nothing is converted
(no float64 -> float32, no contiguous copy). All arrays of one call must be on one device. Arrays a call writes
(``out=``, in-place states) cannot be JAX arrays (immutable) or PyTorch tensors that require grad (pass
``t.detach()``); as inputs both are read in place.

Problem data is the exception, because the C++ API keeps its own float64 copy on the host: a mixture's weights,
means and variances, an observation operator's matrix, mask or SVD factors, and ``y`` and ``sigma_y`` of
``MixturePosterior``, ``guided_sample`` and ``SamplingPlan.guided`` are read once and copied into the problem as
float64, from any CPU array of a real dtype (NumPy, PyTorch, JAX; float16, bfloat16, float32 and integers widened
exactly; any strides) or numbers and nested sequences of numbers. CUDA arrays (copy them to the host explicitly, e.g.
``A.cpu()``), complex, bool and non-numeric data, another number of dimensions, non-finite values and integers beyond
2^53 in magnitude (no float64 holds them exactly) are refused with ``InvalidArgument`` naming the argument.
Synchronisation (as in C++): calls that run on CUDA arrays are asynchronous on their stream (they return once the
work is queued; read the results in that stream's order or after synchronising it) unless their docstring says they
synchronise: constructors that upload tables (``GaussianMixture``, ``MixturePosterior``, the plans), the first
gemm-path evaluation of a mixture on CUDA (``GaussianMixture.prepare_gemm`` does it ahead, as a CUDA graph capture
needs), and calls that return a value the kernels computed
(``sliced_wasserstein``). On the CPU every call returns when its work is done. Host-only calls (``*_fp64``,
``component_weights``) are synchronous.

The low-level module ``diffsample._core`` exposes the C++ API one to one (explicit outputs, raw stream handles).
"""
from __future__ import annotations

import collections.abc
import functools
import sys
import threading
import weakref
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .typing import ArrayObject, ProblemData, ProblemScalar
from ._core import (  # noqa: F401  (re-exported)
    CudaError,
    DiffusionOptions,
    Error,
    GuidedOptions,
    GuidedProblems,
    InvalidArgument,
    LangevinOptions,
    NoiseSchedule,
    ObservationOperator,
    OutOfMemory,
    ResamplingOptions,
    cpu_blas_name,
    cpu_threads,
    cuda_available,
    cuda_unavailable_reason,
    limits,
)

# `import diffsample.limits` and `from diffsample.limits import max_steps` find the extension's submodule.
sys.modules[__name__ + ".limits"] = limits

#: The package's version: the library's (one source, the CMake project version).
__version__: str = _core.version()

__all__ = [
    "Error", "InvalidArgument", "OutOfMemory", "CudaError",
    "GaussianMixture", "NoiseSchedule", "ObservationOperator", "MixturePosterior", "DiffusionPlan", "SamplingPlan",
    "langevin", "diffusion", "resample", "gather_particles", "guided_sample",
    "sliced_wasserstein", "component_weights", "component_weight_error",
    "cuda_available", "cuda_unavailable_reason", "cpu_threads", "cpu_blas_name",
    "PARTICLE_REPORT_DTYPE", "limits",
]

def _forward(holder: str, core_class: str, name: str) -> property:
    """A read-only property giving self.<holder>.<name>, documented as the core class's property (whose docstring is
    the C++ header's comment)."""
    core = getattr(_core, core_class, None)
    doc = getattr(core, name).__doc__ if core is not None else None
    return property(lambda self: getattr(getattr(self, holder), name), doc=doc)


Array = Any  # any DLPack-capable array: numpy.ndarray, torch.Tensor, cupy.ndarray, jax.Array
Stream = Union[None, int, Any]
# An observation operator as MixturePosterior takes it: an ObservationOperator or a (d_y, d_x) matrix.
Operator = Union[ObservationOperator, ProblemData]
# The operators of guided problems: one shared, or a list or tuple of B arrays or ObservationOperators.
Operators = Union[Operator, Sequence[Union[ObservationOperator, ArrayObject]]]

# ---- frameworks, devices, streams ----------------------------------------------------------------------------------


def _framework(x: Any) -> str:
    mod = type(x).__module__.split(".")[0]
    if mod in ("numpy", "torch", "cupy"):
        return mod
    if mod in ("jax", "jaxlib"):
        return "jax"
    return "other"


def _is_cuda(x: Any) -> bool:
    fw = _framework(x)
    if fw == "numpy":
        return False
    if fw == "torch":
        return bool(x.is_cuda)
    if fw == "cupy":
        return True
    if hasattr(x, "__dlpack_device__"):
        try:
            return int(x.__dlpack_device__()[0]) in (2, 13)  # kDLCUDA, kDLCUDAManaged
        except Exception:  # the producer cannot say (its exception reached the caller as it was): the binding's
            return False   # import reports it, naming the argument (_core._check_array)
    return False


_STREAM_KINDS = ("None (the framework's current stream), an int handle, a torch.cuda.Stream, a cupy.cuda.Stream or an "
                 "object with cuda_stream, ptr or __cuda_stream__()")


def _handle(value: Any, stream: Any, source: str) -> int:
    """A stream object's handle (source: where it came from, cuda_stream, ptr or __cuda_stream__()[1]) as an int in
    [0, 2^64 - 1], else InvalidArgument naming stream: int() would cut a float, read a str, and a negative or too
    large handle was nanobind's TypeError naming neither."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value <= _UINT64_MAX:
        raise InvalidArgument(f"stream: a {type(stream).__name__} whose {source} is {_describe(value)}, expected a "
                              f"CUDA stream handle, an integer in [0, {_UINT64_MAX}]")
    return int(value)


def _stream_handle(stream: Any) -> int:
    """The handle of a stream= argument (0 for None), checked: see _STREAM_KINDS. Where the call runs decides the
    rest (the binding: a stream for a call on CPU arrays, or of another device than the arrays', is refused)."""
    if stream is None:
        return 0
    if isinstance(stream, (int, np.integer, bool, np.bool_)):
        return _integer(stream, "stream", 0, _UINT64_MAX, "a CUDA stream handle")
    if hasattr(stream, "cuda_stream"):  # torch.cuda.Stream
        return _handle(stream.cuda_stream, stream, "cuda_stream")
    if hasattr(stream, "ptr"):  # cupy.cuda.Stream
        return _handle(stream.ptr, stream, "ptr")
    if hasattr(stream, "__cuda_stream__"):  # CUDA stream protocol: (version, handle)
        try:
            answer = stream.__cuda_stream__()
        except Exception as e:
            raise InvalidArgument(f"stream: {type(stream).__name__}.__cuda_stream__() raised {type(e).__name__}: {e}"
                                  ) from e
        if not isinstance(answer, tuple) or len(answer) != 2:
            raise InvalidArgument(f"stream: {type(stream).__name__}.__cuda_stream__() returned {_describe(answer)}, "
                                  "expected the pair (version, handle)")
        return _handle(answer[1], stream, "__cuda_stream__() handle")
    raise InvalidArgument(f"stream: {_describe(stream)} is not a CUDA stream; pass {_STREAM_KINDS}")


def _stream(x: Any, stream: Stream) -> int:
    """The stream of a call: the caller's, else the current stream of x's framework on x's device (0 on the CPU)."""
    if stream is not None:
        return _stream_handle(stream)
    if x is None or not _is_cuda(x):
        return 0
    fw = _framework(x)
    if fw == "torch":
        import torch

        return int(torch.cuda.current_stream(x.device).cuda_stream)
    if fw == "cupy":
        import cupy

        # CuPy's current stream is per device: x's device's, which need not be the current device.
        with cupy.cuda.Device(x.device.id):
            return int(cupy.cuda.get_current_stream().ptr)
    return 0


_DTYPES = {"float32": 0, "float64": 1, "int32": 2, "int64": 3, "uint8": 4}


def _count(n: Any) -> int:
    """The n of a call that allocates its output (out=None): an integer >= 0, else InvalidArgument naming n."""
    if n is None:
        raise InvalidArgument("n: None; give the number of samples n, or out= to fill")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise InvalidArgument(f"n: expected an integer >= 0, got {n!r}")
    if n < 0:
        raise InvalidArgument(f"n: must be >= 0, got {n}")
    return int(n)


def _count_agrees(n: Any, out: Any) -> None:
    """n given with out=: it must be out's number of rows (else it would be ignored without a word)."""
    if n is None:
        return
    shape = _shape(out, "out")
    rows = shape[0] if len(shape) >= 1 else None
    if _count(n) != rows:
        raise InvalidArgument(f"n: {n}, but out has {rows} rows (out= sets the number of samples; give n or out, or "
                              "the same count)")


_UINT64_MAX = 2**64 - 1
# The ranges of the binding's integer parameters (a value outside one would be nanobind's TypeError, which names
# neither the argument nor the value).
_INT64 = (-2**63, 2**63 - 1)
_INT32 = (-2**31, 2**31 - 1)


# ---- scalar arguments -----------------------------------------------------------------------------------------------
# The package's functions check their scalar arguments here, by name, before the binding sees them: nanobind's
# TypeError for a value of the wrong type or out of its C++ type names neither, and Python's own conversions would
# accept what they should not (int(1.5) is 1, float("2") is 2.0, bool("no") is True).


def _integer(value: Any, name: str, lo: int, hi: int, range_is: str = "") -> int:
    """value as a Python int in [lo, hi], else InvalidArgument naming the argument: None, a bool, a float (1.5 would
    be cut to 1 without a word) or any other non-integer is refused, as is an integer out of the range (range_is:
    what the range is, said after it)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name}: {int(value)} is outside [{lo}, {hi}]" + (f" ({range_is})" if range_is else ""))
    return int(value)


def _int64(value: Any, name: str) -> int:
    """An integer argument the binding takes as int64 (the library checks its value)."""
    return _integer(value, name, *_INT64, "the argument's integer type, int64")


def _describe(value: Any) -> str:
    """A value as an error message shows it: its type and repr (the repr alone: None, True)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"a {type(value).__name__} ({text})"


def _complex_or_bool(value: Any) -> bool:
    """Whether float() would take value with a loss: a complex number (NumPy's complex scalars convert, with a
    ComplexWarning only, to their real part; a complex tensor raised torch's RuntimeError) or a bool array or
    tensor (True read as 1.0), judged by its dtype. The binding's real arguments refuse the same (complex_or_bool)."""
    if isinstance(value, complex):
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and ("complex" in str(dtype) or "bool" in str(dtype))


def _real(value: Any, name: str) -> float:
    """A real-number argument as a Python float, else InvalidArgument naming it: None, strings (float('2') would read
    them), bools (True would be 1.0; bool arrays and tensors too), complex numbers (NumPy's complex scalars too,
    whose imaginary part float() dropped with a warning only) and anything float() does not take are refused. NumPy
    scalars, 0-d arrays and one-element tensors of a real dtype are read as float() reads them."""
    if value is None or isinstance(value, (str, bytes, bool, np.bool_)) or _complex_or_bool(value):
        raise InvalidArgument(f"{name}: {_describe(value)}, expected a real number")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(f"{name}: {_describe(value)}, expected a real number") from None


def _flag(value: Any, name: str) -> bool:
    """A boolean argument: True or False (Python's or NumPy's), else InvalidArgument naming it; a truthy string
    ('no') or number is not taken as True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidArgument(f"{name}: {_describe(value)}, expected True or False")


_ITEMSIZE = {"float32": 4, "float64": 8, "int32": 4, "int64": 8, "uint8": 1}


def _spell(limit: int) -> str:
    """A limit as the library's messages print it: "70368744177664 (2^46)" (src/limits.hpp, limits::spell)."""
    for k in range(16, 63):
        if limit == 2**k:
            return f"{limit} (2^{k})"
        if limit == 2**k - 1:
            return f"{limit} (2^{k} - 1)"
    return str(limit)


def _check_size(shape: Tuple[int, ...], dtype: str, name: str, host: bool) -> None:
    """The library's limits on an array the package is about to allocate, checked before the allocation, naming the
    argument whose value sets its size: the element count within a 64-bit byte count (as the library's calls check
    their n x d: InvalidArgument) and, for host memory, limits.max_host_bytes (the library's OutOfMemory for a
    request it refuses as absurd)."""
    elements = 1
    for extent in shape:
        elements *= extent
    if elements > (2**63 - 1) // 8:
        raise InvalidArgument(f"{name}: {' x '.join(str(e) for e in shape)} elements overflow a 64-bit byte count")
    nbytes = elements * _ITEMSIZE[dtype]
    if host and nbytes > limits.max_host_bytes:
        raise OutOfMemory(f"{name}: needs {nbytes} bytes of host memory for the {shape} {dtype} output, the limit is "
                          f"{_spell(limits.max_host_bytes)} (diffsample.limits.max_host_bytes)")


def _allocation_failed(e: BaseException) -> bool:
    """Whether an exception from a framework's allocation says the memory could not be had: NumPy's MemoryError
    (CuPy's OutOfMemoryError is one), PyTorch's OutOfMemoryError (CUDA) and the RuntimeError of its CPU allocator
    ("DefaultCPUAllocator: can't allocate memory"). Other errors (a CUDA error left by an earlier kernel, ...) are
    not: they propagate as they are."""
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def _empty(like: Any, shape: Sequence[int], dtype: str, name: Optional[str] = None, role: str = "out",
           instead: Optional[str] = None, sized_by: Optional[str] = None) -> Any:
    """A new array of like's framework and device (NumPy when like is None, a NumPy array or a CPU JAX array).
    name: the argument whose value sets the size (n, particles, ...): the size is checked against the library's
    limits first (_check_size). sized_by: instead of name, the input array whose shape sets the size (x,
    log_weights, states): its size is checked as name's, naming it, and a failed allocation names role, as without
    name. role: the array's name in the call (out, labels, ancestors, ...). An allocation the
    framework fails (host or device memory: NumPy's MemoryError, PyTorch's OutOfMemoryError or its CPU allocator's
    RuntimeError, CuPy's OutOfMemoryError) is OutOfMemory naming name (else role), with the framework's message and
    its exception as the cause. A CUDA like of a framework the package cannot allocate in (JAX, any other DLPack
    array) is InvalidArgument naming role, with instead: what to pass (default: role= itself, a CUDA array)."""
    shape = tuple(int(s) for s in shape)
    fw = _framework(like) if like is not None else "numpy"
    if name is not None or sized_by is not None:
        _check_size(shape, dtype, name or sized_by, fw not in ("torch", "cupy") or not _is_cuda(like))
    try:
        return _allocate(like, fw, shape, dtype, role, instead)
    except Exception as e:
        if not _allocation_failed(e):
            raise
        nbytes = _ITEMSIZE[dtype]
        for extent in shape:
            nbytes *= extent
        where = f" on {like.device}" if fw in ("torch", "cupy") and _is_cuda(like) else ""
        what = "output" if role == "out" or role in _GUIDED_OUTPUTS else role
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OutOfMemory(f"{name or role}: the {shape} {dtype} {what} ({nbytes} bytes) could not be allocated{where} "
                          f"({type(e).__name__}: {cause})") from e


def _allocate(like: Any, fw: str, shape: Tuple[int, ...], dtype: str, role: str, instead: Optional[str]) -> Any:
    if fw == "torch":
        import torch

        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    if fw == "cupy":
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.empty(shape, dtype=dtype)
    if like is not None and _is_cuda(like):
        # (every such output was named out, and the advice was out=, which resample and guided_sample do not take)
        raise InvalidArgument(
            f"{role}: cannot allocate a new CUDA array like a {type(like).__name__} (the package allocates CUDA "
            "arrays with PyTorch or CuPy only); "
            + (instead or f"pass {role}=, a writable CUDA array on that device (e.g. a torch or cupy array)"))
    return np.empty(shape, dtype=dtype)


def _shape(x: Any, name: str = "x") -> Tuple[int, ...]:
    """An array's shape; a buffer without a shape attribute (bytes, bytearray, array.array), which the binding reads
    through the buffer protocol, has its buffer's (an AttributeError naming nothing before), and an array with only
    the DLPack protocol (__dlpack__, __dlpack_device__) the shape the binding imports (memoryview's TypeError naming
    nothing before). An object the binding cannot import is InvalidArgument naming name."""
    shape = getattr(x, "shape", None)
    if shape is None:
        if hasattr(x, "__dlpack__"):
            return _core._check_array(x, name)
        try:
            shape = memoryview(x).shape
        except TypeError:
            raise InvalidArgument(f"{name}: a {type(x).__name__}, expected an array (NumPy, PyTorch, JAX, CuPy; any "
                                  "DLPack array)") from None
    return tuple(int(s) for s in shape)


def _input_shape(x: Any, name: str, shape: Sequence[int]) -> Tuple[int, ...]:
    """The shape of an input whose shape sizes an output the package is about to allocate, after the binding's own
    checks of its dtype, shape (shape: the extents expected, -1 for any) and C-contiguity, with the binding's
    messages (x: not C-contiguous ...): the output was allocated first, so a broadcast view of 2^40 rows was an
    OutOfMemory naming the output rather than x's layout."""
    return _core._check_array(x, name, "float32", list(shape))


def _dtype_name(x: Any) -> str:
    """An array's dtype as the package's messages name it ('float32'); a buffer without a dtype attribute (a
    memoryview, bytes) has its buffer format's."""
    if hasattr(x, "dtype"):
        return str(x.dtype).replace("torch.", "")
    fmt = memoryview(x).format
    try:
        return np.dtype(fmt).name
    except TypeError:
        return fmt


# How each framework spells the explicit conversion to a dtype the library takes (a copy the caller asks for).
_TORCH_CONVERT = {"float32": "float()", "float64": "double()", "int32": "int()", "int64": "long()", "uint8": "byte()"}
# The dtypes the library takes, as NumPy's (native byte order) dtype singletons: a comparison by identity.
_NP_DTYPES = {name: np.dtype(name) for name in ("float32", "float64", "int32", "int64", "uint8")}
_FLOAT32 = _NP_DTYPES["float32"]
# DLPack devices the library reads: kDLCPU, kDLCUDA, kDLCUDAHost, kDLCUDAManaged.
_DLPACK_DEVICES = (1, 2, 3, 13)


def _convert_hint(fw: str, name: str, dtype: str, write: bool) -> str:
    """What to pass instead of name, an array of another dtype than dtype."""
    if write:
        return f"pass a {dtype} array (a converted copy of {name} would not receive the results)"
    return "convert explicitly (a copy): " + _convert_expression(fw, name, dtype)


def _instead(expr: str, write: bool) -> str:
    """Advice to pass expr, a copy: for an array the call writes, a copy would not receive the results."""
    if write:
        return f"pass an array the library can write ({expr} would be a copy that does not receive the results)"
    return f"pass {expr} (a copy)"


def _convert_expression(fw: str, name: str, dtype: str) -> str:
    if fw == "torch":
        return f"{name}.{_TORCH_CONVERT.get(dtype, f'to(torch.{dtype})')}"
    if fw == "jax":
        return f"{name}.astype(jax.numpy.{dtype})"
    if fw == "cupy":
        return f"{name}.astype(cupy.{dtype})"
    return f"{name}.astype(numpy.{dtype})"


def _whole_strides(a: np.ndarray, name: str, write: bool) -> None:
    """Refuses a NumPy array read or written in place whose byte strides are not multiples of its item size (a
    field of a packed structured array): neither DLPack nor the buffer import can describe it, and the binding's
    import failed with nanobind's TypeError naming nothing."""
    size = a.dtype.itemsize
    if any(stride % size for stride in a.strides):
        raise InvalidArgument(f"{name}: strides {a.strides} bytes, not multiples of its item size ({size} bytes: a "
                              "field of a packed structured array?), which no array protocol the library reads can "
                              "describe; " + _instead(f"numpy.ascontiguousarray({name})", write))


def _array(a: Any, name: str, dtype: Optional[str] = "float32", write: bool = False, required: bool = False,
           in_place: bool = True) -> Any:
    """Refuses, naming the argument and saying what to pass instead, an array the library cannot read as it is
    through DLPack: another dtype than ``dtype`` (None: the binding checks among the dtypes it takes) or one DLPack
    cannot carry (object, string, datetime, structured, big-endian), a PyTorch tensor torch would not export or would
    export wrongly (sparse, on a device other than cpu or cuda, a lazy negation or conjugation view: torch's export
    drops those bits, so the library would read the base's values), or an object that is no array. Nothing is
    converted. write: a is written (the hints ask for an array of the right kind rather than a converted copy).
    required: None is refused (else None passes: an optional array not given). in_place: a is read or written in
    place (False: problem data, copied by the binding whatever its strides).
    Returns a. Shape, C-contiguity and the call's device are checked by the binding."""
    if a is None:
        if required:
            raise InvalidArgument(f"{name}: None, expected {'a ' + dtype if dtype else 'an'} array")
        return a
    t = type(a)
    if t is not np.ndarray and isinstance(a, np.ma.MaskedArray):
        raise InvalidArgument(_MASKED.format(name, "written" if write else "read"))
    if t is np.ndarray:
        d = a.dtype
        if dtype is not None and d is _NP_DTYPES[dtype]:  # the common case, first (NumPy's dtype.name is slow)
            if not a.flags.c_contiguous:
                _whole_strides(a, name, write)
            return a
        fw = "numpy"
        if d.kind not in "biufc" or d.fields is not None:
            got = str(d) if d.fields is None else str(d.descr)
            raise InvalidArgument(f"{name}: dtype {got} (NumPy dtype that no DLPack array holds), expected "
                                  f"{dtype or 'a numeric dtype'}"
                                  + (f"; {_convert_hint(fw, name, dtype, write)}" if dtype else ""))
        if not d.isnative:
            native = dtype or d.newbyteorder("=").name
            raise InvalidArgument(f"{name}: dtype {d.str} (big-endian), expected {native} in native byte order; "
                                  f"{_convert_hint(fw, name, native, write)}")
        # Equal to the expected dtype but not the same object (an array through pickle or a process pool, a dtype
        # with metadata): the same numbers, which DLPack carries as it does the common case's. Compared by
        # identity alone, these were refused as "dtype float32, expected float32".
        if dtype is not None and d != _NP_DTYPES[dtype]:
            raise InvalidArgument(f"{name}: dtype {d.name}, expected {dtype}; "
                                  f"{_convert_hint(fw, name, dtype, write)}")
        if in_place and not a.flags.c_contiguous:
            _whole_strides(a, name, write)
        return a
    fw = _framework(a)
    if fw == "torch":
        torch = sys.modules["torch"]
        if (a.layout is torch.strided and (a.is_cpu or a.is_cuda) and not a.is_neg()
                and (a.dtype is getattr(torch, dtype) if dtype is not None else not a.is_conj())):
            return a  # the common case, first (a tensor of a real dtype has no conjugate bit)
        layout = str(a.layout).replace("torch.", "")
        if layout != "strided":
            raise InvalidArgument(f"{name}: a {layout} tensor; the library reads dense (strided) tensors only: "
                                  + _instead(f"{name}.to_dense()", write))
        if a.device.type not in ("cpu", "cuda"):
            raise InvalidArgument(f"{name}: a tensor on {a.device.type}; the library reads cpu or cuda tensors only: "
                                  + _instead(f"{name}.cpu()", write))
        got = str(a.dtype).replace("torch.", "")
        if dtype is not None and got != dtype:
            raise InvalidArgument(f"{name}: dtype {got}, expected {dtype}; "
                                  f"{_convert_hint(fw, name, dtype, write)}")
        if a.is_neg():
            raise InvalidArgument(f"{name}: a tensor with the negative bit set (a lazy negation view, e.g. the "
                                  "imaginary part of a conjugate); DLPack would hand over the base's values with the "
                                  "opposite sign: " + _instead(f"{name}.resolve_neg()", write))
        if a.is_conj():
            raise InvalidArgument(f"{name}: a tensor with the conjugate bit set (a lazy .conj() view); "
                                  + _instead(f"{name}.resolve_conj()", write))
        return a
    if not hasattr(a, "__dlpack__"):
        try:
            memoryview(a)
        except TypeError:
            if hasattr(a, "__array_interface__"):  # NumPy's protocol, which the binding does not read
                raise InvalidArgument(f"{name}: a {type(a).__name__} with __array_interface__ only; the library reads "
                                      f"arrays through DLPack or the buffer protocol: pass numpy.asarray({name}) "
                                      "(the same memory, no copy)") from None
            raise InvalidArgument(f"{name}: a {type(a).__name__}, expected an array (NumPy, PyTorch, JAX, CuPy; any "
                                  "DLPack array); "
                                  + _instead(f"numpy.asarray({name}, dtype=numpy.{dtype or 'float32'})", write)
                                  ) from None
        return a
    if dtype is not None and hasattr(a, "dtype"):
        got = str(a.dtype)
        if got != dtype:
            raise InvalidArgument(f"{name}: dtype {got}, expected {dtype}; "
                                  f"{_convert_hint(fw, name, dtype, write)}")
    if hasattr(a, "__dlpack_device__"):
        try:
            device = int(a.__dlpack_device__()[0])
        except Exception:  # the producer cannot say: the binding's import reports it
            device = 1
        if device not in _DLPACK_DEVICES:
            raise InvalidArgument(f"{name}: a {type(a).__name__} on DLPack device type {device}; the library reads "
                                  "arrays on the CPU or a CUDA device only: move it there explicitly")
    if fw == "other":
        # An array object of no framework the package knows: imported once here, so that an export that fails (its
        # __dlpack__() or __dlpack_device__() raising) is refused naming the argument, with the producer's
        # exception; the binding's own import of it was nanobind's "incompatible function arguments".
        _core._check_array(a, name)
    return a


_READ_ONLY = ("{0}: a read-only {1}, which the call would write into; pass a writable array ({0}.copy() "
              "would be a copy that does not receive the results)")
# A masked array's mask means nothing to the library: it would read (or write) the elements under the mask too.
_MASKED = ("{0}: a NumPy masked array; the library ignores the mask, so the masked elements would be {1} as any "
           "other: pass {0}.filled(value) or {0}.data explicitly")


def _read_only(a: Any) -> Optional[str]:
    """What a is, when it is an array that must not be written (a NumPy array or subclass with its writeable flag
    off, a read-only memoryview, an object whose __array_interface__ says read-only, another read-only buffer such as
    bytes, which reached the binding's import of a writable array and its TypeError naming nothing); None
    otherwise."""
    if isinstance(a, np.ndarray):
        return None if a.flags.writeable else ("NumPy array" if type(a) is np.ndarray else
                                               f"NumPy array ({type(a).__name__})")
    if isinstance(a, memoryview):
        return "memoryview" if a.readonly else None
    interface = getattr(a, "__array_interface__", None)
    if isinstance(interface, dict):
        data = interface.get("data")
        if isinstance(data, tuple) and len(data) == 2 and data[1]:
            return f"{type(a).__name__} (its __array_interface__ says read-only)"
    if not hasattr(a, "__dlpack__"):
        try:
            if memoryview(a).readonly:
                return type(a).__name__
        except TypeError:
            pass
    return None


def _writable(a: Any, name: str, dtype: Optional[str] = "float32", required: bool = False) -> Any:
    """Refuses an array that a call would write into but that must not be written in place: a JAX array (immutable:
    JAX may share its buffer between arrays) or a PyTorch tensor that requires grad (writing it outside autograd
    would leave autograd's graph wrong); and what _array refuses (None too when required). Returns a."""
    if a is None:
        return _array(a, name, dtype, True, required)
    if type(a) is np.ndarray:
        if not a.flags.writeable:
            raise InvalidArgument(_READ_ONLY.format(name, "NumPy array"))
        return _array(a, name, dtype, True)
    kind = _read_only(a)
    if kind is not None and not isinstance(a, np.ma.MaskedArray):
        raise InvalidArgument(_READ_ONLY.format(name, kind))
    fw = _framework(a)
    if fw == "jax":
        raise InvalidArgument(f"{name}: a JAX array is immutable and cannot be written in place; pass a NumPy "
                              "array, a PyTorch tensor or a CuPy array")
    if fw == "torch" and a.requires_grad:
        raise InvalidArgument(f"{name}: a tensor that requires grad cannot be written outside autograd; pass "
                              f"{name}.detach() (the same memory) or a tensor without requires_grad")
    return _array(a, name, dtype, True)


def _trajectory(trajectory: Any, options: Any, records: str) -> Any:
    """Refuses a trajectory array given without record_every (0: the library records nothing, and its shape check
    would ask for a (0, n, d) array), and record_every without a trajectory array (the recording would go nowhere;
    the library refuses it too). records: the trajectory's first extent in words. Returns trajectory."""
    if trajectory is not None and options.record_every <= 0:
        raise InvalidArgument(f"trajectory: given, but record_every is {options.record_every} (nothing is "
                              "recorded); set record_every=k to record the state after every k-th step")
    if trajectory is None and options.record_every > 0:
        raise InvalidArgument(f"record_every: {options.record_every}, but no trajectory array to record into; pass "
                              f"trajectory=, a ({records} // record_every, n, d) float32 array, or leave "
                              "record_every at 0")
    return trajectory


def _cuda_index(a: Any) -> Optional[int]:
    """The CUDA device index of a CUDA array (its DLPack device's id); None when it cannot say."""
    try:
        return int(a.__dlpack_device__()[1])
    except Exception:
        return None


def _memory(a: Any) -> Optional[Tuple[int, int, Tuple[int, ...], Tuple[int, ...]]]:
    """The bytes an array's elements span, (first, end, shape, byte strides), for NumPy, PyTorch and CuPy arrays;
    None for another framework or an array without elements."""
    fw = _framework(a)
    try:
        if fw == "torch":
            size = a.element_size()
            start, strides = a.data_ptr(), tuple(int(st) * size for st in a.stride())
        elif fw == "numpy":
            size, start, strides = a.itemsize, a.__array_interface__["data"][0], tuple(a.strides)
        elif fw == "cupy":
            size, start, strides = a.itemsize, int(a.data.ptr), tuple(a.strides)
        else:
            return None
        shape = tuple(int(e) for e in a.shape)
    except Exception:
        return None
    if 0 in shape:
        return None
    low = sum(min(0, (e - 1) * st) for e, st in zip(shape, strides))
    high = sum(max(0, (e - 1) * st) for e, st in zip(shape, strides))
    return (start + low, start + high + size, shape, strides)


def _same_device(value: Any, dst: Any, name: str) -> None:
    """Refuses a model's output on another device than the plan buffer dst it is copied into."""
    if _is_cuda(value) != _is_cuda(dst):
        where, plan = ("cuda", "cpu") if _is_cuda(value) else ("cpu", "cuda")
        raise InvalidArgument(f"{name}: on {where}, but the plan's buffers are on {plan}")
    if _is_cuda(value) and _cuda_index(value) != _cuda_index(dst):
        # (the framework's copy across devices ran without a word, and synchronised them)
        raise InvalidArgument(f"{name}: on cuda:{_cuda_index(value)}, but the plan's buffers are on "
                              f"cuda:{_cuda_index(dst)}")


def _answers(*pairs: Tuple[Any, Any, str]) -> None:
    """_answer for each (dst, value, name), every value checked before any is copied: a refused one leaves every
    buffer as it was (the log-density was copied before its answer was refused)."""
    sources = [(dst, _answer_source(dst, value, name)) for dst, value, name in pairs]
    for dst, value in sources:
        if value is not dst:
            dst[...] = value


def _answer(dst: Any, value: Any, name: str) -> None:
    """dst[...] = value for a model's output value (_answer_source's checks)."""
    _answers((dst, value, name))


def _answer_source(dst: Any, value: Any, name: str) -> Any:
    """What dst[...] = value should copy for a model's output value, refusing what the package refuses everywhere
    else: another dtype than float32 (no conversion), another shape (no broadcasting), another device, an array that
    partly overlaps dst (the same memory laid out otherwise: the copy would overwrite what it still reads). A tensor
    that requires grad is read detached (as the package's functions read it). Returns dst itself for dst."""
    if value is dst:
        return dst
    if _framework(value) == "other" and hasattr(value, "__dlpack__"):
        # An array of no framework the package knows is read as the binding reads one, through DLPack: its import
        # checked against dst's shape and float32, then copied from what was imported. Before, its shape and dtype
        # attributes were checked and NumPy's copy read it through __array__ or float(): a valid array without a
        # dtype attribute was refused, one whose attributes differed from its export was broadcast or converted.
        _array(value, name, None)  # its device and export, naming the argument
        _same_device(value, dst, name)
        _core._check_array(value, name, "float32", list(_shape(dst)))
        framework = _framework(dst)
        if framework in ("numpy", "torch", "cupy"):  # (the plan's views; anything else is a test's stand-in)
            try:
                value = (np.from_dlpack(value) if framework == "numpy"
                         else sys.modules[framework].from_dlpack(value))
            except Exception as e:
                raise InvalidArgument(f"{name}: its DLPack export could not be read ({type(e).__name__}: {e})") from e
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise InvalidArgument(f"{name}: a {type(value).__name__}, expected a {_shape(dst)} float32 array")
    # What the package refuses as any input (a masked array, whose masked elements were copied as data; object and
    # structured dtypes; sparse and meta tensors), but a tensor with the negative bit, read as the values it holds.
    if _framework(value) != "torch" or not value.is_neg():
        _array(value, name)
    if _shape(value) != _shape(dst):
        raise InvalidArgument(f"{name}: shape {_shape(value)}, expected {_shape(dst)}")
    dtype = str(value.dtype).replace("torch.", "")
    if dtype != "float32":
        raise InvalidArgument(f"{name}: dtype {dtype}, expected float32")
    _same_device(value, dst, name)
    here, there = _memory(value), _memory(dst)
    if here is not None and there is not None and here[0] < there[1] and there[0] < here[1] and here != there:
        # (PyTorch's copy refused it with its RuntimeError; NumPy's copied through a temporary without a word)
        raise InvalidArgument(f"{name}: partly overlaps the plan's buffer it is copied into (the same memory laid "
                              f"out otherwise), which the copy writes while it reads {name}: write into the buffer "
                              "itself (ask()'s view) or pass a separate array")
    if _framework(value) == "torch":
        value = value.detach()
        if value.is_neg() and type(dst) is np.ndarray:  # a copy by design: torch's copy resolves the bit, NumPy's
            value = value.resolve_neg()                   # conversion of the tensor refuses it
    return value


# ---- options --------------------------------------------------------------------------------------------------------

_PARSERS = {
    _core.Executor: _core.parse_executor,
    _core.ScheduleKind: _core.parse_schedule_kind,
    _core.TimeGrid: _core.parse_time_grid,
    _core.DiffusionSampler: _core.parse_diffusion_sampler,
    _core.ModelOutput: _core.parse_model_output,
    _core.LangevinMethod: _core.parse_langevin_method,
    _core.ResamplingScheme: _core.parse_resampling_scheme,
    _core.GuidedSampler: _core.parse_guided_sampler,
    _core.DpsStepForm: _core.parse_dps_step_form,
    _core.GuidedPotentials: _core.parse_guided_potentials,
    _core.GuidedGrid: _core.parse_guided_grid,
    _core.MixturePath: _core.parse_mixture_path,
}


def _enum(kind: type, value: Any, name: Optional[str] = None) -> Any:
    """An enum value from its name (a str) or the enum itself. name: the argument, named in the errors: an unknown
    name, and (when name is given) any other value (InvalidArgument; the binding would take a bool or an int
    for a value of the enum without a word, and refuse anything else with a TypeError naming nothing)."""
    if isinstance(value, str):
        try:
            return _PARSERS[kind](value)
        except InvalidArgument as e:
            message = str(e)
            if name is None or message.startswith(name + ":"):
                raise
            # The parser names what it parses ("executor: unknown name 'tpu'"): that name gives way to the
            # argument's ("device: executor: unknown name ..." said both), as the settings' setters do.
            label, sep, rest = message.partition(": ")
            if sep and rest.startswith("unknown name"):
                message = rest
            raise InvalidArgument(f"{name}: {message}") from None
    if name is not None and not isinstance(value, kind):
        raise InvalidArgument(f"{name}: {_describe(value)}, expected a name ({', '.join(kind.__members__)}) or a "
                              f"diffsample._core.{kind.__name__}")
    return value


def _fill(options: Any, settings: dict) -> Any:
    """Sets options' fields from keyword settings. The binding's setters check each value and name the setting
    (python/src/core.cpp, def_setting): a value of the wrong type is a TypeError (an enum value given as an int, a
    bool for a number, a float for an int), an integer outside the field's C++ type or a real number that is not
    finite an InvalidArgument; names of enum values may be given as strings."""
    for key, value in settings.items():
        # (a key that is no string, from a dict such as resampling={1: 0.5}, was AttributeError out of startswith)
        if not isinstance(key, str) or key.startswith("_") or not hasattr(options, key):
            raise TypeError(f"{type(options).__name__} has no setting {key!r}")
        setattr(options, key, value)
    return options


def _target(target: Any) -> Tuple[float, float]:
    """The channel (a, s) of a Langevin target as two floats, else InvalidArgument naming target."""
    try:
        a, s = target
    except (TypeError, ValueError):
        raise InvalidArgument(f"target: expected the channel (a, s), two numbers, got {_describe(target)}") from None
    return _real(a, "target[0] (a)"), _real(s, "target[1] (s)")


def _langevin_options(settings: dict, target: Any) -> Any:
    """LangevinOptions from keyword settings and the target channel. target_a / target_s given as settings were set
    and then overwritten by target's (1, 0) without a word: they are refused, pointing at target=."""
    for key in ("target_a", "target_s"):
        if key in settings:
            raise TypeError(f"{key}: set the target channel with target=(a, s), not {key}=")
    o = _fill(LangevinOptions(), settings)
    o.target_a, o.target_s = _target(target)
    return o


def _schedule(schedule: Union[None, str, NoiseSchedule]) -> Optional[NoiseSchedule]:
    if schedule is None or isinstance(schedule, NoiseSchedule):
        return schedule
    if not isinstance(schedule, str):
        raise InvalidArgument(f"schedule: {_describe(schedule)}, expected None, a NoiseSchedule or a schedule kind's "
                              "name ('vp_linear', 'vp_cosine', ...)")
    kind = _core.parse_schedule_kind(schedule)
    return getattr(NoiseSchedule, kind.name)()


_HOST_COPY = {"torch": "{}.cpu()", "cupy": "cupy.asnumpy({})", "jax": "jax.device_get({})"}


def _host(a: Any, name: str, ndims: Tuple[int, ...], expected: str) -> np.ndarray:
    """Problem data (a mixture's parameters, an operator's matrix or factors, y, sigma_y): the C++ API keeps these
    as float64 on the host, so they are read and copied, not read in place. Takes a CPU array of any framework and
    strides with a real dtype (float16, bfloat16, float32, float64, integers: widened exactly), or a number or nested
    sequence of numbers; refuses, naming the argument, a CUDA array (the copy to the host is the caller's to make), what
    _array refuses (a sparse or meta tensor, a lazy negation view, a NumPy object or string array, ...), complex, bool
    and non-numeric data, and another number of dimensions than ndims (expected: the shape in words). Returns a new
    C-contiguous float64 NumPy array."""
    if hasattr(a, "__dlpack__") or hasattr(a, "__array_interface__") or hasattr(a, "__dlpack_device__"):
        if _is_cuda(a):
            fw = _framework(a)
            hint = _HOST_COPY[fw].format(name) if fw in _HOST_COPY else "copy it to the host explicitly"
            raise InvalidArgument(f"{name}: a {type(a).__name__} on CUDA; problem data is read on the host and "
                                  f"copied into the problem as float64: pass a CPU array ({hint})")
        _array(a, name, None, in_place=False)
    return _core._read_host(a, name, list(ndims), expected)


# ---- mixtures -------------------------------------------------------------------------------------------------------


class GaussianMixture:
    """A Gaussian mixture sum_k w_k N(mu_k, diag v_k), evaluated exactly at any channel x_t = a x0 + s z.

    ``GaussianMixture(weights, means, variances)``:

    - weights: K positive finite weights (any sequence or array; normalised internally, need not sum to one).
    - means: (K, d) component means.
    - variances: K values (isotropic components, v_k in every coordinate) or (K, d) values (diagonal components),
      each positive and finite.

    The parameters are host problem data: read once and copied into the mixture as float64 (any CPU array of a real
    dtype, float16, bfloat16, float32 and integers widened exactly, or nested sequences of numbers; CUDA arrays,
    complex, bool and non-numeric data are refused, naming the argument). Scores, denoisers
    E[x0 | x_t], log-densities and the denoiser's Jacobian-vector products are closed forms computed in FP32 on the
    executor of the evaluated arrays (FP64 host references: ``*_fp64``). When a GPU is present the constructor copies
    the FP32 tables to the device and synchronises, so the mixture is ready for kernels on any stream. Raises
    InvalidArgument for a bad size or value (dim and K up to diffsample.limits.max_dim and max_components).
    """

    # No other attributes: one set on the object (plan.eta = 0.5, a misspelt name) would change nothing.
    __slots__ = ("_m", "__weakref__")

    def __init__(self, weights: ProblemData, means: ProblemData, variances: ProblemData, *,
                 _core_mixture: Any = None):
        if _core_mixture is not None:
            self._m = _core_mixture
            return
        means = _host(means, "means", (2,), "(K, d)")
        self._m = _core.GaussianMixtureCore(means.shape[1], _host(weights, "weights", (1,), "(K,)"), means,
                                            _host(variances, "variances", (1, 2), "(K,) or (K, d)"))

    @classmethod
    def empirical(cls, points: ProblemData, variance: float) -> "GaussianMixture":
        """Equal-weight mixture of N(point_i, variance I) over the rows of points.

        Args:
            points: (n, d) host problem data (copied as float64, as the constructor's parameters): one isotropic
                component per row.
            variance: the components' common variance (> 0).

        Returns a new GaussianMixture with K = n components (synchronises as the constructor does).
        """
        return cls(None, None, None, _core_mixture=_core.GaussianMixtureCore.empirical(
            _host(points, "points", (2,), "(n, d)"), _real(variance, "variance")))

    @classmethod
    def grid(cls, dim: int, grid: int, spacing: float, variance: float,
             weights: ProblemData = ()) -> "GaussianMixture":
        """A mixture with means on a grid x grid lattice (grid^2 components).

        Args:
            dim: dimension d of the mixture; coordinate j takes the grid coordinate j mod 2.
            grid: points per axis (1..diffsample.limits.max_grid).
            spacing: distance between neighbouring means.
            variance: every component's isotropic variance (> 0).
            weights: grid^2 component weights (host problem data, copied as float64), or empty for equal weights.

        Returns a new GaussianMixture (synchronises as the constructor does).
        """
        w = _host(weights, "weights", (1,), "(grid^2,) or empty")
        return cls(None, None, None, _core_mixture=_core.GaussianMixtureCore.grid(
            _int64(dim, "dim"), _integer(grid, "grid", *_INT32, "the argument's integer type, int32"),
            _real(spacing, "spacing"), _real(variance, "variance"), w))

    components = _forward("_m", "GaussianMixtureCore", "components")
    dim = _forward("_m", "GaussianMixtureCore", "dim")
    isotropic = _forward("_m", "GaussianMixtureCore", "isotropic")
    weights = _forward("_m", "GaussianMixtureCore", "weights")
    means = _forward("_m", "GaussianMixtureCore", "means")
    variances = _forward("_m", "GaussianMixtureCore", "variances")

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.components}, d={self.dim}, isotropic={self.isotropic})"

    def _evaluate(self, what, x, a, s, out, path, stream):
        _array(x, "x", required=True)
        if out is None:  # (out given: the binding checks x)
            n = _input_shape(x, "x", (-1, self.dim))[0]
            out = _empty(x, (n,) if what == _core.Quantity.log_density else (n, self.dim), "float32", sized_by="x")
        else:
            _writable(out, "out")
        self._m.evaluate(what, x, _real(a, "a"), _real(s, "s"), out, _enum(_core.MixturePath, path, "path"),
                         _stream(x, stream))
        return out

    def score(self, x: Array, a: float = 1.0, s: float = 0.0, *, out: Array = None, path: str = "automatic",
              stream: Stream = None) -> Array:
        """The score grad log p_t(x) of the noised mixture at the channel x_t = a x0 + s z.

        Args:
            x: (n, d) float32, C-contiguous, any DLPack array (NumPy, PyTorch, JAX, CuPy) on the CPU or a CUDA device.
            a, s: the channel's scale and noise level (a = 1, s = 0: the mixture itself).
            out: (n, d) float32 writable array on x's device to write into; None: a new array of x's framework and
                device (NumPy for NumPy and CPU JAX inputs; CUDA JAX inputs need out).
            path: 'automatic', 'direct' (one pass over components) or 'gemm' (isotropic mixtures: matrix products).
            stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream); None: the framework's
                current stream. CPU calls: None or 0.

        Returns out, (n, d) float32. Asynchronous on CUDA (except the mixture's first gemm-path call there, which
        builds its tables and synchronises); on the CPU it returns when done.
        """
        return self._evaluate(_core.Quantity.score, x, a, s, out, path, stream)

    def denoiser(self, x: Array, a: float = 1.0, s: float = 0.0, *, out: Array = None, path: str = "automatic",
                 stream: Stream = None) -> Array:
        """The denoiser E[x0 | x_t = x] (Tweedie) at the channel x_t = a x0 + s z.

        Args:
            x: (n, d) float32, C-contiguous, any DLPack array (NumPy, PyTorch, JAX, CuPy) on the CPU or a CUDA device.
            a, s: the channel's scale and noise level.
            out: (n, d) float32 writable array on x's device; None: a new array of x's framework and device.
            path: 'automatic', 'direct' or 'gemm' (as for score()).
            stream: CUDA stream for CUDA arrays; None: the framework's current stream. CPU calls: None or 0.

        Returns out, (n, d) float32. Asynchronous on CUDA (the first gemm-path call of the mixture there
        synchronises); on the CPU it returns when done.
        """
        return self._evaluate(_core.Quantity.denoiser, x, a, s, out, path, stream)

    def log_density(self, x: Array, a: float = 1.0, s: float = 0.0, *, out: Array = None,
                    path: str = "automatic", stream: Stream = None) -> Array:
        """The log-density log p_t(x) of the noised mixture at the channel x_t = a x0 + s z.

        Args:
            x: (n, d) float32, C-contiguous, any DLPack array (NumPy, PyTorch, JAX, CuPy) on the CPU or a CUDA device.
            a, s: the channel's scale and noise level.
            out: (n,) float32 writable array on x's device; None: a new array of x's framework and device.
            path: 'automatic', 'direct' or 'gemm' (as for score()).
            stream: CUDA stream for CUDA arrays; None: the framework's current stream. CPU calls: None or 0.

        Returns out, (n,) float32. Asynchronous on CUDA (the first gemm-path call of the mixture there
        synchronises); on the CPU it returns when done.
        """
        return self._evaluate(_core.Quantity.log_density, x, a, s, out, path, stream)

    def denoiser_jvp(self, x: Array, v: Array, a: float = 1.0, s: float = 0.0, *, out: Array = None,
                     stream: Stream = None) -> Array:
        """The denoiser's Jacobian times v per point, (dE[x0 | x_t = x] / dx) v; the Jacobian is symmetric, so this
        is also J^T v (what DPS-like guidance needs).

        Args:
            x: (n, d) float32 points, any DLPack array (NumPy, PyTorch, JAX, CuPy), CPU or CUDA.
            v: (n, d) float32 vectors on x's device.
            a, s: the channel's scale and noise level.
            out: (n, d) float32 writable array on x's device; None: a new array of x's framework and device.
            stream: CUDA stream for CUDA arrays; None: the framework's current stream. CPU calls: None or 0.

        Returns out, (n, d) float32. Asynchronous on CUDA; on the CPU it returns when done.
        """
        _array(x, "x", required=True), _array(v, "v", required=True)
        if out is None:
            out = _empty(x, _input_shape(x, "x", (-1, self.dim)), "float32", sized_by="x")
        else:
            _writable(out, "out")
        self._m.denoiser_jvp(x, v, _real(a, "a"), _real(s, "s"), out, _stream(x, stream))
        return out

    def evaluate_fp64(self, what: str, x: Any, a: float = 1.0, s: float = 0.0) -> np.ndarray:
        """FP64 host reference of score(), denoiser() or log_density().

        Args:
            what: 'score', 'denoiser' or 'log_density' (or a diffsample._core.Quantity).
            x: (n, d) points on the host, any array-like (converted to float64 NumPy).
            a, s: the channel's scale and noise level.

        Returns a new NumPy float64 array: (n, d) for 'score' and 'denoiser', (n,) for 'log_density'. Synchronous
        (host only).
        """
        if isinstance(what, str):
            q = _core.Quantity.__members__.get(what)
            if q is None:
                raise InvalidArgument(f"what: {what!r} is not 'score', 'denoiser' or 'log_density'")
        else:  # the enum too, as every enum argument of the package (it was refused as no name)
            q = _enum(_core.Quantity, what, "what")
        x = _host(x, "x", (2,), "(n, d)")
        out = np.empty((x.shape[0],) if q == _core.Quantity.log_density else x.shape, dtype=np.float64)
        self._m.evaluate_fp64(q, x, _real(a, "a"), _real(s, "s"), out)
        return out

    def denoiser_jvp_fp64(self, x: Any, v: Any, a: float = 1.0, s: float = 0.0) -> np.ndarray:
        """FP64 host reference of denoiser_jvp().

        Args:
            x: (n, d) points on the host, any array-like (converted to float64 NumPy).
            v: (n, d) vectors on the host (converted to float64 NumPy).
            a, s: the channel's scale and noise level.

        Returns a new NumPy float64 array (n, d). Synchronous (host only).
        """
        x, v = _host(x, "x", (2,), "(n, d)"), _host(v, "v", (2,), "(n, d)")
        out = np.empty(x.shape, dtype=np.float64)
        self._m.denoiser_jvp_fp64(x, v, _real(a, "a"), _real(s, "s"), out)
        return out

    def sample(self, n: Optional[int] = None, a: float = 1.0, s: float = 0.0, *, seed: int = 0,
               out: Array = None, labels: Union[bool, Array] = False, first_index: int = 0,
               stream: Stream = None) -> Any:
        """Exact samples of the noised mixture p_t (x_t = a x0 + s z). Point i uses the Philox stream
        (seed, first_index + i, 0), so samples split across calls by first_index equal one call's.

        Args:
            n: number of samples when out is None (then out is a new (n, d) float32 array of labels'
                framework and device when labels is an array, else NumPy); given with out, it must be out's number
                of rows.
            a, s: the channel's scale and noise level (1, 0: the mixture itself).
            seed: the random stream's seed.
            out: (n, d) float32 writable array to fill, any DLPack array (NumPy, PyTorch, CuPy), CPU or CUDA: the
                executor follows it.
            labels: False (none), True (a new (n,) int32 array of out's framework and device) or an (n,) int32
                array on out's device: each sample's component index.
            first_index: index of the first sample in the random stream (<= diffsample.limits.max_first_chain).
            stream: CUDA stream for CUDA arrays; None: the framework's current stream. CPU calls: None or 0.

        Returns out (n, d) float32, or (out, labels) when labels is not False. Asynchronous on CUDA; on the CPU it
        returns when done.
        """
        if labels is None:  # (it ran as False: a boolean argument takes True and False only, as resample's reports)
            raise InvalidArgument("labels: None, expected True, False or an (n,) int32 array")
        given = None if isinstance(labels, (bool, np.bool_)) else labels
        if out is None:
            # A new out follows the arrays the caller gave (labels=, an array): its framework and device.
            if given is not None:
                _writable(given, "labels", "int32")
            out = _empty(given, (_count(n), self.dim), "float32", "n",
                         instead="pass out=, a writable (n, d) float32 CUDA array on labels' device")
        _writable(out, "out")
        _count_agrees(n, out)
        lab = given if given is None else _writable(given, "labels", "int32")
        if given is None and labels:
            lab = _empty(out, (_shape(out, "out")[0],), "int32", role="labels")
        self._m.sample(out, _real(a, "a"), _real(s, "s"), _integer(seed, "seed", 0, _UINT64_MAX), lab,
                       _integer(first_index, "first_index", 0, _UINT64_MAX), _stream(out, stream))
        return (out, lab) if lab is not None else out

    def prepare_gemm(self, device: Union[None, str, Any] = None, *, like: Any = None) -> None:
        """Builds the gemm path's tables for an executor ahead of the mixture's first gemm-path call (C++
        ``gaussian_mixture::prepare_gemm``): on CUDA also the mixture's cuBLAS handle and the device's cuBLAS handle
        of the guided samplers' operator products. Call it with the device's before capturing gemm-path calls
        (``score(x, path='gemm')``, ``denoiser``, ``log_density``, ``denoiser_jvp``) in a CUDA graph
        (``torch.cuda.graph``, ``cupy.cuda.Graph``): none of that set-up can be captured, and a first gemm-path call
        of the mixture on CUDA under stream capture is refused (InvalidArgument naming
        ``prepare_gemm(executor::cuda)``). guided_sample() itself cannot be captured (it copies per-call host tables
        and is refused under capture; a SamplingPlan's loop captures). Idempotent (a second call does nothing) and
        thread-safe.

        Args:
            device: 'cpu' or 'cuda' (or a diffsample._core.Executor): the executor whose tables are built; 'cuda'
                without like: the current CUDA device. None (default): like's (a CUDA like: 'cuda' on like's device;
                a CPU like: 'cpu'), else 'cpu'. 'auto' follows like, and is refused without it. A device that
                contradicts like is refused, and so is 'cuda' where no GPU is usable.
            like: None, or an array (any dtype and shape; a CUDA tensor or CuPy array, ...) on the device to
                prepare, made current for the call, as the calls that follow will run there (the device of the
                arrays they take). It must be the device the mixture's tables are on (the device current when the
                mixture was made).

        Returns None. Allocates and synchronises (on CUDA: uploads, cuBLAS handles); releases the GIL. Raises
        InvalidArgument naming device or like.
        """
        where = None if device is None else _enum(_core.Executor, device, "device")
        if like is not None and not hasattr(like, "__dlpack__") and not hasattr(like, "__array_interface__"):
            raise InvalidArgument(f"like: {_describe(like)}, expected None or an array on the device to prepare "
                                  "(e.g. a CUDA tensor)")
        _array(like, "like", None)
        if like is None and where == _core.Executor.automatic:
            raise InvalidArgument("device: automatic, and no like to follow; prepare_gemm builds one executor's "
                                  "tables: pass 'cpu' or 'cuda' (or like=, an array on the device to prepare)")
        if like is None and where == _core.Executor.cuda:
            _core._check_gpu_usable("device")  # the library's words
        self._m.prepare_gemm(where, like)


def _mixture(m: Any, name: str = "mixture") -> Any:
    """The core mixture of a GaussianMixture (or a GaussianMixtureCore), else InvalidArgument naming the argument."""
    if isinstance(m, GaussianMixture):
        return m._m
    if isinstance(m, _core.GaussianMixtureCore):
        return m
    raise InvalidArgument(f"{name}: {_describe(m)}, expected a GaussianMixture")


def _reference(reference: Any) -> Any:
    """The core object of component_weights()'s reference: a MixturePosterior or a GaussianMixture."""
    if isinstance(reference, MixturePosterior):
        return reference._p
    if isinstance(reference, _core.MixturePosterior):
        return reference
    if isinstance(reference, (GaussianMixture, _core.GaussianMixtureCore)):
        return _mixture(reference)
    raise InvalidArgument(f"reference: {_describe(reference)}, expected a MixturePosterior or a GaussianMixture")


# ---- Langevin and diffusion -----------------------------------------------------------------------------------------


def langevin(mixture: GaussianMixture, x: Array, *, trajectory: Array = None, accepted: Array = None,
             stream: Stream = None, target: Tuple[float, float] = (1.0, 0.0), **options: Any) -> Array:
    """Runs Langevin chains on the mixture's exact score at the channel ``target`` = (a, s), in one fused call.

    Args:
        mixture: the GaussianMixture whose noised density p_t is the target.
        x: (n, d) float32 writable, C-contiguous array (NumPy, PyTorch, CuPy; CPU or CUDA: the executor follows
            it) holding the chains' initial states; overwritten with the final states.
        trajectory: None, or a (steps // record_every, n, d) float32 array on x's device receiving every
            record_every-th state: required when record_every > 0, refused when it is 0.
        accepted: None, or an (n,) int64 array on x's device receiving each chain's accepted proposals (MALA).
        stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream, or an object with
            cuda_stream, ptr or __cuda_stream__); None: the framework's current stream. CPU calls: None or 0.
        target: the channel (a, s) of the target density (default (1, 0): the mixture itself).
        **options: LangevinOptions fields as keywords: method ('ula', 'mala', 'tamed_ula'), step_size, steps,
            seed, first_chain, first_step, record_every. Chain i uses the Philox stream (seed, first_chain + i).

    Returns x (the same object). Asynchronous on CUDA (read x after the stream); on the CPU it returns when done.
    Raises InvalidArgument for a bad option (steps up to diffsample.limits.max_steps) or array.
    """
    o = _langevin_options(options, target)
    m = _mixture(mixture)
    _writable(x, "x", required=True), _writable(_trajectory(trajectory, o, "steps"), "trajectory")
    _writable(accepted, "accepted", "int64")
    _core.langevin(m, x, o, trajectory, accepted, _stream(x, stream))
    return x


def _diffusion_options(schedule, options) -> DiffusionOptions:
    o = _fill(DiffusionOptions(), options)
    sched = _schedule(schedule)
    if sched is not None:
        o.schedule = sched
    return o


def diffusion(mixture: GaussianMixture, n: Optional[int] = None, *, out: Array = None, trajectory: Array = None,
              schedule: Union[None, str, NoiseSchedule] = None, stream: Stream = None, **options: Any) -> Array:
    """Reverse diffusion on the mixture's exact denoiser, all steps of all chains in one fused launch.

    Args:
        mixture: the GaussianMixture to sample.
        n: number of chains when out is None (then out is a new (n, d) float32 array of trajectory's framework
            and device when trajectory is given, else NumPy: the CPU executor); given with out, it must be out's
            number of rows.
        out: (n, d) float32 writable, C-contiguous array (NumPy, PyTorch, CuPy; CPU or CUDA: the executor follows
            it) receiving the samples; with draw_initial=False it holds the initial states on entry (and is
            required: a new array would hold none).
        trajectory: None, or a (records, n, d) float32 array on out's device receiving every record_every-th
            state (records = total steps // record_every; sequential_measurements: steps x measurements in all);
            required when record_every > 0, refused when it is 0.
        schedule: a NoiseSchedule, or a schedule kind's name ('vp_linear', 'vp_cosine', 'variance_exploding', ...);
            None: the options' default.
        stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream, or an object with
            cuda_stream, ptr or __cuda_stream__); None: the framework's current stream. CPU calls: None or 0.
        **options: DiffusionOptions fields as keywords: sampler ('ddpm', 'ddim', 'reverse_sde', 'ode_euler',
            'ode_heun', 'stochastic_localization', 'walk_jump', 'sequential_measurements'), steps, eta, sigma,
            step_size, measurements, final_denoise, draw_initial, seed, first_chain, record_every.

    Returns out (the same object, or the new NumPy array). Asynchronous on CUDA (read out after the stream); on
    the CPU it returns when done. Raises InvalidArgument for a bad option or array.
    """
    o = _diffusion_options(schedule, options)
    m = _mixture(mixture)
    if out is None:
        if not o.draw_initial:  # (a new array holds no states: the chains started from np.empty's leftovers)
            raise InvalidArgument("out: None, but draw_initial is False: the chains start from out's values, which a "
                                  "new array does not hold; pass out=, an (n, d) float32 array holding the initial "
                                  "states, or leave draw_initial at True")
        # A new out follows the arrays the caller gave (trajectory=): its framework and device.
        _writable(_trajectory(trajectory, o, "total steps"), "trajectory")
        out = _empty(trajectory, (_count(n), m.dim), "float32", "n",
                     instead="pass out=, a writable (n, d) float32 CUDA array on trajectory's device")
    else:
        _writable(out, "out")
        _count_agrees(n, out)
    _writable(out, "out"), _writable(_trajectory(trajectory, o, "total steps"), "trajectory")
    _core.diffusion(m, out, o, trajectory, _stream(out, stream))
    return out


class _PlanCall:
    """The whole-call guard of one core plan, shared by every wrapper of it (SamplingPlan(core) of a plan another
    SamplingPlan holds: with a lock per wrapper, the second's reset() ran during the first's run()), and whether a
    run() of it is inside its model."""

    __slots__ = ("lock", "in_model", "__weakref__")

    def __init__(self):
        self.lock = threading.RLock()
        self.in_model = False


_PLAN_CALLS: "weakref.WeakValueDictionary[int, _PlanCall]" = weakref.WeakValueDictionary()
_PLAN_CALLS_LOCK = threading.Lock()


def _plan_call(core_plan: Any) -> _PlanCall:
    """core_plan's _PlanCall. Keyed by id: the wrappers holding the _PlanCall hold the core plan too, so the id is
    that plan's while the entry lives."""
    with _PLAN_CALLS_LOCK:
        c = _PLAN_CALLS.get(id(core_plan))
        if c is None:
            c = _PlanCall()
            _PLAN_CALLS[id(core_plan)] = c
        return c


def _one_call(name: str, moves: bool = False):
    """A plan method as one call of its plan: refused while another thread's call of the same core plan runs (the
    core plan refuses overlapping core calls, but tell(answer) and run() are an ask, a copy into the plan's answer
    buffer and a tell: a second thread's tell(answer) copied its answer into the buffer another thread's tell was
    reading, then was refused). The same thread may nest calls (tell(answer) asks, run() resets and tells), but a
    call that moves the plan (moves: reset, tell, step, finish, run) from inside run()'s model is refused: run() would
    go on answering the asks of a trajectory the model restarted or advanced (a silently wrong result before)."""

    def wrap(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            guard = self._call
            if not guard.lock.acquire(blocking=False):
                raise InvalidArgument(name + _core._PLAN_BUSY)  # the core plan's refusal, in its words
            try:
                if moves and guard.in_model:
                    raise InvalidArgument(f"{name}: called from inside the model of this plan's run(), which is "
                                          "answering one of its asks; the model must only compute its output")
                return method(self, *args, **kwargs)
            finally:
                guard.lock.release()

        return call

    return wrap


def _model_call(guard: _PlanCall, model: Callable[..., Any], *args: Any) -> Any:
    """model(*args) inside a run() of the plan guard belongs to (_one_call refuses the plan's moving calls there)."""
    guard.in_model = True
    try:
        return model(*args)
    finally:
        guard.in_model = False


class DiffusionPlan:
    """Stepwise reverse diffusion driven by the caller's model (a neural network).

    ``plan = DiffusionPlan(n, d, output='denoiser', sampler='ddpm', steps=100, device='cpu')``, then per trajectory
    ``plan.reset(x)`` and for k in range(plan.steps): evaluate the model at ``plan.step_channel(k)`` = (a, s) on x,
    write it into a buffer m (n, d) float32 and call ``plan.step(x, m)``; when ``plan.needs_final_jump``, evaluate
    at ``plan.step_channel(plan.steps)`` and call ``plan.finish(x, m)``. ``plan.run(model, x)`` does the loop with
    ``model(x, a, s)`` returning the output. Nothing allocates or synchronises per step; fed the mixture's own
    denoiser, a plan reproduces ``diffusion()`` bit for bit on the CPU executor.
    Samplers: ddpm, ddim, reverse_sde, ode_euler, stochastic_localization, walk_jump.

    Constructor arguments:
        n: chains per trajectory (rows of x and of the model's output).
        d: dimension of a chain.
        output: what the model returns: 'denoiser' (E[x0 | x_t]), 'score' or 'eps' (the noise prediction).
        device: 'cpu' or 'cuda' (or 'auto'): the executor; x and the model's outputs must be on it.
        schedule: a NoiseSchedule or a schedule kind's name; None: the options' default.
        stream: CUDA stream of the constructor's uploads (int handle, torch.cuda.Stream, CuPy stream); None: the
            legacy default stream.
        **options: DiffusionOptions fields as keywords (sampler, steps, eta, sigma, step_size, draw_initial, seed,
            first_chain, ...), enum values as strings.

    The constructor validates the options, builds the coefficient table and (CUDA) uploads it and synchronises; no
    later call of the plan synchronises.
    """

    # No other attributes: one set on the object (plan.eta = 0.5, a misspelt name) would change nothing.
    __slots__ = ("_n", "_d", "_options", "_plan", "_call", "__weakref__")

    def __init__(self, n: int, d: int, *, output: str = "denoiser", device: str = "cpu",
                 schedule: Union[None, str, NoiseSchedule] = None, stream: Stream = None, **options: Any):
        o = _diffusion_options(schedule, options)
        self._n, self._d = _int64(n, "n"), _int64(d, "d")
        self._options = o
        self._plan = _core.DiffusionPlan(self._n, self._d, o, _enum(_core.ModelOutput, output, "output"),
                                         _enum(_core.Executor, device, "device"), _stream_handle(stream))
        # run() is a Python loop of core calls: without a whole-call guard another thread's reset() between its steps,
        # or one from inside its model, restarted the trajectory it was running (_one_call).
        self._call = _plan_call(self._plan)

    @property
    def n(self) -> int:
        """Chains per trajectory (rows of x and of the model's output), as made."""
        return self._n

    @property
    def d(self) -> int:
        """Dimension of a chain, as made."""
        return self._d

    @property
    def options(self) -> Any:
        """The plan's settings, read-only: the plan built its coefficient table from them when it was made, so
        setting a field here would change nothing (refused with AttributeError; make a new plan instead)."""
        return _FixedSettings(self._options, "DiffusionPlan.options")

    steps = _forward("_plan", "DiffusionPlan", "steps")
    needs_final_jump = _forward("_plan", "DiffusionPlan", "needs_final_jump")
    executor = _forward("_plan", "DiffusionPlan", "executor")

    def step_channel(self, k: int) -> Tuple[float, float]:
        """The channel (a, s) at which the model is evaluated before step k.

        Args:
            k: step index, 0 <= k <= steps (k = steps: the channel of finish()).

        Returns a tuple of two floats (host values; no synchronisation).
        """
        return self._plan.step_channel(_int64(k, "k"))

    def step_time(self, k: int) -> float:
        """The schedule's time t of step k.

        Args:
            k: step index, 0 <= k <= steps.

        Returns a float (host value; no synchronisation).
        """
        return self._plan.step_time(_int64(k, "k"))

    @_one_call("reset", moves=True)
    def reset(self, x: Array, *, stream: Stream = None) -> Array:
        """Starts the next trajectory: step 0 and the next trajectory's random key; draws x when draw_initial.

        Args:
            x: (n, d) float32 writable, C-contiguous array on the plan's device (NumPy or a CPU tensor for 'cpu'; a
                PyTorch or CuPy CUDA array for 'cuda'); overwritten with the initial draw when draw_initial (the
                default), else it must hold the initial states.
            stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream, or an object with
                cuda_stream, ptr or __cuda_stream__); None: the framework's current stream. CPU calls: None or 0.

        Returns x. Asynchronous on CUDA; on the CPU it returns when done.
        """
        # NumPy's case inline (step() runs this per step): a writable C-contiguous float32 array needs no check here
        # (another dtype reached the binding's argument matching: its raw TypeError, naming no argument).
        if (type(x) is not np.ndarray or x.dtype is not _FLOAT32 or not x.flags.writeable
                or not x.flags.c_contiguous):
            _writable(x, "x", required=True)
        self._plan.reset(x, _stream(x, stream))
        return x

    @_one_call("step", moves=True)
    def step(self, x: Array, model: Array, *, stream: Stream = None) -> Array:
        """Applies the current step's update to x in place, given the model's output at x, and advances.

        Args:
            x: (n, d) float32 writable array on the plan's device: the chains' state.
            model: (n, d) float32 array on the plan's device: the model's output (the plan's output kind) at x and
                step_channel(k) of the current step k; its memory must not overlap x's (x itself included).
            stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream, or an object with
                cuda_stream, ptr or __cuda_stream__); None: the framework's current stream. CPU calls: None or 0.

        Returns x. Asynchronous on CUDA (no allocation, no synchronisation); on the CPU it returns when done.
        """
        if (type(x) is not np.ndarray or x.dtype is not _FLOAT32 or not x.flags.writeable
                or not x.flags.c_contiguous):
            _writable(x, "x", required=True)
        _model(model)
        self._plan.step(x, model, _stream(x, stream))
        return x

    @_one_call("finish", moves=True)
    def finish(self, x: Array, model: Array, *, stream: Stream = None) -> Array:
        """The final jump x <- E[x0 | x] from the model's output at step_channel(steps) (when needs_final_jump).

        Args:
            x: (n, d) float32 writable array on the plan's device: the chains' state.
            model: (n, d) float32 array on the plan's device: the model's output at x and step_channel(steps).
            stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream, or an object with
                cuda_stream, ptr or __cuda_stream__); None: the framework's current stream. CPU calls: None or 0.

        Returns x. Asynchronous on CUDA; on the CPU it returns when done.
        """
        if (type(x) is not np.ndarray or x.dtype is not _FLOAT32 or not x.flags.writeable
                or not x.flags.c_contiguous):
            _writable(x, "x", required=True)
        _model(model)
        self._plan.finish(x, model, _stream(x, stream))
        return x

    @_one_call("run", moves=True)
    def run(self, model: Callable[[Any, float, float], Any], x: Array = None, *, stream: Stream = None) -> Array:
        """One trajectory: reset(x), then per step out = model(x, a, s) and step(x, out), and finish() when
        needs_final_jump.

        Args:
            model: a callable model(x, a, s) returning its output (the plan's output kind) at x for the channel
                (a, s) (floats): an (n, d) float32 array on the plan's device (the buffer may be reused; not x
                or a view of it, which step() refuses).
            x: (n, d) float32 writable array on the plan's device holding the state (the initial states on entry
                when the plan's draw_initial is False); None: a new NumPy array (CPU plans that draw their initial
                states only).
            stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream, or an object with
                cuda_stream, ptr or __cuda_stream__); None: the framework's current stream. CPU calls: None or 0.

        Returns x, the samples. Nothing synchronises beyond what model does; on CUDA read x after the stream.
        An exception model raises (a PyTorch CUDA out-of-memory error, ...) propagates as it is; x then holds the
        state before the step model was evaluated for, and the next run() or reset() starts a new trajectory.
        """
        _callable(model, "model")
        if x is None:
            if self._plan.executor != _core.Executor.cpu:
                raise InvalidArgument("x: a CUDA plan needs x, an (n, d) float32 CUDA array")
            if not self._options.draw_initial:  # (a new array holds no states: the chains started from np.empty's)
                raise InvalidArgument("x: None, but the plan's draw_initial is False: the chains start from x's "
                                      "values, which a new array does not hold; pass x, an (n, d) float32 array "
                                      "holding the initial states, or make the plan with draw_initial=True")
            x = _empty(None, (self._n, self._d), "float32", "n")
        _writable(x, "x")
        h = _stream(x, stream)
        p = self._plan
        p.reset(x, h)
        for k in range(p.steps):
            a, s = p.step_channel(k)
            p.step(x, _model(_model_call(self._call, model, x, a, s)), h)
        if p.needs_final_jump:
            a, s = p.step_channel(p.steps)
            p.finish(x, _model(_model_call(self._call, model, x, a, s)), h)
        return x


class _FixedSettings:
    """Read-only view of settings a plan was made with (its options, their schedule): fields read as the options'
    own; setting one is refused, since the plan does not read them again."""

    __slots__ = ("_settings", "_where")

    def __init__(self, settings: Any, where: str):
        object.__setattr__(self, "_settings", settings)
        object.__setattr__(self, "_where", where)

    def __getattr__(self, key: str) -> Any:
        value = getattr(self._settings, key)
        if isinstance(value, (_core.NoiseSchedule, _core.ResamplingOptions)):
            return _FixedSettings(value, f"{self._where}.{key}")
        return value

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{self._where}.{key}: the plan's settings are fixed when it is made (setting one here "
                             "would change nothing); make a new plan with the settings wanted")

    def __dir__(self) -> list:
        return dir(self._settings)

    def __repr__(self) -> str:
        return f"<read-only {type(self._settings).__name__} of {self._where.split('.')[0]}>"


def _callable(f: Any, name: str) -> None:
    """Refuses, naming the argument, a model that cannot be called (before the plan starts)."""
    if not callable(f):
        raise InvalidArgument(f"{name}: {_describe(f)}, expected a callable {name}(x, a, s)")


def _model(output: Any) -> Any:
    """A model's output for DiffusionPlan.step / finish: an array (checked as _array checks), not None."""
    if output is None:
        raise InvalidArgument("model: None, expected the model's (n, d) float32 output")
    return _array(output, "model")


def _framework_view(view: Any, like: Any) -> Any:
    """A plan buffer on CUDA (a DLPack object) as an array of like's framework (torch, else cupy); CPU: NumPy.
    A like of another framework (NumPy, JAX: the views were PyTorch tensors whatever like was, or PyTorch's
    ImportError) and, without like, a framework that cannot be imported are InvalidArgument naming like."""
    if isinstance(view, np.ndarray):
        return view
    fw = _framework(like) if like is not None else ("torch" if "torch" in sys.modules else "cupy")
    if fw not in ("torch", "cupy"):
        raise InvalidArgument(f"like: {_describe(like)}; a CUDA plan's memory is shown as arrays of like's "
                              "framework, PyTorch or CuPy: pass like=a torch tensor or a CuPy array")
    try:
        module = __import__(fw)
    except ImportError as e:
        raise InvalidArgument(f"like: None, and {'PyTorch' if fw == 'torch' else 'CuPy'} cannot be imported ({e}); "
                              "a CUDA plan's memory is shown as PyTorch tensors or CuPy arrays: install one, or "
                              "pass like=") from e
    return module.from_dlpack(view)


def _plan_like(like: Any) -> Any:
    """A plan's like= checked: None or an array the binding can read (any dtype and shape), else InvalidArgument
    naming like. Returns like."""
    if like is not None and not hasattr(like, "__dlpack__") and not hasattr(like, "__array_interface__"):
        raise InvalidArgument(f"like: {_describe(like)}, expected None or an array whose framework the CUDA "
                              "views follow (a PyTorch tensor or a CuPy array)")
    return _array(like, "like", None)


def _plan_device(device: Any) -> Any:
    """A plan constructor's device=: None (like's device, else the CPU) or an executor's name."""
    return None if device is None else _enum(_core.Executor, device, "device")


class SamplingPlan:
    """An ask/tell plan for every diffusion sampler (Heun and SMS included), for ULA / tamed ULA / MALA, and for every
    guided sampler.

    ``SamplingPlan.diffusion(n, d, output='denoiser', sampler='ode_heun', steps=50, device='cpu')`` or
    ``SamplingPlan.langevin(n, d, output='score', method='ula', step_size=..., steps=..., target=(a, s))``. Per ask,
    ``r = plan.ask()`` gives the points (rows, d), the channel ``(r['a'], r['s'])`` and the output wanted; the caller
    writes its model's output into ``r['answer']`` (a view of the plan's buffer, in the caller's framework on CUDA)
    and calls ``plan.tell()``, or passes it, ``plan.tell(output)`` (copied after checking its dtype, shape and
    device). A plan is not thread-safe: one thread at a time may call it. ``plan.samples()`` is the state. ``plan.run(model)`` does the loop with
    ``model(points, a, s)`` returning the output. MALA plans ask for the log-density too: ``r['log_density']`` is
    then a (rows,) view to write it into, and ``run``'s model returns the pair ``(output, log_density)``. Fed the
    mixture's own outputs, a plan reproduces the fused sampler bit for bit on the CPU executor. Requires a library with plans (``diffsample._core.HAS_SAMPLING_PLANS``).

    Make plans with the class methods diffusion(), langevin() and guided(); ``SamplingPlan(core_plan, like)`` wraps
    a ``diffsample._core.SamplingPlan`` (core_plan; anything else raises InvalidArgument) whose CUDA buffers are
    shown as arrays of like's framework (like: a PyTorch or CuPy array on the plan's executor and CUDA device,
    another is refused naming both;
    None: PyTorch when imported, else CuPy; CPU plans give NumPy views); a wrapped guided SMC plan gives outputs()
    too. The plans' constructors upload their tables and synchronise; ask() is host-only, and tell(), reset() and
    the outputs are asynchronous on CUDA: no per-ask allocation or synchronisation.
    """

    # No other attributes: one set on the object (plan.eta = 0.5, a misspelt name) would change nothing.
    __slots__ = ("_plan", "_like", "_on_device", "_call", "__weakref__")

    def __init__(self, core_plan: Any, like: Any = None):
        if not _core.HAS_SAMPLING_PLANS or not isinstance(core_plan, _core.SamplingPlan):
            raise InvalidArgument(f"core_plan: {_describe(core_plan)}, expected a diffsample._core.SamplingPlan "
                                  "(make plans with SamplingPlan.diffusion(), langevin() or guided())")
        _plan_like(like)
        if like is not None and _is_cuda(like) != (core_plan.executor == _core.Executor.cuda):
            # (the constructors' rule, plan_executor in the binding: a plan is where its like is)
            raise InvalidArgument(f"like: on {'cuda' if _is_cuda(like) else 'cpu'}, but core_plan runs on the "
                                  f"{core_plan.executor.name} executor (a plan's views follow like's framework on the "
                                  "plan's device): pass like on the plan's executor")
        if like is not None and _is_cuda(like):
            # Which CUDA device too: the plan's memory is on the device current when it was made (its samples'
            # DLPack device says which), and its views follow like's framework on like's device.
            # (the plan's own record of its device; its view's DLPack device gave None on an H200)
            here, there = _cuda_index(like), int(core_plan.device)
            if here is not None and here != there:
                raise InvalidArgument(f"like: on cuda:{here}, but core_plan is on cuda:{there} (its memory and "
                                      "kernels are there, and its views follow like's framework on like's device): "
                                      f"pass like on cuda:{there}")
        self._plan = core_plan
        self._like = like
        self._on_device = None  # an array of like's framework on the plan's CUDA device, made when first needed
        self._call = _plan_call(core_plan)  # one call at a time, whatever wrapper makes it (_one_call)

    def _stream(self, stream: Stream) -> int:
        """The stream of a call of the plan: the caller's, else (CUDA) the current stream of like's framework on the
        plan's device (like may be on another device: its own device's stream cannot take the plan's launches), or
        the legacy default stream without like; 0 on the CPU."""
        if stream is not None or self._like is None or self._plan.executor != _core.Executor.cuda:
            return _stream(None, stream)
        if self._on_device is None:
            self._on_device = _framework_view(self._plan.samples(), self._like)
        return _stream(self._on_device, None)

    @classmethod
    def diffusion(cls, n: int, d: int, *, output: str = "denoiser", device: Optional[str] = None,
                  schedule: Union[None, str, NoiseSchedule] = None, stream: Stream = None,
                  like: Any = None, **options: Any) -> "SamplingPlan":
        """A plan for a diffusion sampler (every one, Heun and SMS included): one ask per model evaluation.

        Args:
            n: chains (rows of the state).
            d: dimension of a chain.
            output: what the caller's model answers: 'denoiser', 'score', 'eps' or 'velocity' (velocity only for
                samplers with a schedule); converted to the denoiser per ask.
            device: 'cpu' or 'cuda' (or 'auto'): the plan's executor; its buffers live there. None (default):
                like's (a CUDA like: 'cuda', the plan made on like's device; a CPU like: 'cpu'), else 'cpu'. A
                device that contradicts like ('cpu' with a CUDA like, 'cuda' with a CPU one) is refused; 'auto'
                follows like when given.
            stream: CUDA stream of the constructor's uploads (int handle, torch.cuda.Stream, CuPy stream); None: the
                legacy default stream.
            like: an array (any dtype and shape) whose framework the CUDA views of ask() and samples() follow (None:
                PyTorch when imported, else CuPy), and whose device the plan is made on.
            schedule: a NoiseSchedule or a schedule kind's name; None: the options' default.
            **options: DiffusionOptions fields as keywords, as for diffusion() (sampler, steps, eta, seed, ...).

        Returns a SamplingPlan with rows = n. Synchronises once (the constructor's uploads on CUDA).
        """
        o = _diffusion_options(schedule, options)
        return cls(_core.SamplingPlan.diffusion(_int64(n, "n"), _int64(d, "d"), o,
                                                _enum(_core.ModelOutput, output, "output"),
                                                _plan_device(device), _stream_handle(stream), _plan_like(like)), like)

    @classmethod
    def langevin(cls, n: int, d: int, *, output: str = "score", device: Optional[str] = None,
                 target: Tuple[float, float] = (1.0, 0.0), stream: Stream = None, like: Any = None,
                 **options: Any) -> "SamplingPlan":
        """A plan for ULA, tamed ULA or MALA (method='mala') on p_t at the channel target = (a, s); settings as for
        langevin(). MALA: steps + 1 asks, each for the model's output and its log-density (ask()['log_density']),
        ask 0 at the state and ask k at step k - 1's proposal (ask()['points'] is then not the state); the tells
        accept or reject, accepted() counts the accepted proposals per row.

        Args:
            n: chains (rows of the state).
            d: dimension of a chain.
            output: what the caller's model answers: 'score' (default), 'denoiser' or 'eps' (at target's channel).
            device: 'cpu' or 'cuda' (or 'auto'): the plan's executor; its buffers live there. None (default):
                like's (a CUDA like: 'cuda', the plan made on like's device; a CPU like: 'cpu'), else 'cpu'. A
                device that contradicts like ('cpu' with a CUDA like, 'cuda' with a CPU one) is refused; 'auto'
                follows like when given.
            stream: CUDA stream of the constructor's uploads (int handle, torch.cuda.Stream, CuPy stream); None: the
                legacy default stream.
            like: an array (any dtype and shape) whose framework the CUDA views of ask() and samples() follow (None:
                PyTorch when imported, else CuPy), and whose device the plan is made on.
            target: the channel (a, s) of the target density p_t (default (1, 0)).
            **options: LangevinOptions fields as keywords (method, step_size, steps, seed, first_chain, ...).

        Returns a SamplingPlan with rows = n. Synchronises once (the constructor's uploads on CUDA).
        """
        o = _langevin_options(options, target)
        return cls(_core.SamplingPlan.langevin(_int64(n, "n"), _int64(d, "d"), o,
                                               _enum(_core.ModelOutput, output, "output"),
                                               _plan_device(device), _stream_handle(stream), _plan_like(like)), like)

    @classmethod
    def guided(cls, d: int, A: Operators, y: ProblemData, sigma_y: ProblemData, *, sampler: str = "smc",
               output: str = "denoiser", device: Optional[str] = None,
               schedule: Union[None, str, NoiseSchedule] = None,
               resampling: Optional[dict] = None, stream: Stream = None, like: Any = None,
               **options: Any) -> "SamplingPlan":
        """A plan for the guided samplers 'smc', 'dps', 'pigdm', 'diffpir', 'dcps', 'tmpd', 'ddrm' and 'skrock' on d-dimensional
        states, the problems and settings as for guided_sample() (the prior is the caller's model). rows = B
        particles, problem by problem. SMC: one ask per transition (weighting, resampling and mutation happen in
        tell()); with potentials='moment' or 'twisted' also d_y asks per transition with ask()['vector'] = a row of
        the particle's A (answer J^T v there; twisted: each of these asks has its own ask()['answer']); its other
        outputs from outputs(). DPS / Pi-GDM: two asks per step, the
        second with ask()['vector'] = v set: answer J^T v of the model's denoiser there. DiffPIR: one ask per step
        (the data step and the re-noising happen in tell()). DCPS: asks at the particles (Langevin steps, transitions) and at
        its variational fits' draws (gradient steps; ask()['points'] is then not the state), each ask whose
        potential needs the Jacobian followed by a J^T v ask at the same points. TMPD: per step the model's output,
        then J^T v for v = each row of the problem's A. DDRM: one ask per step (the spectral update happens in
        tell()). SKRock (output='score' only, skrock_lipschitz > 0 a Lipschitz bound of the prior's score): one ask
        per drift evaluation (skrock_stages per iteration) for the prior's score at (a, s) = (1, 0) at the stage's
        point (ask()['points'] is not the state); reset()/run() need the initial particles (draws of the prior).
        smc with final_moves=K > 0 (final_move_curvature > 0, a bound of the prior's curvature): 1 + 2 K more asks
        after the transitions': at the final resampling's samples, then per move at the proposal and at the midpoint
        of the Metropolis test's Simpson rule (ask()['points'] is not the state); output='score' is asked at the
        grid's last point (a_K, 0), 'denoiser' and 'eps' at the last transition's channel (the moves then target
        the posterior under the prior smoothed to that noise); outputs()['samples'] are the moved samples.

        Args:
            d: dimension of the state x.
            A: a (d_y, d) matrix or ObservationOperator shared by every problem (a nested sequence of numbers is one
                matrix), or a list or tuple of B arrays or ObservationOperators, one per problem.
            y: observations, (d_y,) or (B, d_y).
            sigma_y: the observation noise, a scalar or B values, each in [1e-18, 1e18].
            sampler: 'smc', 'dps', 'pigdm', 'diffpir', 'dcps', 'tmpd', 'ddrm' or 'skrock'.
            output: what the caller's model answers: 'denoiser', 'score' or 'eps' ('score' for skrock).
            device: 'cpu' or 'cuda' (or 'auto'): the plan's executor; its buffers live there. None (default):
                like's (a CUDA like: 'cuda', the plan made on like's device; a CPU like: 'cpu'), else 'cpu'. A
                device that contradicts like ('cpu' with a CUDA like, 'cuda' with a CPU one) is refused; 'auto'
                follows like when given.
            stream: CUDA stream of the constructor's uploads (int handle, torch.cuda.Stream, CuPy stream); None: the
                legacy default stream.
            like: an array (any dtype and shape) whose framework the CUDA views of ask() and samples() follow (None:
                PyTorch when imported, else CuPy), and whose device the plan is made on.
            schedule: a NoiseSchedule or a schedule kind's name; None: the options' default.
            resampling: None, or a dict of ResamplingOptions fields (scheme, ess_threshold, ...).
            **options: GuidedOptions fields as keywords (particles, steps, seed, eta, ...).

        Returns a SamplingPlan with rows = B x particles (problem by problem). Synchronises once (the constructor's
        uploads on CUDA).
        """
        pr, o = _guided_setup(A, y, sigma_y, sampler, schedule, resampling, options)
        return cls(_core.SamplingPlan.guided(_int64(d, "d"), pr, o, _enum(_core.ModelOutput, output, "output"),
                                             _plan_device(device), _stream_handle(stream), _plan_like(like)), like)

    @_one_call("outputs")
    def outputs(self, outputs: Sequence[str] = ("samples",), *, stream: Stream = None) -> dict:
        """A done guided SMC trajectory's outputs as guided_sample() returns them.

        Args:
            outputs: names from 'particles' (B, N, d) float32, 'log_weights' (B, N) float32, 'samples' (B, N, d)
                float32 (the final resampling), 'log_normaliser' (B,) float64, 'ess_trace' (B, steps + 1) float32
                and 'resample_count' (B,) int32.
            stream: CUDA stream (int handle, torch.cuda.Stream, CuPy stream); None: the current stream of like's
                framework on the plan's device (the legacy default stream without like). CPU calls: None or 0.

        Returns a dict of new arrays (NumPy on the CPU, like's framework on CUDA) by name. Asynchronous on CUDA.
        Raises InvalidArgument for a plan other than guided SMC, or before the trajectory is done.
        """
        sizes = self._plan.guided_sizes  # the core plan's own: a wrapped core plan has them too
        if sizes is None:
            raise InvalidArgument("outputs: only a guided SMC plan has outputs beyond samples()")
        B, N, K = sizes
        device = None
        if self._plan.executor == _core.Executor.cuda:
            device = self.samples()
        result = _guided_outputs(outputs, device, B, N, self.dim, K)
        args = [result.get(k) for k in _GUIDED_OUTPUTS]
        h = _stream(device, stream) if device is not None else self._stream(stream)
        self._plan.write_outputs(B, N, K, *args, h)
        return result

    rows = _forward("_plan", "SamplingPlan", "rows")
    dim = _forward("_plan", "SamplingPlan", "dim")
    asks = _forward("_plan", "SamplingPlan", "asks")
    position = _forward("_plan", "SamplingPlan", "position")
    done = _forward("_plan", "SamplingPlan", "done")
    executor = _forward("_plan", "SamplingPlan", "executor")

    @_one_call("ask")
    def ask(self, k: int = -1) -> dict:
        """The next ask, or the ask at position k (for setting up a captured loop).

        Args:
            k: position 0 <= k < asks, or -1 (default): the next ask.

        Returns a dict: index, a, s, time (floats and ints), output (the model output asked for), points (rows, d)
        float32 read-only view, answer (rows, d) float32 writable view where the caller writes the model's output,
        vector (None, or the (rows, d) v whose J^T v the caller writes into answer: dps, pigdm, dcps, tmpd,
        moment- and twisted-potential smc) and log_density (None, or a (rows,) float32 writable view for the model's
        log-density: mala). Views of the plan's memory: NumPy on the CPU, like's framework on CUDA. Host-only: no
        launch, no synchronisation.
        """
        r = self._plan.ask(_int64(k, "k"))
        for name in ("points", "answer", "vector", "log_density"):
            if r.get(name) is not None:
                r[name] = _framework_view(r[name], self._like)
        return r

    @_one_call("tell", moves=True)
    def tell(self, answer: Array = None, log_density: Array = None, *, stream: Stream = None) -> None:
        """Applies the current ask's answer and advances to the next ask.

        Args:
            answer: None (the answer was written into ask()['answer']), or the model's output for the current ask, a
                (rows, d) float32 array on the plan's device (any framework), copied into the ask's answer buffer
                first. Checked as run() checks its model's output: another dtype, shape or device raises
                InvalidArgument (writing into the ask()['answer'] view instead follows its framework's rules:
                NumPy broadcasts a (d,) row and casts float64 silently).
            log_density: for a plan that asks for the log-density (mala) with answer given: its (rows,) float32
                values, copied into ask()['log_density'] likewise; refused for the other plans.
            stream: CUDA stream (int handle, torch.cuda.Stream, CuPy stream); None: the current stream of like's
                framework on the plan's device (the legacy default stream without like). CPU calls: None or 0.

        Asynchronous on CUDA (no allocation, no synchronisation): write the answer in that stream's order first.
        Raises InvalidArgument before the first reset(), when the trajectory is done, and for a second tell() after
        one ask() (it would apply the next ask with this one's answer; tell(answer) counts as that ask's ask()).
        """
        h = self._stream(stream)
        if answer is not None or log_density is not None:
            try:
                r = self.ask()
            except InvalidArgument as e:  # refused (no trajectory, done, a failed call): name the call made, tell
                text = str(e)
                if not text.startswith("ask: "):
                    raise
                raise InvalidArgument("tell: " + text[len("ask: "):]) from None
            if answer is None:
                raise InvalidArgument("answer: None with log_density given; pass both (or write both into ask()'s "
                                      "views)")
            if r["log_density"] is None and log_density is not None:
                raise InvalidArgument(f"log_density: ask {r['index']} of this plan asks for no log-density")
            if r["log_density"] is not None and log_density is None:
                raise InvalidArgument(f"log_density: ask {r['index']} of this plan asks for the model's log-density "
                                      "too (mala): pass tell(answer, log_density)")
            if log_density is not None:
                _answers((r["log_density"], log_density, "log_density"), (r["answer"], answer, "answer"))
            else:
                _answer(r["answer"], answer, "answer")
        self._plan.tell(h)

    @_one_call("reset", moves=True)
    def reset(self, initial: Array = None, *, stream: Stream = None) -> None:
        """Starts the next trajectory: position 0 and the next trajectory's random key.

        Args:
            initial: None (the plan's own draw: diffusion plans with draw_initial), or a (rows, d) float32
                C-contiguous array on the plan's device (NumPy / CPU tensor, or a CUDA tensor / CuPy array), copied
                in as the initial state.
            stream: CUDA stream (int handle, torch.cuda.Stream, CuPy stream); None: the current stream of initial's
                framework, else like's on the plan's device (the legacy default stream without like). CPU calls:
                None or 0.

        Asynchronous on CUDA; on the CPU it returns when done.
        """
        _array(initial, "initial")
        self._plan.reset(initial, _stream(initial, stream) if initial is not None else self._stream(stream))

    @_one_call("report")
    def report(self) -> dict:
        """A guided plan's report: the settings it runs, as guided_sample()'s 'report' gives them (the same keys:
        'executor', 'launches', 'operator_path', 'potentials', 'start_correction', 'multistep_kernel',
        'final_moves', 'ess_threshold'), so that a caller driving the plan with its own model sees what the automatic
        settings resolved to. Set when the plan is made (host-only): for smc, potentials='automatic' resolves to
        'linear' in a plan (guided_sample() may run 'twisted' ones), and the automatic ESS threshold (-1) to 0.5 with
        them; final_moves as given (-1 resolves to 0 in a plan); operator_path is 'gemm'
        where the tells apply a dense operator as matrix products, else 'direct': the path guided_sample() resolves
        for the same options (dps and pigdm; tmpd on the CPU), which the plan runs; launches is 0
        (a plan's launches are its tells'). Fed the mixture's own model, a plan that runs what guided_sample() runs
        reports what it reports, launches aside. The per-problem results are outputs() (smc).
        Raises InvalidArgument for a plan that is not guided."""
        return self._plan.report()

    @_one_call("samples")
    def samples(self) -> Any:
        """The state, a (rows, d) float32 writable view of the plan's memory (the samples once done): NumPy on the
        CPU, like's framework on CUDA. No copy, no synchronisation (on CUDA read it in the plan's stream order)."""
        return _framework_view(self._plan.samples(), self._like)

    @_one_call("accepted")
    def accepted(self) -> Any:
        """MALA plans: the proposals accepted per row in the current trajectory, a (rows,) int64 read-only view of
        the plan's memory; None for other plans."""
        v = self._plan.accepted()
        return None if v is None else _framework_view(v, self._like)

    @_one_call("run", moves=True)
    def run(self, model: Callable[[Any, float, float], Any], initial: Array = None, *,
            stream: Stream = None) -> Any:
        """One trajectory: reset(initial), then per ask answer[:] = model(points, a, s) and tell().

        Args:
            model: a callable model(points, a, s): points a (rows, d) float32 array (plan memory: NumPy on the CPU,
                like's framework on CUDA), a and s floats; it returns the output asked for ((rows, d) float32 on
                the plan's device, any framework, or the answer view itself), and for a plan that asks for the
                log-density (MALA) the pair (output, log_density (rows,) float32). The output is copied as it is:
                another dtype, shape or device raises InvalidArgument (no conversion, no broadcasting); a tensor
                that requires grad is read detached. Plans that also ask for J^T v (dps, pigdm, dcps, tmpd,
                moment- and twisted-potential smc) need ask() and tell(): run() refuses them before it starts.
            initial: as for reset(): None or the (rows, d) float32 initial state on the plan's device.
            stream: CUDA stream (int handle, torch.cuda.Stream, CuPy stream); None: the current stream of like's
                framework on the plan's device (the legacy default stream without like). CPU calls: None or 0.

        Returns a copy of the samples (rows, d) float32: NumPy on the CPU, like's framework on CUDA (a clone queued
        on that framework's stream; nothing synchronises beyond what model does). An exception model raises (a
        PyTorch CUDA out-of-memory error, ...) propagates as it is; the plan stays at the ask it was evaluated for
        (position), and the next run() or reset() starts a new trajectory.
        """
        _callable(model, "model")
        p = self._plan
        for k in range(p.asks):  # host-only requests: refuse before the first tell
            if p.ask(k)["vector"] is not None:
                raise InvalidArgument(f"model: ask {k} of this plan wants J^T v (ask()['vector'] set), which "
                                      "run()'s model(points, a, s) cannot answer; drive it with ask() and tell()")
        self.reset(initial, stream=stream)
        h = self._stream(stream)
        while not p.done:
            r = self.ask()
            out = _model_call(self._call, model, r["points"], r["a"], r["s"])
            if r["log_density"] is not None:
                if not isinstance(out, (tuple, list)) or len(out) != 2:
                    raise InvalidArgument("model: this plan asks for the log-density too (mala): return "
                                          "(output, log_density), got " + type(out).__name__)
                out, log_density = out
                _answers((r["log_density"], log_density, "log_density"), (r["answer"], out, "model"))
            else:
                _answer(r["answer"], out, "model")
            p.tell(h)
        v = self.samples()
        return v.clone() if hasattr(v, "clone") else v.copy()


# ---- particles ------------------------------------------------------------------------------------------------------

#: NumPy dtype of one resampling report (diffsample::particle_report).
PARTICLE_REPORT_DTYPE = np.dtype([("ess", "f8"), ("log_normaliser_increment", "f8"), ("log_sum_exp", "f8"),
                                  ("nan_count", "i8"), ("failed", "i4"), ("resampled", "i4")])
assert PARTICLE_REPORT_DTYPE.itemsize == _core.PARTICLE_REPORT_BYTES


def resample(log_weights: Array, *, ancestors: Array = None, normalised_weights: Array = None,
             reports: bool = True, stream: Stream = None, **options: Any) -> Tuple[Any, Any, Any]:
    """Exact, deterministic resampling of B problems of N particles, with their statistics (ESS, log-sum-exp).

    Args:
        log_weights: (B, N) float32 C-contiguous array (NumPy, PyTorch, JAX, CuPy; CPU or CUDA: the executor
            follows it), unnormalised log-weights per problem.
        ancestors: None (a new (B, N) int32 array of log_weights' framework and device) or a (B, N) int32 or int64
            writable array on that device: the ancestor index of each new particle.
        normalised_weights: None (a new (B, N) float32 array) or a (B, N) float32 writable array on that device.
        reports: True to return the per-problem reports, False for none.
        stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream, or an object with
            cuda_stream, ptr or __cuda_stream__); None: the framework's current stream. CPU calls: None or 0.
        **options: ResamplingOptions fields as keywords: scheme ('multinomial', 'stratified', 'systematic',
            'residual', 'metropolis', 'rejection'), ess_threshold (resample only problems whose ESS / N is below
            it), seed, step, metropolis_steps.

    Returns (ancestors, normalised_weights, reports): reports is None (reports=False), a NumPy structured array
    of PARTICLE_REPORT_DTYPE (B,) on the CPU, and on CUDA a (B, PARTICLE_REPORT_BYTES) uint8 device array (view
    it with PARTICLE_REPORT_DTYPE after a copy to the host). Asynchronous on CUDA (the reports too are written on
    the device); on the CPU it returns when done.
    """
    o = _fill(ResamplingOptions(), options)
    _array(log_weights, "log_weights")
    if log_weights is None or len(_shape(log_weights, "log_weights")) != 2:
        got = "None" if log_weights is None else f"shape {_shape(log_weights, 'log_weights')}"
        raise InvalidArgument(f"log_weights: {got}, expected a (B, N) float32 array")
    B, N = _shape(log_weights, "log_weights")
    # The library's checks of the sizes, before the package allocates for them: a (B, 0) array holds nothing, but
    # its reports would take B x PARTICLE_REPORT_BYTES bytes (an OutOfMemory for them, or gigabytes taken, before
    # the library refused N = 0).
    _core._check_limit("particles", N, 0, limits.max_particles)
    if B > 0 and N == 0:
        raise InvalidArgument("particles: must be >= 1 when problems > 0, got 0 (log_weights has shape "
                              f"{(B, N)})")
    _input_shape(log_weights, "log_weights", (B, N))  # its layout, before the outputs it sizes are allocated
    if ancestors is None:
        ancestors = _empty(log_weights, (B, N), "int32", role="ancestors", sized_by="log_weights")
    if normalised_weights is None:
        normalised_weights = _empty(log_weights, (B, N), "float32", role="normalised_weights",
                                    sized_by="log_weights")
    _writable(ancestors, "ancestors", None), _writable(normalised_weights, "normalised_weights")
    # The reports: a NumPy record array on the CPU whatever the framework, a device array on CUDA.
    rep = None
    if _flag(reports, "reports"):
        rep = _empty(log_weights if _is_cuda(log_weights) else None, (B, _core.PARTICLE_REPORT_BYTES), "uint8",
                     role="reports", instead="pass reports=False, or log_weights as a torch or cupy array",
                     sized_by="log_weights")
    _core.resample(log_weights, o, ancestors, normalised_weights, rep, _stream(log_weights, stream))
    if rep is not None and isinstance(rep, np.ndarray):
        rep = rep.view(PARTICLE_REPORT_DTYPE).reshape(B)
    return ancestors, normalised_weights, rep


def gather_particles(states: Array, ancestors: Array, *, out: Array = None, stream: Stream = None) -> Array:
    """Gathers particles by their ancestors: out[b, j] = states[b, ancestors[b, j]].

    Args:
        states: (B, N, d) float32 C-contiguous array (NumPy, PyTorch, JAX, CuPy; CPU or CUDA).
        ancestors: (B, N) int32 or int64 array on states' device (e.g. resample()'s), indices in 0..N-1 (an
            index outside it gives a row of NaN).
        out: None (a new (B, N, d) float32 array of states' framework and device) or a (B, N, d) float32
            writable array on that device that overlaps neither states nor ancestors.
        stream: CUDA stream for CUDA arrays (int handle, torch.cuda.Stream, CuPy stream, or an object with
            cuda_stream, ptr or __cuda_stream__); None: the framework's current stream. CPU calls: None or 0.

    Returns out. Asynchronous on CUDA; on the CPU it returns when done.
    """
    _array(states, "states", required=True), _array(ancestors, "ancestors", None, required=True)
    if out is None:
        out = _empty(states, _input_shape(states, "states", (-1, -1, -1)), "float32", sized_by="states")
    _writable(out, "out")
    _core.gather_particles(states, ancestors, out, _stream(states, stream))
    return out


# ---- the exact posterior and guided samplers ------------------------------------------------------------------------


_A_SHAPE = "(d_y, d_x) (one observation: a (1, d_x) matrix)"


def _operator(A: Operator, name: str = "A", expected: str = _A_SHAPE) -> ObservationOperator:
    if isinstance(A, ObservationOperator):
        return A
    return ObservationOperator.dense(_host(A, name, (2,), expected))


def _operators(A: Operators) -> list:
    """The operators of guided problems: one shared (an ObservationOperator, an array, or a nested sequence of numbers:
    one matrix) or a list or tuple of B arrays or ObservationOperators, one per problem."""
    if isinstance(A, (list, tuple)) and A and all(
            isinstance(a, ObservationOperator) or hasattr(a, "__dlpack__") or hasattr(a, "__array_interface__")
            for a in A):
        return [_operator(a, f"A[{i}]") for i, a in enumerate(A)]
    if isinstance(A, (list, tuple)):  # a nested sequence of numbers: one matrix
        return [_operator(A, "A", _A_SHAPE + "; one operator per problem: a list of B arrays or ObservationOperators")]
    return [_operator(A)]


class MixturePosterior:
    """The exact posterior sum_k w'_k N(m'_k, S'_k) of a GaussianMixture prior given y = A x + sigma_y z.

    ``MixturePosterior(prior, A, sigma_y, y)``:

    - prior: the GaussianMixture prior (dimension d_x).
    - A: a (d_y, d_x) matrix or an ObservationOperator (dense, mask, svd).
    - sigma_y: the observation noise's standard deviation (>= 0), a scalar.
    - y: the observation, (d_y,).

    A, sigma_y and y are host problem data: read once and copied into the posterior as float64 (any CPU array of a real
    dtype, float16, bfloat16, float32 and integers widened exactly, or numbers and nested sequences of numbers); CUDA
    arrays, complex, bool and non-numeric data, another number of dimensions and non-finite values are refused, naming
    the argument.

    Computed in FP64 on the host (synchronous; O(K (d_x^3 + d_y^3 + d_y d_x^2))); when a GPU is present the
    sampling tables are then copied to the device and the constructor synchronises. Raises InvalidArgument when sizes
    disagree, a value is not finite, sigma_y < 0, or a component's A Sigma_k A^T + sigma_y^2 I is not positive
    definite (d_y up to diffsample.limits.max_posterior_d_y).
    """

    # No other attributes: one set on the object (plan.eta = 0.5, a misspelt name) would change nothing.
    __slots__ = ("_p", "__weakref__")

    def __init__(self, prior: GaussianMixture, A: Operator, sigma_y: ProblemScalar, y: ProblemData):
        self._p = _core.MixturePosterior(_mixture(prior, "prior"), _operator(A),
                                         _host(sigma_y, "sigma_y", (0,), "a scalar"),
                                         _host(y, "y", (1,), "(d_y,)"))

    components = _forward("_p", "MixturePosterior", "components")
    dim = _forward("_p", "MixturePosterior", "dim")
    weights = _forward("_p", "MixturePosterior", "weights")
    log_weights = _forward("_p", "MixturePosterior", "log_weights")
    means = _forward("_p", "MixturePosterior", "means")
    covariances = _forward("_p", "MixturePosterior", "covariances")
    log_evidence = _forward("_p", "MixturePosterior", "log_evidence")

    def mean(self) -> np.ndarray:
        """Mean of the posterior: a new (d_x,) float64 NumPy array (host; synchronous)."""
        return self._p.mean()

    def covariance(self) -> np.ndarray:
        """Covariance of the posterior: a new (d_x, d_x) float64 NumPy array (host; synchronous)."""
        return self._p.covariance()

    def sample(self, n: Optional[int] = None, *, seed: int = 0, out: Array = None, dtype: Optional[str] = None,
               labels: bool = False, first_index: int = 0, stream: Stream = None) -> Any:
        """Exact posterior samples. Sample i uses the Philox stream (seed, first_index + i, 0).

        Args:
            n: number of samples when out is None (then out is a new (n, d_x) NumPy array of dtype); given
                with out, it must be out's number of rows.
            seed: the random stream's seed.
            out: (n, d_x) float32 or float64 writable array to fill (NumPy, PyTorch, CuPy; CPU or CUDA: the
                executor follows it).
            dtype: 'float32' or 'float64', the dtype of a new out (None: float32); given with out, it must be
                out's dtype.
            labels: True to also return each sample's component index, an (n,) int32 array on out's device.
            first_index: index of the first sample in the random stream (<= diffsample.limits.max_first_chain).
            stream: CUDA stream for CUDA arrays; None: the framework's current stream. CPU calls: None or 0.

        Returns out, or (out, labels) when labels is True. Asynchronous on CUDA; on the CPU it returns when done.
        """
        if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
            dtype = np.dtype(dtype).name  # numpy.float32, numpy.dtype('float64'): their names
        if dtype is not None and (not isinstance(dtype, str) or dtype not in ("float32", "float64")):
            # (an array compared with the names was NumPy's "truth value of an array ... is ambiguous")
            shown = repr(dtype) if isinstance(dtype, str) else _describe(dtype)
            raise InvalidArgument(f"dtype: {shown}, expected 'float32' or 'float64'")
        if out is None:
            out = _empty(None, (_count(n), self.dim), dtype or "float32", "n")
        _writable(out, "out", None)
        _count_agrees(n, out)
        if dtype is not None and _dtype_name(out) != dtype:
            raise InvalidArgument(f"dtype: {dtype!r}, but out is {_dtype_name(out)} (out= sets the dtype; give dtype "
                                  "or out, or the same dtype)")
        lab = (_empty(out, (_shape(out, "out")[0],), "int32", role="labels",
                      instead="pass labels=False, or out= as a torch or cupy array") if _flag(labels, "labels")
               else None)
        self._p.sample(out, _integer(seed, "seed", 0, _UINT64_MAX), lab,
                       _integer(first_index, "first_index", 0, _UINT64_MAX), _stream(out, stream))
        return (out, lab) if lab is not None else out


def _cpp_doc(obj: Any, *keys: str) -> None:
    """Appends to obj's docstring the headers' comments of keys (diffsample._core._header_docs, from
    python/docstrings.py at build time), so the Python function carries the C++ documentation of its call."""
    if obj.__doc__ is None:  # python -OO
        return
    text = "\n\n".join(_core._header_docs[k] for k in keys)
    indented = "\n".join(("    " + line) if line else "" for line in text.splitlines())
    obj.__doc__ = obj.__doc__.rstrip() + "\n\n    From the C++ documentation:\n\n" + indented + "\n"


_cpp_doc(MixturePosterior, "mixture_posterior", "mixture_posterior::mixture_posterior#3",
         "mixture_posterior::mixture_posterior")

_GUIDED_OUTPUTS = ("particles", "log_weights", "samples", "log_normaliser", "ess_trace", "resample_count")


def guided_sample(prior: GaussianMixture, A: Operators, y: ProblemData, sigma_y: ProblemData, *,
                  sampler: str = "smc", outputs: Sequence[str] = ("samples",), device: Any = None,
                  schedule: Union[None, str, NoiseSchedule] = None, resampling: Optional[dict] = None,
                  stream: Stream = None, **options: Any) -> dict:
    """Posterior sampling for y_b = A_b x + sigma_y,b z with the mixture prior, B problems in one run.

    Args:
        prior: the GaussianMixture prior (dimension d).
        A: a (d_y, d) matrix or ObservationOperator shared by every problem (a nested sequence of numbers is one
            matrix), or a list or tuple of B arrays or ObservationOperators, one per problem.
        y: the observations, (d_y,) or (B, d_y) (d_y up to diffsample.limits.max_guided_d_y), finite.
        sigma_y: the observation noise, a scalar or (B,), each in [1e-18, 1e18].
        sampler: 'smc', 'dps', 'pigdm', 'diffpir', 'skrock', 'tmpd', 'ddrm' or 'dcps'.
        outputs: the arrays to return, by name: 'particles' (B, N, d) float32, 'log_weights' (B, N) float32,
            'samples' (B, N, d) float32 (SMC's final resampling), 'log_normaliser' (B,) float64 (estimates of
            log p(y) on a grid ending at t = 0; on a grid whose last point has s > 0, of the last potential's
            normaliser, log E[N(a y; A x_t, v I)] over the prior's x_t there), 'ess_trace'
            (B, steps + 1) float32, 'resample_count' (B,) int32 (N = particles). 'log_weights', 'log_normaliser',
            'ess_trace' and 'resample_count' are smc's: the other samplers write 'particles' and 'samples' (the same
            equally weighted particles) and refuse the others (InvalidArgument naming outputs).
        device: None (NumPy outputs: the CPU executor), or an array (e.g. a CUDA tensor or CuPy array; any dtype
            and shape) whose framework and device the new outputs follow: the call runs on its device, with or
            without outputs (outputs=() with a CUDA device runs on that device's CUDA executor).
        schedule: a NoiseSchedule or a schedule kind's name; None: the options' default.
        resampling: None, or a dict of ResamplingOptions fields (scheme, ess_threshold, ...).
        stream: CUDA stream (int handle, torch.cuda.Stream, CuPy stream); None: the current stream of device's
            framework. CPU calls: None or 0.
        **options: GuidedOptions fields as keywords (particles, steps, seed, ddim, eta, guidance_scale, ...);
            operator_path='automatic' (default), 'gemm' or 'direct' forces or forbids a dense operator's products
            over all particles per step (dps, pigdm; tmpd on the CPU) or leaves them to the size rule.

    A, y and sigma_y are host problem data, read once and copied into the problems as float64 (see
    MixturePosterior): CPU arrays of a real dtype or nested sequences of numbers; CUDA arrays and wrong shapes are
    refused, naming the argument.

    Returns a dict of the named outputs (new arrays) plus 'report' ({'executor', 'launches', 'operator_path',
    'potentials', 'start_correction', 'multistep_kernel', 'final_moves', 'ess_threshold'}: the executor that ran, the
    launches, 'gemm' or 'direct', the path the operator's products took, and for smc the potentials that ran
    ('automatic' resolved: 'twisted' or 'linear'), whether the start correction and the multistep kernel ran, the
    final moves per sample (final_moves=-1 or 'auto', the default, resolved: 4 with the twisted potentials, 20 with
    the automatic linear ones on a grid ending at s = 0 (d_y > 8), else 0)
    and the ESS threshold (-1, the default, resolved: 0.2 with the twisted potentials, else 0.5); the other samplers:
    'linear', False, False, 0, 0.0). Asynchronous on
    CUDA (read the outputs after the stream); on the CPU it returns when done. Raises InvalidArgument for
    inconsistent sizes, non-finite values, a non-positive sigma_y, an invalid schedule or options, before anything
    runs.
    """
    core_prior = _mixture(prior, "prior")
    pr, o = _guided_setup(A, y, sigma_y, sampler, schedule, resampling, options)
    if device is not None and not (hasattr(device, "__dlpack__") or hasattr(device, "__array_interface__")):
        raise InvalidArgument(f"device: a {type(device).__name__} ({device!r}); pass None (NumPy outputs, the CPU "
                              "executor) or an array whose framework and device the outputs follow, e.g. "
                              "torch.empty(0, device='cuda')")
    _array(device, "device", None)
    if o.sampler != _core.GuidedSampler.smc and not isinstance(outputs, str) and \
            isinstance(outputs, collections.abc.Iterable):
        outputs = tuple(outputs)
        for name in outputs:
            if name in _SMC_OUTPUTS:
                # (they were allocated and returned unwritten: uninitialised memory read as results)
                raise InvalidArgument(f"outputs: {name!r} is written by smc only; sampler {o.sampler.name!r} "
                                      "writes 'particles' and 'samples' (its particles, equally weighted)")
    result = _guided_outputs(outputs, device, pr.problems, o.particles, core_prior.dim, o.steps)
    args = [result.get(k) for k in _GUIDED_OUTPUTS]
    # device goes to the binding too: it says where the call runs even when no output does (outputs=()).
    result["report"] = _core.guided_sample(core_prior, pr, o, *args, _stream(device, stream), device=device)
    return result


_cpp_doc(guided_sample, "guided_problems", "guided_sample")


def _guided_setup(A: Operators, y: ProblemData, sigma_y: ProblemData, sampler: str, schedule: Any,
                  resampling: Optional[dict], options: dict) -> Tuple[Any, Any]:
    """GuidedProblems and GuidedOptions from guided_sample()'s arguments."""
    o = _fill(GuidedOptions(), options)
    o.sampler = _enum(_core.GuidedSampler, sampler, "sampler")
    sched = _schedule(schedule)
    if sched is not None:
        o.schedule = sched
    if resampling is not None and not isinstance(resampling, collections.abc.Mapping):
        raise InvalidArgument(f"resampling: {_describe(resampling)}, expected None or a dict of ResamplingOptions "
                              "fields, e.g. {'scheme': 'systematic'}")
    if resampling:
        r = o.resampling
        _fill(r, resampling)
        o.resampling = r
    y = _host(y, "y", (1, 2), "(d_y,) or (B, d_y)")
    if y.ndim == 1:
        y = y[None, :]
    pr = GuidedProblems()
    pr.problems, pr.d_y = int(y.shape[0]), int(y.shape[1])
    pr.operators = _operators(A)
    pr.y = y
    pr.sigma_y = _host(sigma_y, "sigma_y", (0, 1), "a scalar or (B,)")
    return pr, o


# The outputs only smc writes (the other samplers write particles and samples).
_SMC_OUTPUTS = ("log_weights", "log_normaliser", "ess_trace", "resample_count")

# The argument whose value sets each guided output's size (named when the allocation is refused).
_GUIDED_SIZE_BY = {"particles": "options.particles", "log_weights": "options.particles",
                   "samples": "options.particles", "log_normaliser": "y", "ess_trace": "options.steps",
                   "resample_count": "y"}


def _guided_outputs(outputs: Sequence[str], device: Any, B: int, N: int, d: int, steps: int) -> dict:
    """New arrays for the named guided outputs, in device's framework."""
    # The library's own checks of these sizes, before the arrays are allocated (numpy would refuse a negative size
    # in its own words, or try terabytes).
    _core._check_limit("options.particles", N, 1, limits.max_particles)
    _core._check_limit("options.steps", steps, 1, limits.max_steps)
    shapes = {"particles": ((B, N, d), "float32"), "log_weights": ((B, N), "float32"),
              "samples": ((B, N, d), "float32"), "log_normaliser": ((B,), "float64"),
              "ess_trace": ((B, steps + 1), "float32"), "resample_count": ((B,), "int32")}
    if isinstance(outputs, str):
        raise InvalidArgument(f"outputs: a str ({outputs!r}), expected a sequence of names, e.g. ({outputs!r},)")
    if not isinstance(outputs, collections.abc.Iterable):
        raise InvalidArgument(f"outputs: {_describe(outputs)}, expected a sequence of names, e.g. ('samples',)")
    result = {}
    for name in outputs:
        if name not in shapes:
            raise InvalidArgument(f"outputs: unknown output {name!r} (one of {', '.join(_GUIDED_OUTPUTS)})")
        shape, dtype = shapes[name]
        result[name] = _empty(device, shape, dtype, _GUIDED_SIZE_BY[name], role=name,
                              instead="pass device= a torch or cupy array on that device")
    return result


# ---- metrics --------------------------------------------------------------------------------------------------------


def sliced_wasserstein(a: Array, b: Array, *, directions: int = 256, seed: int = 0, p: int = 1,
                       stream: Stream = None) -> float:
    """Sliced Wasserstein-p distance between two sample sets, over random directions (FP64 projections).

    Args:
        a: (n_a, d) float32 C-contiguous array (NumPy, PyTorch, JAX, CuPy; CPU or CUDA).
        b: (n_b, d) float32 array on a's device.
        directions: number of random directions (>= 1).
        seed: the directions' random stream (direction t uses the Philox stream (seed, t, 0)).
        p: 1 or 2.
        stream: CUDA stream for CUDA arrays; None: the framework's current stream. CPU calls: None or 0.

    Returns the distance as a Python float. Synchronises the stream on CUDA (it returns a host value).
    """
    _array(a, "a", required=True), _array(b, "b", required=True)
    return _core.sliced_wasserstein(a, b, _integer(directions, "directions", 1, 2**31 - 1),
                                    _integer(seed, "seed", 0, _UINT64_MAX), _integer(p, "p", 1, 2),
                                    _stream(a, stream))


def component_weights(reference: Any, x: Array) -> np.ndarray:
    """Component weights recovered from samples: the mean responsibility of each component over the samples.

    Args:
        reference: a MixturePosterior or GaussianMixture (K components, dimension d).
        x: (n, d) float32 C-contiguous samples on the host (NumPy or a CPU tensor; CUDA arrays are refused).

    Returns a new (K,) float64 NumPy array. Synchronous (host only).
    """
    return _core.component_weights(_reference(reference), _array(x, "x", required=True))


def component_weight_error(reference: Any, x: Array) -> float:
    """The largest error of the recovered component weights: max_k |component_weights(reference, x)_k - w_k|.

    Args:
        reference: a MixturePosterior or GaussianMixture whose weights w_k are the truth.
        x: (n, d) float32 C-contiguous samples on the host (NumPy or a CPU tensor).

    Returns a Python float. Synchronous (host only).
    """
    return _core.component_weight_error(_reference(reference), _array(x, "x", required=True))
