"""An array that says through DLPack that it lives on a CUDA device, for the checks of where a call runs on machines
without that device: the binding imports it (a real DLPack capsule over a pointer nothing dereferences), so every
check made before the library runs sees a CUDA array on the device named."""
import ctypes


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]

_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype = ctypes.py_object
_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


@_DELETER
def _keep(_):
    """The memory belongs to the FakeCudaArray (nothing to free)."""


_DTYPES = {"float32": (2, 32), "float64": (2, 64), "int32": (0, 32), "int64": (0, 64), "uint8": (1, 8)}


class FakeCudaArray:
    """A C-contiguous array of `shape` and `dtype` on CUDA device `device` (DLPack device (2, device)) whose data
    pointer points nowhere: only checks made before anything runs may see it."""

    def __init__(self, shape, device=1, dtype="float32"):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = device
        self._extents = (ctypes.c_int64 * max(1, len(shape)))(*shape)
        self._tensor = _DLManagedTensor()
        t = self._tensor.dl_tensor
        t.data = 0x7F0000000000
        t.device = _DLDevice(2, device)
        t.ndim = len(shape)
        t.dtype = _DLDataType(*_DTYPES[dtype], 1)
        t.shape = self._extents
        t.strides = None  # C-contiguous
        t.byte_offset = 0
        self._tensor.deleter = _keep

    def __dlpack_device__(self):
        return (2, self.device)

    def __dlpack__(self, stream=None, **kwargs):
        return _capsule(ctypes.addressof(self._tensor), b"dltensor", None)


class DLPackOnly:
    """An array object with the DLPack protocol only (__dlpack__, __dlpack_device__): no shape, dtype or buffer."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()
