"""The types of diffsample's problem-data arguments, for annotations and type checkers.

Problem data (a mixture's weights, means and variances, an observation operator's matrix, mask indices and gains or
SVD factors, the observations ``y`` and noise levels ``sigma_y``) is read once on the host and copied into the
problem as float64 (the C++ API keeps it as ``std::vector<double>``). The binding reads it as ``read_host`` in
``python/src/core.cpp`` does: an array it imports through DLPack or the buffer protocol, else whatever
``numpy.asarray`` makes of the object (a number, a nested sequence of numbers, an object with ``__array__`` or
``__array_interface__``). These aliases say that in types; the stub of the extension (``_core.pyi``) names them for
every problem-data parameter, and the package's functions take them too:

- ``ProblemData``: an array-like of real numbers of any number of dimensions (each call checks the number it
  needs): a CPU array of any framework (NumPy, PyTorch, JAX), a number, or a nested sequence of numbers.
- ``ProblemScalar``: one real number, a Python number or a 0-d array (``MixturePosterior``'s ``sigma_y``).
- ``ProblemIndices``: integers, a 1-d integer array or a sequence of ints (``ObservationOperator.mask``'s indices).

What a type cannot say is checked when the call runs, with an ``InvalidArgument`` naming the argument: the device
(CUDA arrays are refused: problem data is read on the host), the dtype (complex, bool and non-numeric data are
refused; mask indices must be of an integer dtype), the number of dimensions and the values (finite, in range).

Nothing here runs at import time beyond defining the names; the module needs only the standard library.
"""
from __future__ import annotations

from typing import Any, Dict, Protocol, Sequence, Tuple, Union

__all__ = ["SupportsDLPack", "SupportsArray", "SupportsArrayInterface", "ArrayObject", "NestedReals",
           "ProblemData", "ProblemScalar", "ProblemIndices"]


class SupportsDLPack(Protocol):
    """An array exported through DLPack (``numpy.ndarray``, ``torch.Tensor``, ``jax.Array``, ...)."""

    def __dlpack__(self) -> Any: ...

    def __dlpack_device__(self) -> Tuple[int, int]: ...


class SupportsArray(Protocol):
    """An object NumPy converts through ``__array__`` (NumPy scalars and arrays, tensors, ...)."""

    def __array__(self) -> Any: ...


class SupportsArrayInterface(Protocol):
    """An object exposing NumPy's ``__array_interface__``."""

    @property
    def __array_interface__(self) -> Dict[str, Any]: ...


#: An array object the binding reads on the host: DLPack, ``__array__`` or ``__array_interface__``.
ArrayObject = Union[SupportsDLPack, SupportsArray, SupportsArrayInterface]

#: A (nested) sequence of real numbers or array objects, as ``numpy.asarray`` reads it.
NestedReals = Sequence[Union[float, ArrayObject, "NestedReals"]]

#: Host problem data of real numbers: an array object, a number or a nested sequence of numbers (copied as float64).
ProblemData = Union[ArrayObject, float, NestedReals]

#: One real number: a Python number or a 0-d array object (copied as float64).
ProblemScalar = Union[float, ArrayObject]

#: Integer indices: a 1-d integer array object or a sequence of ints.
ProblemIndices = Union[ArrayObject, Sequence[int]]
