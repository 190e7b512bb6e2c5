// diffsample._core: the C++ API of libdiffsample exposed to Python with nanobind.
//
// Arrays cross by DLPack (nb::ndarray) in both directions and are never copied: every array argument is checked for
// dtype, shape, C-contiguity and device here (errors name the argument), then its data pointer goes to the library.
// The executor follows the arrays' device (CPU arrays: the CPU executor; CUDA arrays: the CUDA executor on the given
// stream). Long calls release the GIL. The friendlier functions of the package (output allocation in the caller's
// framework, the framework's current stream, keyword options) live in diffsample/__init__.py.
//
// Docstrings of the C++ API's fields, properties and members are the public headers' Doxygen comments,
// DS_DOC(scope, name), generated at every build by python/docstrings.py (python/CMakeLists.txt) so that the two
// cannot drift; tests/python/test_docstrings.py checks the built module against the headers.
#include <diffsample/diffsample.hpp>
#if __has_include(<diffsample/plan.hpp>)
#include <diffsample/plan.hpp>
#define DIFFSAMPLE_PY_PLANS 1
#endif

#include <cuda_runtime_api.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "docstrings.hpp"
#include "src/enum_tables.hpp"
#include "src/limits.hpp"
#include "src/mixture_storage.hpp"
#include "src/validate.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <limits>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;
namespace ds = diffsample;

namespace {

// ---- exceptions ---------------------------------------------------------------------------------------------------

PyObject* exc_error = nullptr;
PyObject* exc_invalid = nullptr;
PyObject* exc_oom = nullptr;
PyObject* exc_cuda = nullptr;

[[noreturn]] void raise_invalid(const std::string& message) { throw ds::invalid_argument(message); }

// ---- calls without the GIL, and the interpreter's exit ------------------------------------------------------------

// Every call that runs work releases the GIL (released_gil). A daemon thread still inside such a call when the
// interpreter exits would take the GIL back during finalisation, where CPython ends the thread from inside that
// acquisition: an unwind through the C++ frames of the call, which aborted the process ("terminate called without an
// active exception", exit status 134). So the module's exit hook (registered with atexit at import, run before
// finalisation) waits, without the GIL, until every call in flight has taken the GIL back and returned to Python,
// and from then on refuses new calls from other threads (the thread running the exit hooks is not ended: the hooks
// registered before the import, which run after this one, may still call the library). The wait answers signals
// (Ctrl-C raises KeyboardInterrupt in the hook and the exit goes on, as before the hook). A forked child starts with
// no call in flight (only the forking thread exists there, holding the GIL).
struct call_registry {
  std::mutex m;
  std::condition_variable done;
  std::int64_t in_flight = 0;
  bool exiting = false;
  std::thread::id exit_thread;
};

call_registry& calls() {
  static call_registry* r = new call_registry;  // never destroyed: the exit hook and late calls use it
  return *r;
}

// nb::gil_scoped_release counted in calls(): refused (diffsample.Error) on a thread other than the exit hooks' once
// the interpreter is exiting; the count drops after the GIL is taken back.
class released_gil {
 public:
  released_gil() {
    {
      const std::lock_guard<std::mutex> lock(calls().m);
      if (calls().exiting && std::this_thread::get_id() != calls().exit_thread)
        throw ds::error("the Python interpreter is exiting: no new library call starts on another thread");
      ++calls().in_flight;
    }
    state_ = PyEval_SaveThread();
  }
  ~released_gil() {
    PyEval_RestoreThread(state_);
    const std::lock_guard<std::mutex> lock(calls().m);
    if (--calls().in_flight == 0) calls().done.notify_all();
  }
  released_gil(const released_gil&) = delete;
  released_gil& operator=(const released_gil&) = delete;

 private:
  PyThreadState* state_ = nullptr;
};

// The exit hook: the calls in flight finish first (checking for signals every 100 ms), then no new call starts on
// another thread.
void wait_for_calls_at_exit() {
  {
    const std::lock_guard<std::mutex> lock(calls().m);
    calls().exiting = true;
    calls().exit_thread = std::this_thread::get_id();
  }
  for (;;) {
    bool finished;
    {
      nb::gil_scoped_release release;  // the calls in flight take the GIL back to return
      std::unique_lock<std::mutex> lock(calls().m);
      finished = calls().done.wait_for(lock, std::chrono::milliseconds(100), [] { return calls().in_flight == 0; });
    }
    if (finished) return;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
  }
}

// In a forked child: a fresh registry (the parent's mutex may have been held by a thread that does not exist here).
void reset_calls_in_child() { new (&calls()) call_registry; }

// ---- arrays -------------------------------------------------------------------------------------------------------

using array = nb::ndarray<nb::ro, nb::array_api>;  // any dtype, shape, device; read-only arrays accepted (inputs)
using out_array = nb::ndarray<nb::array_api>;      // writable (outputs)

template <class T>
const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  if constexpr (std::is_same_v<T, double>) return "float64";
  if constexpr (std::is_same_v<T, std::int32_t>) return "int32";
  if constexpr (std::is_same_v<T, std::int64_t>) return "int64";
  if constexpr (std::is_same_v<T, std::uint8_t>) return "uint8";
  return "?";
}

std::string dtype_string(nb::dlpack::dtype t) {
  const char* code = t.code == uint8_t(nb::dlpack::dtype_code::Float)  ? "float"
                     : t.code == uint8_t(nb::dlpack::dtype_code::Int)  ? "int"
                     : t.code == uint8_t(nb::dlpack::dtype_code::UInt) ? "uint"
                     : t.code == uint8_t(nb::dlpack::dtype_code::Bool) ? "bool"
                     : t.code == uint8_t(nb::dlpack::dtype_code::Bfloat) ? "bfloat"
                     : t.code == uint8_t(nb::dlpack::dtype_code::Complex) ? "complex"
                                                                           : "other";
  return std::string(code) + std::to_string(int(t.bits)) + (t.lanes != 1 ? "x" + std::to_string(int(t.lanes)) : "");
}

std::string shape_string(std::size_t ndim, const std::int64_t* s) {
  std::ostringstream os;
  os << '(';
  for (std::size_t i = 0; i < ndim; ++i) os << (i ? ", " : "") << s[i];
  if (ndim == 1) os << ',';
  os << ')';
  return os.str();
}

// Where a call runs: the executor and CUDA device of its arrays.
struct place {
  ds::executor where = ds::executor::automatic;  // automatic: not fixed yet
  int device_id = 0;
  const char* first = nullptr;  // argument that fixed it
};

const char* device_name(int device_type) {
  switch (device_type) {
    case nb::device::cpu::value: return "cpu";
    case nb::device::cuda::value: return "cuda";
    case nb::device::cuda_managed::value: return "cuda_managed";
    case nb::device::cuda_host::value: return "cuda_host";
    default: return "unsupported device";
  }
}

// The one rule of where a call runs: on the device of its arrays. Every array a call takes (inputs, outputs, and
// an array given only to say where the call runs: guided_sample's device, a plan's like) is located here: the first
// fixes the call's place (CPU arrays, pinned host memory included: the CPU executor; CUDA and managed memory: the
// CUDA executor on the array's device), each other one must be on the same executor and device. A call without any
// array runs on the CPU executor (run_on), where a stream is refused as it is for CPU arrays.
template <class A>
void locate(const A& a, const char* name, place& p) {
  ds::executor where;
  int dt = a.device_type();
  if (dt == nb::device::cpu::value || dt == nb::device::cuda_host::value)
    where = ds::executor::cpu;
  else if (dt == nb::device::cuda::value || dt == nb::device::cuda_managed::value)
    where = ds::executor::cuda;
  else
    raise_invalid(std::string(name) + ": arrays on " + device_name(dt) + " are not supported (cpu or cuda)");
  int id = (where == ds::executor::cuda) ? a.device_id() : 0;
  if (p.where == ds::executor::automatic) {
    p.where = where;
    p.device_id = id;
    p.first = name;
  } else if (p.where != where || p.device_id != id) {
    raise_invalid(std::string(name) + ": on " + ds::to_string(where) + ":" + std::to_string(id) + " but " +
                  p.first + " is on " + ds::to_string(p.where) + ":" + std::to_string(p.device_id) +
                  " (every array of a call must be on one device)");
  }
}

// Checks an array's dtype, shape (-1: any), C-contiguity and device, and records or checks the call's place. The shape
// is a braced list ({-1, d}), or a vector (_check_array: the shape the package asks for).
template <class T, class A, class S = std::initializer_list<std::int64_t>>
T* checked(const A& a, const char* name, const S& shape, place& p) {
  if (a.dtype() != nb::dtype<T>()) {
    std::string message = std::string(name) + ": dtype " + dtype_string(a.dtype()) + ", expected " + dtype_name<T>();
    // An array the call writes takes the library's results in its own dtype, in place: no widening or narrowing
    // (16-bit floats are taken as problem data only, read and widened to float64).
    if constexpr (std::is_same_v<A, out_array>)
      message += std::string("; the call writes ") + dtype_name<T>() + " results into " + name + " in place: pass a " +
                 dtype_name<T>() + " array (a converted copy of " + name + " would not receive the results)";
    raise_invalid(message);
  }
  std::vector<std::int64_t> got(a.ndim());
  for (std::size_t i = 0; i < a.ndim(); ++i) got[i] = std::int64_t(a.shape(i));
  bool ok = a.ndim() == shape.size();
  std::size_t i = 0;
  for (std::int64_t want : shape) {
    if (ok && want >= 0 && got[i] != want) ok = false;
    ++i;
  }
  if (!ok) {
    std::vector<std::int64_t> w(shape.begin(), shape.end());
    std::ostringstream os;
    os << name << ": shape " << shape_string(got.size(), got.data()) << ", expected (";
    for (std::size_t j = 0; j < w.size(); ++j) {
      os << (j ? ", " : "");
      if (w[j] < 0) os << '*'; else os << w[j];
    }
    os << (w.size() == 1 ? ",)" : ")");
    raise_invalid(os.str());
  }
  // C-contiguous (row-major, dense); dimensions of extent 1 may carry any stride, and an array without elements is
  // contiguous whatever its strides (NumPy exports an empty array's strides as 0).
  const bool empty = std::find(got.begin(), got.end(), std::int64_t(0)) != got.end();
  std::int64_t expect = 1;
  for (std::size_t j = a.ndim(); j-- > 0 && !empty;) {
    if (got[j] != 1 && a.stride(j) != expect) {
      std::ostringstream os;
      os << name << ": not C-contiguous (strides ";
      for (std::size_t k = 0; k < a.ndim(); ++k) os << (k ? ", " : "") << a.stride(k);
      os << " elements for shape " << shape_string(got.size(), got.data()) << "); ";
      // An array the call writes cannot be replaced by a contiguous copy: the copy would receive the results.
      if constexpr (std::is_same_v<A, out_array>)
        os << "pass a contiguous array (a contiguous copy of " << name << " would not receive the results)";
      else
        os << "pass a contiguous array (numpy.ascontiguousarray, tensor.contiguous())";
      raise_invalid(os.str());
    }
    expect *= got[j];
  }
  locate(a, name, p);
  return static_cast<T*>(const_cast<void*>(static_cast<const void*>(a.data())));
}

template <class T, class A>
T* checked_opt(const std::optional<A>& a, const char* name, std::initializer_list<std::int64_t> shape, place& p) {
  return a ? checked<T>(*a, name, shape, p) : nullptr;
}

template <class A>
std::int64_t dim_of(const A& a, std::size_t i) { return i < a.ndim() ? std::int64_t(a.shape(i)) : -2; }

// ---- devices and streams ------------------------------------------------------------------------------------------
//
// A call runs on the device of its arrays. The CUDA runtime launches on the calling thread's current device, which
// need not be theirs (a PyTorch tensor on cuda:1 while cuda:0 is current): the library's kernels, its workspace and
// the legacy default stream were the current device's, reading and writing another device's memory (a fault where
// the devices cannot reach each other's memory, silent peer traffic where they can), and a stream of the arrays'
// device could not take the launch. So a call on CUDA arrays makes their device current while it runs and restores
// the caller's after (cudaSetDevice selects, it does not synchronise); a device the runtime does not see is refused
// naming it. The caller's stream must be one of that device's (checked with cudaStreamGetDevice), and a stream given
// for a call that runs on the CPU executor is refused: it says the caller meant a CUDA run, which this is not.

// Makes a CUDA device current for the life of the object and restores the device current before.
class device_scope {
 public:
  device_scope() = default;
  device_scope(const device_scope&) = delete;
  device_scope& operator=(const device_scope&) = delete;
  ~device_scope() {
    if (previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
  }

  // who: what is on the device ("x", "the plan"), named in the errors.
  void enter(int device, const std::string& who) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      count = 0;
    }
    if (device < 0 || device >= count)
      raise_invalid(who + ": on cuda:" + std::to_string(device) + ", but the CUDA runtime sees " +
                    (count == 0 ? "no device (" + ds::cuda_unavailable_reason() + ")"
                                : std::to_string(count) + (count == 1 ? " device (cuda:0)"
                                                                      : " devices (cuda:0 to cuda:" +
                                                                            std::to_string(count - 1) + ")")));
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess) {
      cudaGetLastError();
      current = -1;
    }
    if (current == device) return;
    const cudaError_t status = cudaSetDevice(device);
    if (status != cudaSuccess) {
      cudaGetLastError();
      throw ds::cuda_error(who + ": on cuda:" + std::to_string(device) + ", which cannot be made current for the call "
                           "(cudaSetDevice: " + cudaGetErrorString(status) + ")", int(status));
    }
    previous_ = current;
  }

 private:
  int previous_ = -1;  // the device to restore; -1: none
};

// Checks the caller's stream against where a call runs (where, device; who: what put it there, "x is on cpu:0"):
// none (0) on the CPU executor, one of the device's streams on CUDA.
void check_stream(std::uintptr_t stream, ds::executor where, int device, const std::string& who) {
  if (stream == 0) return;
  if (where != ds::executor::cuda)
    raise_invalid("stream: " + std::to_string(stream) + ", but the call runs on the CPU executor (" + who +
                  "); a stream orders CUDA work only: pass stream=None");
  const auto handle = reinterpret_cast<cudaStream_t>(stream);
  if (handle == cudaStreamLegacy || handle == cudaStreamPerThread) return;  // the current device's own
#if CUDART_VERSION >= 12080
  int on = -1;
  const cudaError_t status = cudaStreamGetDevice(handle, &on);
  if (status != cudaSuccess) {
    cudaGetLastError();
    raise_invalid("stream: " + std::to_string(stream) + " is not a CUDA stream the runtime knows "
                  "(cudaStreamGetDevice: " + cudaGetErrorString(status) + ")");
  }
  if (on != device)
    raise_invalid("stream: a stream of cuda:" + std::to_string(on) + ", but " + who +
                  " (a call runs on its arrays' device, and a kernel cannot be launched into another device's "
                  "stream): pass a stream of cuda:" + std::to_string(device) + " or None");
#else
  (void)device;
  (void)who;
#endif
}

std::string where_text(ds::executor where, int device) {
  return std::string(ds::to_string(where)) + ":" + std::to_string(where == ds::executor::cuda ? device : 0);
}

// Where a call on the arrays of p runs: the executor and the caller's stream (checked), with the arrays' CUDA device
// current while the object lives.
struct run_on {
  run_on(const place& p, std::uintptr_t stream) : run_on(p.where, p.device_id, p.first, stream) {}
  // first: the argument (or object) whose device the call takes, named in the errors; nullptr: no array.
  run_on(ds::executor where, int device, const char* first, std::uintptr_t stream) {
    exec.kind = where == ds::executor::automatic ? ds::executor::cpu : where;
    exec.stream = reinterpret_cast<cudaStream_t>(stream);
    if (where == ds::executor::automatic) {  // no array: the CPU executor, which takes no stream
      check_stream(stream, ds::executor::cpu, 0, "the call has no array: no output, no device");
      return;
    }
    if (where == ds::executor::cuda) scope.enter(device, first);
    check_stream(stream, where, device, std::string(first) + " is on " + where_text(where, device));
  }
  ds::execution exec;
  device_scope scope;
};

// The CUDA device of a device allocation; -1 when the runtime cannot tell (no device, host memory).
int device_of(const void* pointer) {
  if (pointer == nullptr) return -1;
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged ? attributes.device : -1;
}

// Refuses an object whose device tables (uploaded to the device current when it was built) are on another CUDA
// device than the call's arrays: its kernels would read another device's memory. name: the object's argument;
// tables: the device the tables are on (-1: none, or unknown).
void expect_tables_on(int tables, const place& p, const std::string& name, const char* kind) {
  if (p.where != ds::executor::cuda || tables < 0 || tables == p.device_id) return;
  raise_invalid(name + ": its tables are on cuda:" + std::to_string(tables) + ", but " + p.first + " is on cuda:" +
                std::to_string(p.device_id) + " (a " + kind + " copies its tables to the device current when it is "
                "made: make it with cuda:" + std::to_string(p.device_id) + " current, e.g. under "
                "torch.cuda.device(" + std::to_string(p.device_id) + "), or pass arrays on cuda:" +
                std::to_string(tables) + ")");
}

void expect_tables_on(const ds::gaussian_mixture& g, const place& p, const std::string& name) {
  if (p.where == ds::executor::cuda) expect_tables_on(device_of(g.storage().device), p, name, "GaussianMixture");
}

// The objects whose __init__ is running. nanobind refuses __init__ on an object already made, but it marks the
// object made only when the constructor returns, and these constructors release the GIL: without this set a second
// thread's __init__ of the same object (made with __new__) passed nanobind's check and constructed into it too.
std::mutex constructing_mutex;
std::unordered_set<const void*> constructing;

// Held over one __init__ (taken before the GIL is released, so its refusal is the second caller's).
class construction {
 public:
  explicit construction(const void* self) : self_(self) {
    std::lock_guard<std::mutex> lock(constructing_mutex);
    if (!constructing.insert(self).second) throw nb::type_error("__init__ of this object is running in another thread");
  }
  ~construction() {
    std::lock_guard<std::mutex> lock(constructing_mutex);
    constructing.erase(self_);
  }
  construction(const construction&) = delete;
  construction& operator=(const construction&) = delete;

 private:
  const void* self_;
};

// The device each MixturePosterior made here copied its sampling tables to (the device current when it was made;
// -1 without one): the C++ class keeps its tables to itself. Every posterior the module makes goes through its
// __init__, which sets its entry, so an entry left by a freed object is overwritten before a new one at its address
// is read.
std::mutex posterior_devices_mutex;
std::unordered_map<const ds::mixture_posterior*, int> posterior_devices;

void expect_tables_on(const ds::mixture_posterior& q, const place& p, const std::string& name) {
  if (p.where != ds::executor::cuda) return;
  int tables = -1;
  {
    std::lock_guard<std::mutex> lock(posterior_devices_mutex);
    auto it = posterior_devices.find(&q);
    if (it != posterior_devices.end()) tables = it->second;
  }
  expect_tables_on(tables, p, name, "MixturePosterior");
}

// ---- problem data (host, FP64) -------------------------------------------------------------------------------------
//
// The C++ API takes a problem's data (a mixture's parameters, an observation operator's matrix, mask or SVD factors,
// the observations y and noise levels sigma_y) as std::vector<double> on the host and keeps its own copy, so these
// arguments are read once and copied, not read in place: any array the library can import (DLPack or the buffer
// protocol: NumPy, PyTorch, JAX, CuPy) on the CPU, of any strides, of a real dtype (float16, bfloat16, float32,
// float64, integers: widened exactly to double), or a Python number or nested sequence of numbers (read through
// numpy.asarray). CUDA arrays are refused (the copy to the host is the caller's to make explicitly), as are complex,
// bool and non-numeric data; the number of dimensions is checked against `expected`. Errors name the argument.
// Finiteness and value ranges are the library's checks (its messages name the field: observation.A[0], problems.y[1],
// ...).
struct host_data {
  std::vector<double> values;
  std::vector<std::int64_t> shape;
  std::string dtype;      // as dtype_string() names it
  bool integral = false;  // an integer dtype
  std::vector<std::int64_t> indices;  // read_host(..., indices = true): the values as integers (values is empty)
};

// The 16-bit floating-point formats problem data may come in (NumPy's float16, PyTorch's and JAX's bfloat16, ...):
// every value of either is a float64 value (a subset of float32's, themselves float64's), so they widen exactly,
// as float32 and the integers up to 2^53 do. Read bit by bit: the host compiler need not know either type.
struct float16_bits {
  std::uint16_t bits;
  explicit operator double() const {
    const int sign = bits >> 15, exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
    double magnitude;
    if (exponent == 0x1f)
      magnitude = mantissa != 0 ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    else if (exponent == 0)
      magnitude = std::ldexp(double(mantissa), -24);  // subnormal: mantissa x 2^-24
    else
      magnitude = std::ldexp(double(mantissa | 0x400), exponent - 25);
    return sign ? -magnitude : magnitude;
  }
};
struct bfloat16_bits {
  std::uint16_t bits;
  explicit operator double() const {  // the high half of a float32
    const std::uint32_t word = std::uint32_t(bits) << 16;
    float value;
    std::memcpy(&value, &word, sizeof value);
    return double(value);
  }
};
static_assert(sizeof(float16_bits) == 2 && sizeof(bfloat16_bits) == 2);

// Copies a's values in row-major order as doubles (Out = double), or as int64 indices (Out = std::int64_t, integer
// dtypes). An int64 or uint64 value beyond 2^53 in magnitude has no exact double: refused naming name[k] (it was
// rounded without a word, though integers are documented to widen exactly). Indices are copied as integers, exactly
// (read through float64, 2^63 - 1 was rounded to 2^63 and refused as at least 2^63); a uint64 index from 2^63 on is
// no int64 (the conversion would be undefined) and is refused here (every index the library takes is below d_x).
template <class T, class Out = double>
void copy_strided(const array& a, std::vector<Out>& out, const std::string& name) {
  const T* base = static_cast<const T*>(a.data());
  const std::size_t nd = a.ndim();
  std::vector<std::int64_t> index(nd, 0);
  for (std::size_t k = 0; k < out.size(); ++k) {
    std::int64_t offset = 0;
    for (std::size_t j = 0; j < nd; ++j) offset += index[j] * std::int64_t(a.stride(j));
    const T value = base[offset];
    if constexpr (std::is_same_v<Out, double>) {
      if constexpr (std::is_integral_v<T> && sizeof(T) == 8) {
        constexpr T exact_limit = T(1) << 53;
        bool inexact = value > exact_limit;
        if constexpr (std::is_signed_v<T>) inexact = inexact || value < -exact_limit;
        if (inexact)
          raise_invalid(name + "[" + std::to_string(k) + "]: " + std::to_string(value) +
                        " is not exact in float64 (the problem keeps float64 values, exact for integers up to 2^53 in "
                        "magnitude); pass float64 values");
      }
      out[k] = double(value);
    } else {
      if constexpr (std::is_same_v<T, std::uint64_t>) {
        if (value > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
          raise_invalid(name + ": index " + std::to_string(k) + " is " + std::to_string(value) +
                        ", outside [0, d_x)");
      }
      out[k] = std::int64_t(value);
    }
    for (std::size_t j = nd; j-- > 0;) {  // row-major order
      if (++index[j] < std::int64_t(a.shape(j))) break;
      index[j] = 0;
    }
  }
}

// The problem-data parameters: any object (read_host() decides what it accepts and names the argument in its errors),
// typed in the signatures and the stub (_core.pyi) by the aliases of diffsample/typing.py, which the stub imports
// (python/stub_patterns.txt): ProblemData (an array-like of real numbers), ProblemScalar (a number or 0-d array),
// ProblemIndices (integers). tests/python/test_stubs.py holds the stub to these signatures.
inline bool any_object(PyObject*) { return true; }
struct problem_data : nb::object {
  NB_OBJECT_DEFAULT(problem_data, object, "ProblemData", any_object)
};
struct problem_scalar : nb::object {
  NB_OBJECT_DEFAULT(problem_scalar, object, "ProblemScalar", any_object)
};
struct problem_indices : nb::object {
  NB_OBJECT_DEFAULT(problem_indices, object, "ProblemIndices", any_object)
};
// A view of plan memory: a NumPy array on the CPU executor, a DLPack-capable array on CUDA (the package hands it
// to the caller's framework), so typed as any array in the signatures and the stub rather than `object`.
struct array_view : nb::object {
  NB_OBJECT_DEFAULT(array_view, object, "typing.Any", any_object)
};

// Integer and real parameters of the module's functions and methods (ObservationOperator.mask's d_x,
// NoiseSchedule's factories, at() and points(), every stream, seed, size and index of _core's own calls, the
// channels' a and s): typed int and float in the signatures and the stub, taken as
// any object, so that what nanobind would refuse with a TypeError naming neither the argument nor the value (a float
// for an int, an integer beyond int64, a str), or take silently (a bool), is an InvalidArgument naming the argument,
// in the words of the package's own checks of its arguments (diffsample/__init__.py: _integer, _real). None is still
// nanobind's TypeError: letting it through (has_arg_defaults) would type these parameters `int | None` in the stub.
struct py_int : nb::object {
  NB_OBJECT_DEFAULT(py_int, object, "int", any_object)
};
struct py_real : nb::object {
  NB_OBJECT_DEFAULT(py_real, object, "float", any_object)
};
// An enum parameter of _core's own functions (GaussianMixtureCore.evaluate's what and path, the plans' output and
// executor): typed as the enum in the signatures and the stub, taken as any object and read by enum_arg() (after
// setting_value), which takes the enum or its name and refuses anything else naming the argument. nanobind's enum
// conversion took an int or a bool as the enum value it equals (what=1 evaluated the score, executor=True asked for
// CUDA) and refused another int or a name with a TypeError naming neither.
template <class E>
struct py_enum : nb::object {
  static constexpr auto Name = nb::detail::const_name<E>();
  py_enum(nb::handle h, nb::detail::borrow_t) : nb::object(h, nb::detail::borrow_t{}) {}
  py_enum(nb::handle h, nb::detail::steal_t) : nb::object(h, nb::detail::steal_t{}) {}
  py_enum() : nb::object() {}
  static bool check_(nb::handle) { return true; }
};

bool is_bool(nb::handle h) {
  const std::string type = Py_TYPE(h.ptr())->tp_name;
  return PyBool_Check(h.ptr()) || type == "numpy.bool" || type == "numpy.bool_";
}

// A value as the package's messages show it: None and bools as their repr, anything else as its type and repr.
std::string describe(nb::handle h) {
  std::string text = nb::repr(h).c_str();
  if (h.is_none() || PyBool_Check(h.ptr())) return text;
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return std::string("a ") + nb::str(h.type().attr("__name__")).c_str() + " (" + text + ")";
}

// A value float() or an index would take with a loss, so no real number and no integer here: a complex one (NumPy's
// complex scalars convert, with a ComplexWarning only, to their real part) or a bool array or tensor (True read as
// 1.0 or 1; torch.tensor(True) has __index__), judged by its dtype (NumPy's, PyTorch's, JAX's: complex64,
// torch.bool, ...). The package's _real() refuses the same values; its _integer() takes ints and NumPy integers only.
bool complex_or_bool(nb::handle h) {
  if (PyComplex_Check(h.ptr())) return true;
  if (!nb::hasattr(h, "dtype")) return false;
  const std::string type = nb::str(nb::object(h.attr("dtype"))).c_str();
  return type.find("complex") != std::string::npos || type.find("bool") != std::string::npos;
}

// The one conversion of the binding's integer parameters (typed int: py_int), to the C++ type T the library takes:
// an int, a NumPy integer scalar or a 0-d integer array or tensor (anything with __index__ but a bool), within T's
// range, else InvalidArgument naming the argument, in the words of the package's _integer(). Refused: None, a
// bool (Python's True, numpy.True_, a bool array or tensor: nanobind's int conversion took True as 1, so
// stream=True ran on cudaStreamLegacy and seed=True as seed 1), a float even with an integral value (the package's
// rule: DiffusionPlan(4.0, 2) is refused as 4.5 is, never cut) and anything else. range_is: what the range is, said
// after it (default: the argument's integer type).
template <class T>
T int_arg(nb::handle h, const std::string& name, const char* range_is = nullptr) {
  static_assert(std::is_integral_v<T> && sizeof(T) == 8 || std::is_same_v<T, int>, "an integer type of the API");
  constexpr T lo = std::numeric_limits<T>::min(), hi = std::numeric_limits<T>::max();
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  nb::object index;
  if (!h.is_none() && !is_bool(h) && !PyFloat_Check(h.ptr()) && PyIndex_Check(h.ptr()) && !complex_or_bool(h)) {
    index = nb::steal(PyNumber_Index(h.ptr()));
    if (!index.is_valid()) PyErr_Clear();
  }
  if (!index.is_valid())
    raise_invalid(name + ": expected an integer in " + range + ", got " + nb::repr(h).c_str());
  bool inside = false;
  T value{};
  if constexpr (std::is_signed_v<T>) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    inside = overflow == 0 && v >= lo && v <= hi;
    value = T(v);
  } else if (PyObject_RichCompareBool(index.ptr(), nb::int_(0).ptr(), Py_LT) != 1) {
    const unsigned long long v = PyLong_AsUnsignedLongLong(index.ptr());
    if (PyErr_Occurred()) PyErr_Clear();
    else inside = true, value = T(v);
  }
  if (!inside) {
    const char* type = std::is_same_v<T, int> ? "int32" : std::is_signed_v<T> ? "int64" : "uint64";
    raise_invalid(name + ": " + nb::str(index).c_str() + " is outside " + range + " (" +
                  (range_is ? std::string(range_is) : "the argument's integer type, " + std::string(type)) + ")");
  }
  return value;
}

std::int64_t int64_arg(nb::handle h, const std::string& name) { return int_arg<std::int64_t>(h, name); }

// A stream= parameter of _core: a CUDA stream handle, an integer in [0, 2^64 - 1] (0: none, the CPU executor's).
std::uintptr_t stream_arg(nb::handle h) {
  static_assert(sizeof(std::uintptr_t) == sizeof(std::uint64_t));
  return std::uintptr_t(int_arg<std::uint64_t>(h, "stream", "a CUDA stream handle"));
}

double real_arg(nb::handle h, const std::string& name) {
  if (h.is_none() || is_bool(h) || PyUnicode_Check(h.ptr()) || PyBytes_Check(h.ptr()) || complex_or_bool(h))
    raise_invalid(name + ": " + describe(h) + ", expected a real number");
  const double value = PyFloat_AsDouble(h.ptr());
  if (value == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    raise_invalid(name + ": " + describe(h) + ", expected a real number");
  }
  return value;
}

// The one conversion of the binding's real-number parameters (typed float: py_real, and the real parameters of the
// calls bound as (*args, **kwargs)): a real number that is finite, else InvalidArgument naming the argument. A double
// parameter took a bool as 1.0 and a NumPy complex value as its real part (a ComplexWarning only), and a NaN went on
// to the library, whose message named its own field (ch.a) rather than the argument; every real parameter of the
// module is one the library requires finite (a channel's a and s, a variance, a grid's spacing, a schedule's
// parameters).
double finite_real_arg(nb::handle h, const std::string& name) {
  const double value = real_arg(h, name);
  if (!std::isfinite(value))
    raise_invalid(name + ": " + nb::repr(nb::float_(value)).c_str() + ", expected a finite number");
  return value;
}

ds::channel channel_arg(nb::handle a, nb::handle s) { return {finite_real_arg(a, "a"), finite_real_arg(s, "s")}; }

// ---- settings: the fields of the options structs and schedules --------------------------------------------------
//
// Every field of LangevinOptions, DiffusionOptions, ResamplingOptions, GuidedOptions, NoiseSchedule and
// GuidedProblems is set through a setter that takes any object (None too) and checks it here, naming the field:
// nanobind's own setters refused None, a str for an enum or a float for an int with a TypeError naming neither the
// field nor the value ("incompatible function arguments"), and took a bool as a number and an int as an enum value.
// The words are those of the package's keyword settings (diffsample/__init__.py, _fill), which set fields through
// these setters: a value of the wrong type is a TypeError (`particles: a float (4.7), expected int`), an integer
// outside the field's C++ type or a real number that is not finite an InvalidArgument. Value ranges beyond that are
// the library's checks where the options are used (their messages name options.<field>). The setters keep the
// signature nanobind gives a field of the C++ type (nb::sig), so the stub is what it was.
[[noreturn]] void raise_type(const std::string& message) { throw nb::type_error(message.c_str()); }

std::string setting_got(nb::handle h) {
  if (is_bool(h)) return "a bool";
  return describe(h);
}

template <class E>
E parse_enum(const std::string& s) {
  if constexpr (std::is_same_v<E, ds::executor>) return ds::parse_executor(s);
  else if constexpr (std::is_same_v<E, ds::schedule_kind>) return ds::parse_schedule_kind(s);
  else if constexpr (std::is_same_v<E, ds::time_grid>) return ds::parse_time_grid(s);
  else if constexpr (std::is_same_v<E, ds::diffusion_sampler>) return ds::parse_diffusion_sampler(s);
  else if constexpr (std::is_same_v<E, ds::model_output>) return ds::parse_model_output(s);
  else if constexpr (std::is_same_v<E, ds::langevin_method>) return ds::parse_langevin_method(s);
  else if constexpr (std::is_same_v<E, ds::resampling_scheme>) return ds::parse_resampling_scheme(s);
  else if constexpr (std::is_same_v<E, ds::guided_sampler>) return ds::parse_guided_sampler(s);
  else if constexpr (std::is_same_v<E, ds::dps_step_form>) return ds::parse_dps_step_form(s);
  else if constexpr (std::is_same_v<E, ds::guided_potentials>) return ds::parse_guided_potentials(s);
  else if constexpr (std::is_same_v<E, ds::guided_grid>) return ds::parse_guided_grid(s);
  else if constexpr (std::is_same_v<E, ds::mixture_path>) return ds::parse_mixture_path(s);
  else if constexpr (std::is_same_v<E, ds::quantity>) {  // (the library has no parser: from its one list)
#define DIFFSAMPLE_PY_QUANTITY_NAME(type, value, c_name) \
  if (s == #value) return ds::type::value;
    DIFFSAMPLE_QUANTITY_VALUES(DIFFSAMPLE_PY_QUANTITY_NAME)
#undef DIFFSAMPLE_PY_QUANTITY_NAME
#define DIFFSAMPLE_PY_QUANTITY_LIST(type, value, c_name) #value ", "
    const std::string names = DIFFSAMPLE_QUANTITY_VALUES(DIFFSAMPLE_PY_QUANTITY_LIST);
#undef DIFFSAMPLE_PY_QUANTITY_LIST
    raise_invalid("unknown quantity '" + s + "' (" + names.substr(0, names.size() - 2) + ")");
  }
  else static_assert(sizeof(E) == 0, "an enum field without a parser");
}

template <class T>
inline constexpr bool is_vector_v = false;
template <class T>
inline constexpr bool is_vector_v<std::vector<T>> = true;

// The field's type as nanobind's signatures name it (the stub simplifies the module prefix).
template <class M>
std::string setting_type() {
  if constexpr (std::is_same_v<M, bool>) return "bool";
  else if constexpr (std::is_integral_v<M>) return "int";
  else if constexpr (std::is_floating_point_v<M>) return "float";
  else if constexpr (std::is_same_v<M, std::vector<double>>) return "collections.abc.Sequence[float]";
  else if constexpr (is_vector_v<M>)
    return "collections.abc.Sequence[" + std::string(nb::type_name(nb::type<typename M::value_type>()).c_str()) + "]";
  else return nb::type_name(nb::type<M>()).c_str();
}

template <class M>
M setting_value(nb::handle h, const std::string& name) {
  if constexpr (std::is_same_v<M, bool>) {
    if (!is_bool(h)) raise_type(name + ": " + setting_got(h) + ", expected bool");
    return PyObject_IsTrue(h.ptr()) == 1;
  } else if constexpr (std::is_integral_v<M>) {
    nb::object index;
    if (!h.is_none() && !is_bool(h) && !PyFloat_Check(h.ptr()) && PyIndex_Check(h.ptr()) && !complex_or_bool(h)) {
      index = nb::steal(PyNumber_Index(h.ptr()));
      if (!index.is_valid()) PyErr_Clear();
    }
    if (!index.is_valid()) raise_type(name + ": " + setting_got(h) + ", expected int");
    constexpr auto lo = std::numeric_limits<M>::min();
    constexpr auto hi = std::numeric_limits<M>::max();
    bool inside = false;
    M value{};
    if constexpr (std::is_signed_v<M>) {
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
      inside = overflow == 0 && v >= lo && v <= hi;
      value = M(v);
    } else {
      const bool negative = PyObject_RichCompareBool(index.ptr(), nb::int_(0).ptr(), Py_LT) == 1;
      if (!negative) {
        const unsigned long long v = PyLong_AsUnsignedLongLong(index.ptr());
        if (PyErr_Occurred()) PyErr_Clear();
        else inside = v <= hi, value = M(v);
      }
    }
    if (!inside)
      raise_invalid(name + ": " + nb::str(index).c_str() + " is outside [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "] (the setting's integer type)");
    return value;
  } else if constexpr (std::is_floating_point_v<M>) {
    if (h.is_none() || is_bool(h) || PyUnicode_Check(h.ptr()) || PyBytes_Check(h.ptr()) || complex_or_bool(h))
      raise_type(name + ": " + setting_got(h) + ", expected float");
    const double value = PyFloat_AsDouble(h.ptr());
    if (value == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      raise_type(name + ": " + setting_got(h) + ", expected float");
    }
    if (!std::isfinite(value))
      raise_invalid(name + ": " + nb::repr(nb::float_(value)).c_str() + ", expected a finite number");
    return M(value);
  } else if constexpr (std::is_enum_v<M>) {
    if (PyUnicode_Check(h.ptr())) {
      try {
        return parse_enum<M>(nb::cast<std::string>(h));
      } catch (const ds::invalid_argument& e) {
        const std::string what = e.what();
        if (what.rfind(name + ":", 0) == 0) throw;
        // The parser names what it parses (path: unknown name 'cuda'): that name gives way to the setting's
        // (operator_path: path: unknown name ... said it twice).
        const std::size_t colon = what.find(": ");
        const bool word = colon != std::string::npos && colon > 0 &&
                          std::all_of(what.begin(), what.begin() + std::ptrdiff_t(colon),
                                      [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
        raise_invalid(name + ": " + (word ? what.substr(colon + 2) : what));
      }
    }
    nb::handle type = nb::type<M>();
    if (!nb::isinstance(h, type)) {
      std::string names;
      for (nb::handle key : type.attr("__members__"))
        names += (names.empty() ? "" : ", ") + std::string(nb::str(key).c_str());
      raise_type(name + ": " + setting_got(h) + ", expected a name (" + names + ") or a " +
                 nb::type_name(type).c_str());
    }
    return nb::cast<M>(h);
  } else {
    if constexpr (std::is_same_v<M, std::vector<double>>) {
      // nanobind's conversion takes each value as float() does: a bool as 1.0, a NumPy complex value as its real
      // part (a ComplexWarning only); refused here, an array by its dtype, a sequence item by item.
      bool lossy = !h.is_none() && complex_or_bool(h);
      if (!lossy && !h.is_none() && !nb::hasattr(h, "dtype") && !PyUnicode_Check(h.ptr()) &&
          !PyBytes_Check(h.ptr()) && PySequence_Check(h.ptr())) {
        nb::object items = nb::steal(PySequence_Fast(h.ptr(), "a sequence"));
        if (!items.is_valid()) PyErr_Clear();
        for (Py_ssize_t k = 0; items.is_valid() && k < PySequence_Fast_GET_SIZE(items.ptr()) && !lossy; ++k) {
          nb::handle item = PySequence_Fast_GET_ITEM(items.ptr(), k);
          lossy = is_bool(item) || complex_or_bool(item);
        }
      }
      if (lossy)
        raise_type(name + ": " + setting_got(h) + ", expected a sequence of floats (a bool or complex value is no "
                   "real number)");
    }
    M value;
    if (h.is_none() || !nb::try_cast(h, value)) {
      std::string expected;
      if constexpr (std::is_same_v<M, std::vector<double>>) expected = "a sequence of floats";
      else if constexpr (is_vector_v<M>)
        expected = "a sequence of " + std::string(nb::type_name(nb::type<typename M::value_type>()).c_str());
      else expected = "a " + std::string(nb::type_name(nb::type<M>()).c_str());
      raise_type(name + ": " + setting_got(h) + ", expected " + expected);
    }
    // A sequence of reals takes finite numbers only, as a real field does (a NaN time or alpha-bar was kept, and
    // refused where the schedule was used, as a time out of order).
    if constexpr (std::is_same_v<M, std::vector<double>>) {
      for (std::size_t k = 0; k < value.size(); ++k)
        if (!std::isfinite(value[k]))
          raise_invalid(name + "[" + std::to_string(k) + "]: " + nb::repr(nb::float_(value[k])).c_str() +
                        ", expected a finite number");
    }
    return value;
  }
}

// A bound type's Python name as nanobind's signatures give it (diffsample._core.X; _core.X when stubgen imports the
// extension as a top-level module), for the signatures written out with nb::sig.
template <class T>
std::string py_name() {
  return nb::type_name(nb::type<T>()).c_str();
}

// A signature written out (nb::sig: the parameters that take None to refuse it by name keep their types in the stub)
// returning T.
template <class T>
nb::sig sig_to(const std::string& head) {
  static std::deque<std::string> keep;  // nb::sig holds a pointer (nanobind copies the text when it binds)
  keep.push_back(head + " -> " + py_name<T>());
  return nb::sig(keep.back().c_str());
}

// A parameter of a bound class's method checked as a field is (None, the wrong type, an enum's name), every refusal
// an InvalidArgument naming the parameter, as the package's and the binding's other argument checks are.
template <class M>
M arg_value(nb::handle h, const std::string& name) {
  try {
    return setting_value<M>(h, name);
  } catch (const nb::builtin_exception& e) {  // the setting's TypeError
    raise_invalid(e.what());
  }
}

// An enum parameter of _core's own functions (py_enum): the enum or its name, else InvalidArgument naming it.
template <class E>
E enum_arg(const py_enum<E>& h, const std::string& name) {
  return arg_value<E>(h, name);
}
template <class E>
std::optional<E> enum_arg(const std::optional<py_enum<E>>& h, const std::string& name) {
  if (!h) return std::nullopt;
  return arg_value<E>(*h, name);
}

// A field of an options struct (or a member reached through getter/setter lambdas) bound with the checked setter.
template <class C, class M>
void def_setting(nb::class_<C>& cls, const char* name, M C::*member, const char* doc) {
  const std::string sig = std::string("def ") + name + "(self, arg: " + setting_type<M>() + ", /) -> None";
  const std::string field = name;
  cls.def_prop_rw(
      name, [member](C& c) -> M& { return c.*member; },
      [member, field](C& c, nb::handle v) { c.*member = setting_value<M>(v, field); },
      nb::for_getter(nb::rv_policy::reference_internal), nb::for_setter(nb::arg("arg").none()),
      nb::for_setter(nb::sig(sig.c_str())), doc);
}

// ---- calls bound as (*args, **kwargs) -------------------------------------------------------------------------
//
// The callables of the classes and functions the package re-exports as they are bound (NoiseSchedule,
// ObservationOperator, the options classes, cpu_threads() ...) take their arguments as (*args, **kwargs), with the
// signature written out (nb::sig: the stub is the one a typed signature gives). nanobind's own matching refused a
// missing, extra or misspelt argument, and a constructor given any argument, with "f(): incompatible function
// arguments. The following argument types are supported: ...", or "no constructor defined!", for every mismatch.
// They are matched here as Python matches a def's parameters, and a mismatch is the TypeError Python words for one,
// naming the call; the values are then checked by name as before (InvalidArgument).
std::string counted(std::size_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

class call_arguments {
 public:
  // call: the name the errors give ("NoiseSchedule.at"); names: the parameters in order; required: how many of the
  // first must be given (the others have defaults).
  call_arguments(const std::string& call, const nb::args& args, const nb::kwargs& kwargs,
                 std::initializer_list<const char*> names, std::size_t required)
      : names_(names), values_(names.size()) {
    if (args.size() > names_.size())
      raise_type(call + "() takes " + counted(names_.size(), "positional argument") + " but " +
                 std::to_string(args.size()) + (args.size() == 1 ? " was" : " were") + " given");
    for (std::size_t i = 0; i < args.size(); ++i) values_[i] = args[i];
    for (auto [key, value] : kwargs) {
      const std::string k = nb::str(key).c_str();
      auto it = std::find_if(names_.begin(), names_.end(), [&](const char* n) { return k == n; });
      if (it == names_.end()) raise_type(call + "() got an unexpected keyword argument '" + k + "'");
      nb::handle& slot = values_[std::size_t(it - names_.begin())];
      if (slot.is_valid()) raise_type(call + "() got multiple values for argument '" + k + "'");
      slot = value;
    }
    std::string missing;
    std::size_t count = 0;
    for (std::size_t i = 0; i < required; ++i)
      if (!values_[i].is_valid()) missing += (count++ ? ", '" : "'") + std::string(names_[i]) + "'";
    if (count != 0) raise_type(call + "() missing " + counted(count, "required argument") + ": " + missing);
  }

  // The i-th parameter's value; an invalid handle when it was not given.
  nb::handle operator[](std::size_t i) const { return values_[i]; }
  bool given(std::size_t i) const { return values_[i].is_valid(); }
  // A real parameter: given, a finite real number (the fields it sets refuse others when set one by one: a NaN
  // given here was kept until the schedule was used); not given, the default.
  double real(std::size_t i, double fallback) const {
    if (!given(i)) return fallback;
    return finite_real_arg(values_[i], names_[i]);
  }

 private:
  std::vector<const char*> names_;
  std::vector<nb::handle> values_;
};

// The constructor of an options class (LangevinOptions(steps=100, step_size=0.01)): keyword settings only, each set
// through the field's checked setter (an unknown name is the TypeError of the package's keyword settings).
template <class C>
void init_settings(C* self, const nb::args& args, const nb::kwargs& kwargs, const char* name) {
  if (args.size() != 0)
    raise_type(std::string(name) + "() takes keyword settings only (" + name + "(field=value, ...)), but " +
               counted(args.size(), "positional argument") + (args.size() == 1 ? " was" : " were") + " given");
  C value{};
  if (kwargs.size() != 0) {
    nb::handle type = nb::type<C>();
    // A copy as a Python object, whose setters check each value.
    nb::object settings = nb::cast(value, nb::rv_policy::copy);
    for (auto [key, v] : kwargs) {
      const std::string k = nb::str(key).c_str();
      nb::object field;
      if (!k.empty() && k[0] != '_' && nb::hasattr(type, k.c_str())) field = type.attr(k.c_str());
      if (!field.is_valid() || !PyObject_TypeCheck(field.ptr(), &PyProperty_Type) || field.attr("fset").is_none())
        raise_type(std::string(name) + " has no setting '" + k + "'");
      nb::setattr(settings, k.c_str(), v);
    }
    value = nb::cast<C&>(settings);
  }
  new (self) C(std::move(value));
}

// The constructor's part of an options class's docstring.
#define DS_PY_SETTINGS_DOC(name)                                                                                    \
  "\n\n" name "(**settings): the defaults, with each keyword setting given set through its field's checked setter "  \
  "(" name "(field=value) is " name "() then .field = value); an unknown name is a TypeError."

template <class C>
void def_init_settings(nb::class_<C>& cls, const char* name) {
  cls.def(
      "__init__",
      [name](C* self, nb::args args, nb::kwargs kwargs) { init_settings(self, args, kwargs, name); },
      nb::sig("def __init__(self, **settings: typing.Any) -> None"),
      "Default settings, changed by the keyword settings given (each checked by its field's setter; an unknown name "
      "is a TypeError).");
}

// indices: the data are integer indices (ObservationOperator.mask's), read as integers into host_data::indices;
// another dtype than an integer one is refused as such, and an empty sequence of numbers is an empty int64 array
// (NumPy reads [] as float64).
host_data read_host(nb::handle obj, const std::string& name, const std::vector<std::size_t>& ndims,
                    const std::string& expected, bool indices = false) {
  if (obj.is_none()) raise_invalid(name + ": None, expected " + expected);
  // A NumPy-style dtype that holds no numbers (object, string, datetime, void) is refused before the import, which
  // cannot represent it.
  auto non_numeric = [](nb::handle o) -> std::string {
    if (!nb::hasattr(o, "dtype")) return {};
    nb::object dt = o.attr("dtype");
    if (!nb::hasattr(dt, "kind") || !nb::isinstance<nb::str>(dt.attr("kind"))) return {};
    std::string kind = nb::str(dt.attr("kind")).c_str();
    if (kind.size() == 1 && std::string("biufc").find(kind[0]) != std::string::npos) return {};
    return nb::str(dt).c_str();
  };
  array a;
  if (std::string dt = non_numeric(obj); !dt.empty())
    raise_invalid(name + ": dtype " + dt + ", expected real numbers");
  if (!nb::try_cast(obj, a)) {
    // Not an array the binding imports: a Python number or (nested) sequence of numbers, or an array whose strides
    // no array protocol can describe (a field of a packed structured array: byte strides that are not multiples
    // of the item size), through NumPy, as a C-contiguous array (the values are copied below anyway).
    std::string type = nb::str(obj.type().attr("__name__")).c_str();
    if (PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr()))
      raise_invalid(name + ": a " + type + ", expected real numbers");
    nb::object converted;
    try {
      nb::module_ numpy = nb::module_::import_("numpy");
      converted = numpy.attr("asarray")(obj, "order"_a = "C");
      if (indices && nb::cast<std::int64_t>(converted.attr("size")) == 0)
        converted = numpy.attr("asarray")(obj, "dtype"_a = "int64", "order"_a = "C");
    } catch (nb::python_error&) {
      raise_invalid(name + ": a " + type + ", expected an array or a (nested) sequence of numbers");
    }
    std::string dt = non_numeric(converted);
    if (!dt.empty() || !nb::try_cast(converted, a)) {
      // (the dtype's str(): nb::str of the attribute accessor borrowed the dtype object, whose c_str() was null)
      if (dt.empty()) dt = nb::str(nb::object(converted.attr("dtype"))).c_str();
      raise_invalid(name + ": a " + type + " that NumPy reads as dtype " + dt + ", expected real numbers");
    }
  }
  const int dt = a.device_type();
  if (dt == nb::device::cuda::value || dt == nb::device::cuda_managed::value)
    raise_invalid(name + ": on cuda:" + std::to_string(a.device_id()) +
                  "; problem data is read on the host and copied into the problem as float64: pass a CPU array "
                  "(e.g. " + name + ".cpu(), cupy.asnumpy(" + name + "))");
  if (dt != nb::device::cpu::value && dt != nb::device::cuda_host::value)
    raise_invalid(name + ": arrays on " + device_name(dt) + " are not supported (problem data is read on the host)");
  host_data h;
  h.shape.resize(a.ndim());
  for (std::size_t i = 0; i < a.ndim(); ++i) h.shape[i] = std::int64_t(a.shape(i));
  bool ok_ndim = false;
  for (std::size_t k : ndims) ok_ndim = ok_ndim || k == a.ndim();
  if (!ok_ndim)
    raise_invalid(name + ": shape " + shape_string(h.shape.size(), h.shape.data()) + ", expected " + expected);
  const nb::dlpack::dtype t = a.dtype();
  h.dtype = dtype_string(t);
  h.integral = t.code == uint8_t(nb::dlpack::dtype_code::Int) || t.code == uint8_t(nb::dlpack::dtype_code::UInt);
  if (indices && !h.integral) raise_invalid(name + ": dtype " + h.dtype + ", expected an integer dtype");
  void (*copy)(const array&, std::vector<double>&, const std::string&) = nullptr;
  void (*copy_indices)(const array&, std::vector<std::int64_t>&, const std::string&) = nullptr;
  if (indices) {
    if (t == nb::dtype<std::int64_t>()) copy_indices = copy_strided<std::int64_t, std::int64_t>;
    else if (t == nb::dtype<std::int32_t>()) copy_indices = copy_strided<std::int32_t, std::int64_t>;
    else if (t == nb::dtype<std::int16_t>()) copy_indices = copy_strided<std::int16_t, std::int64_t>;
    else if (t == nb::dtype<std::int8_t>()) copy_indices = copy_strided<std::int8_t, std::int64_t>;
    else if (t == nb::dtype<std::uint64_t>()) copy_indices = copy_strided<std::uint64_t, std::int64_t>;
    else if (t == nb::dtype<std::uint32_t>()) copy_indices = copy_strided<std::uint32_t, std::int64_t>;
    else if (t == nb::dtype<std::uint16_t>()) copy_indices = copy_strided<std::uint16_t, std::int64_t>;
    else if (t == nb::dtype<std::uint8_t>()) copy_indices = copy_strided<std::uint8_t, std::int64_t>;
    else raise_invalid(name + ": dtype " + h.dtype + ", expected an integer dtype of at most 64 bits");
  } else if (t == nb::dtype<double>()) copy = copy_strided<double>;
  else if (t == nb::dtype<float>()) copy = copy_strided<float>;
  else if (t == nb::dtype<std::int64_t>()) copy = copy_strided<std::int64_t>;
  else if (t == nb::dtype<std::int32_t>()) copy = copy_strided<std::int32_t>;
  else if (t == nb::dtype<std::int16_t>()) copy = copy_strided<std::int16_t>;
  else if (t == nb::dtype<std::int8_t>()) copy = copy_strided<std::int8_t>;
  else if (t == nb::dtype<std::uint64_t>()) copy = copy_strided<std::uint64_t>;
  else if (t == nb::dtype<std::uint32_t>()) copy = copy_strided<std::uint32_t>;
  else if (t == nb::dtype<std::uint16_t>()) copy = copy_strided<std::uint16_t>;
  else if (t == nb::dtype<std::uint8_t>()) copy = copy_strided<std::uint8_t>;
  else if (t == nb::dlpack::dtype{uint8_t(nb::dlpack::dtype_code::Float), 16, 1}) copy = copy_strided<float16_bits>;
  else if (t == nb::dlpack::dtype{uint8_t(nb::dlpack::dtype_code::Bfloat), 16, 1})
    copy = copy_strided<bfloat16_bits>;
  else
    raise_invalid(name + ": dtype " + dtype_string(t) +
                  ", expected real numbers (float16, bfloat16, float32, float64 or an integer dtype; copied into the "
                  "problem as float64)");
  // The copy's size, before it is allocated: a view of few values can say many (numpy.broadcast_to of one value to
  // (2^20, 2^20) holds 8 bytes and says 2^40 values), whose float64 copy was std::bad_alloc naming nothing, or took
  // gigabytes before the library's limits refused the sizes. Within limits.max_host_bytes, as every host allocation
  // a call asks for; an allocation that fails below it is OutOfMemory naming the argument.
  std::int64_t count = 1;
  bool over = false;
  for (std::int64_t extent : h.shape) over = over || __builtin_mul_overflow(count, extent, &count);
  const std::string values = shape_string(h.shape.size(), h.shape.data()) + " values";
  const std::string copy_type = indices ? "int64" : "float64";
  static_assert(sizeof(double) == sizeof(std::int64_t));
  if (over || count > ds::limits::max_host_bytes / std::int64_t(sizeof(double)))
    throw ds::out_of_memory(name + ": its " + values + " need " +
                            (over ? std::string("more than 2^63") : std::to_string(count) + " x 8") +
                            " bytes of host memory for their " + copy_type + " copy, the limit is " +
                            ds::limits::spell(ds::limits::max_host_bytes) + " (diffsample.limits.max_host_bytes)");
  try {
    if (indices) h.indices.resize(std::size_t(count));
    else h.values.resize(std::size_t(count));
  } catch (const std::bad_alloc&) {
    throw ds::out_of_memory(name + ": the " + copy_type + " copy of its " + values + " (" +
                            std::to_string(count * std::int64_t(sizeof(double))) +
                            " bytes) could not be allocated on the host");
  }
  if (indices) copy_indices(a, h.indices, name);
  else copy(a, h.values, name);
  return h;
}

// An object the binding's array parameters cannot import (nanobind's caster returned false, after clearing the
// exception the producer raised): InvalidArgument naming the argument, with the exception __dlpack_device__() or
// __dlpack__() raises when called here (it was nanobind's "incompatible function arguments" naming nothing).
[[noreturn]] void refuse_import(nb::handle a, const std::string& name) {
  const std::string type = nb::str(a.type().attr("__name__")).c_str();
  for (const char* method : {"__dlpack_device__", "__dlpack__"}) {
    if (!nb::hasattr(a, method)) continue;
    try {
      a.attr(method)();
    } catch (nb::python_error& e) {
      const std::string what = nb::str(e.value()).c_str();
      raise_invalid(name + ": " + type + "." + method + "() raised " +
                    nb::str(e.type().attr("__name__")).c_str() + (what.empty() ? "" : ": " + what));
    }
  }
  raise_invalid(name + ": a " + type + " that the library cannot import as an array (it reads arrays through "
                "DLPack or the buffer protocol)");
}

std::vector<double> host_vector(nb::handle obj, const std::string& name, const std::vector<std::size_t>& ndims,
                                const std::string& expected) {
  return read_host(obj, name, ndims, expected).values;
}

// An owning NumPy array (host) built from a vector.
template <class T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T> v, std::vector<std::size_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* q) noexcept { delete static_cast<std::vector<T>*>(q); });
  return nb::ndarray<nb::numpy, T>(heap->data(), shape.size(), shape.data(), owner);
}

#ifdef DIFFSAMPLE_PY_PLANS
// A non-owning (rows, d) float32 view of plan memory, kept alive by the plan's Python object. On the CPU executor a
// NumPy array; on CUDA a DLPack-capable nanobind array (the Python layer hands it to the caller's framework).
// d = 0: a (rows,) vector instead.
template <class T = float>
nb::object plan_view(nb::handle owner, const T* p, std::int64_t rows, std::int64_t d, ds::executor where,
                     bool writable) {
  std::size_t shape[2] = {std::size_t(rows), std::size_t(d)};
  const std::size_t ndim = d > 0 ? 2 : 1;
  if (where == ds::executor::cpu) {
    auto a = nb::ndarray<nb::numpy, T>(const_cast<T*>(p), ndim, shape, owner);
    nb::object o = nb::cast(a, nb::rv_policy::reference);
    if (!writable) o.attr("setflags")("write"_a = false);
    return o;
  }
  // The device the plan's memory is on (the device current when the plan was made), not always device 0: a view
  // labelled cuda:0 over memory of another device would be read by the caller's framework on the wrong device.
  int device = 0;
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) == cudaSuccess && attributes.type != cudaMemoryTypeUnregistered &&
      attributes.type != cudaMemoryTypeHost)
    device = attributes.device;
  else
    cudaGetLastError();  // a failed query leaves no sticky error for the next call
  auto a = nb::ndarray<T>(const_cast<T*>(p), ndim, shape, owner, nullptr, nb::dtype<T>(), nb::device::cuda::value,
                          device);
  return nb::cast(a, nb::rv_policy::reference);
}
#endif

// A diffusion_plan as Python holds it, with the n x d it was built for: the C++ plan takes raw pointers and reads and
// writes n x d floats through them, so the binding checks the caller's arrays against these sizes (an array of
// another shape would be read or written past its end).
// One call at a time per plan. A plan is not thread-safe (README), and its calls release the GIL while they run, so
// two Python threads sharing a plan (a thread pool, a data loader's workers) ran tell() or step() on it at once and
// raced on its state without a word. The second call is refused instead, naming the call.
struct plan_lock {
  std::atomic<bool> busy{false};
  plan_lock() = default;
  plan_lock(plan_lock&&) noexcept {}  // a plan moved into its Python object is idle
};

// What follows the call's name in the refusal (the Python plans' whole-call guard says it too: _PLAN_BUSY).
constexpr const char* plan_busy =
    ": the plan is running a call on another thread (a plan takes one call at a time; give each thread its own plan, "
    "or serialise the calls)";

class exclusive_call {
 public:
  exclusive_call(plan_lock& lock, const char* call) : busy_(lock.busy) {
    if (busy_.exchange(true)) raise_invalid(std::string(call) + plan_busy);
  }
  ~exclusive_call() { busy_.store(false); }
  exclusive_call(const exclusive_call&) = delete;
  exclusive_call& operator=(const exclusive_call&) = delete;

 private:
  std::atomic<bool>& busy_;
};

struct py_diffusion_plan : ds::diffusion_plan {
  py_diffusion_plan(std::int64_t rows, std::int64_t dim, const ds::diffusion_options& o, ds::model_output out,
                    ds::execution exec)
      : ds::diffusion_plan(rows, dim, o, out, exec), n(rows), d(dim) {}
  std::int64_t n, d;
  int device = 0;  // the CUDA device of the plan's memory (current when it was made); 0 on the CPU
  plan_lock lock;
};

// The device current when a plan was made, where a CUDA plan's memory is; 0 on the CPU executor.
int current_device(ds::executor where) {
  int device = 0;
  if (where == ds::executor::cuda && cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    device = 0;
  }
  return device;
}

// Refuses a call's arrays on another executor or CUDA device than the plan's: its memory is there and its kernels
// run there (a CUDA plan made on device 0 stepped an x of device 1 across the devices, a fault where they cannot
// reach each other's memory).
template <class Plan>
void expect_plan_place(const Plan& pl, const place& p) {
  if (p.where == ds::executor::automatic) return;  // no array
  const int plan_device = pl.where() == ds::executor::cuda ? pl.device : 0;
  if (p.where != pl.where() || p.device_id != plan_device)
    raise_invalid(std::string(p.first) + ": on " + ds::to_string(p.where) + ":" + std::to_string(p.device_id) +
                  ", but the plan is on " + ds::to_string(pl.where()) + ":" + std::to_string(plan_device) +
                  " (its memory and kernels are there: pass arrays on that device)");
}

// A plan's call: the plan's CUDA device current while it runs (a plan made on cuda:1 and stepped while cuda:0 is
// current launched on cuda:0), the caller's stream checked against the plan's executor and device.
struct plan_run : run_on {
  template <class Plan>
  plan_run(const Plan& pl, std::uintptr_t stream) : run_on(pl.where(), pl.device, "the plan", stream) {}
};

// A plan's constructor: the stream of its uploads checked against where it is made (the current device on CUDA;
// none on the CPU executor).
void check_plan_stream(ds::executor where, std::uintptr_t stream) {
  if (where == ds::executor::automatic) where = ds::cuda_available() ? ds::executor::cuda : ds::executor::cpu;
  const int device = current_device(where);
  check_stream(stream, where, device, "the plan is made on " + where_text(where, device) +
                                          (where == ds::executor::cuda ? ", the current device" : ""));
}

// The executor a SamplingPlan is made for, by locate()'s rule with like as the call's one array: like (an array
// whose framework the plan's views follow) on a CUDA device makes a CUDA plan on that device (made current in scope
// while the plan is made: its memory is where the current device was), a CPU like a CPU plan; no like: the executor
// asked for (none: the CPU). An executor that contradicts like ('cpu' with a CUDA like, 'cuda' with a CPU one) is
// refused naming both; 'automatic' follows like. A CUDA like made a CPU plan without a word (the executor's default).
ds::executor plan_executor(std::optional<ds::executor> requested, const std::optional<array>& like,
                           device_scope& scope) {
  place p;
  if (like) locate(*like, "like", p);
  if (p.where == ds::executor::automatic) return requested.value_or(ds::executor::cpu);
  if (requested && *requested != ds::executor::automatic && *requested != p.where)
    raise_invalid("like: on " + where_text(p.where, p.device_id) + ", but the plan's executor is " +
                  ds::to_string(*requested) + " (a plan is made where like is, and shows its memory as arrays of "
                  "like's framework there): pass like on " +
                  (*requested == ds::executor::cuda ? std::string("a CUDA device") : std::string("the CPU")) +
                  ", or leave the executor to like");
  if (p.where == ds::executor::cuda) scope.enter(p.device_id, "like");
  return p.where;
}

#ifdef DIFFSAMPLE_PY_PLANS
// A sampling_plan as Python holds it, with the sizes of a guided plan's outputs (B problems, N particles, steps),
// which the C++ plan keeps to itself: write_outputs checks the caller's arrays against these, so sizes the caller
// passes cannot shrink the shapes checked (the plan writes its own B and steps + 1 values).
struct py_sampling_plan : ds::sampling_plan {
  explicit py_sampling_plan(ds::sampling_plan&& p) : ds::sampling_plan(std::move(p)) {
    device = current_device(where());
  }
  bool guided = false;
  // A MALA plan: its asks want the log-density and it counts acceptances, also with 0 rows, where the C++ plan's
  // pointers to those (empty) buffers are null and the views were None as for the other plans.
  bool mala = false;
  std::int64_t problems = 0, particles = 0, steps = 0;
  int device = 0;  // the CUDA device of the plan's memory (current when it was made); 0 on the CPU
  mutable plan_lock lock;
};
#endif

// A 2-D problem-data array against the (rows, cols) the call reads it as: the library sees only the flattened
// values, so a transposed or otherwise reshaped array of the right count would be read in the wrong order.
void expect_shape(const host_data& h, const std::string& name, std::int64_t rows, std::int64_t cols,
                  const std::string& expected) {
  if (h.shape.size() == 2 && (h.shape[0] != rows || h.shape[1] != cols))
    raise_invalid(name + ": shape " + shape_string(2, h.shape.data()) + ", expected " + expected);
}

nb::dict report(ds::executor ran) {
  nb::dict d;
  d["executor"] = ds::to_string(ran);
  return d;
}

// A guided_report as guided_sample() and a guided plan's report() give it.
nb::dict guided_report_dict(const ds::guided_report& r) {
  auto dct = report(r.ran);
  dct["launches"] = r.launches;
  dct["operator_path"] = ds::to_string(r.operator_path);
  dct["potentials"] = ds::to_string(r.potentials);
  dct["start_correction"] = r.start_correction;
  dct["multistep_kernel"] = r.multistep_kernel;
  dct["final_moves"] = r.final_moves;
  dct["ess_threshold"] = r.ess_threshold;
  return dct;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "libdiffsample's C++ API (low level: explicit output arrays and raw stream handles). Use the functions of "
            "the diffsample package, which allocate outputs in the caller's framework and pick its current stream.";

  // ---- exceptions ---------------------------------------------------------------------------------------------
  exc_error = PyErr_NewExceptionWithDoc("diffsample.Error", "Base class of every error the library reports.",
                                        PyExc_RuntimeError, nullptr);
  {
    PyObject* bases = PyTuple_Pack(2, exc_error, PyExc_ValueError);
    exc_invalid = PyErr_NewExceptionWithDoc(
        "diffsample.InvalidArgument",
        "An argument failed validation (size, dtype, shape, device, non-finite or out-of-range value); nothing ran.",
        bases, nullptr);
    Py_DECREF(bases);
    bases = PyTuple_Pack(2, exc_error, PyExc_MemoryError);
    exc_oom = PyErr_NewExceptionWithDoc("diffsample.OutOfMemory",
                                        "A request needs more memory than the device (or host) has free.", bases,
                                        nullptr);
    Py_DECREF(bases);
  }
  exc_cuda = PyErr_NewExceptionWithDoc("diffsample.CudaError", "A CUDA runtime call or kernel launch failed.",
                                       exc_error, nullptr);
  m.attr("Error") = nb::handle(exc_error);
  m.attr("InvalidArgument") = nb::handle(exc_invalid);
  m.attr("OutOfMemory") = nb::handle(exc_oom);
  m.attr("CudaError") = nb::handle(exc_cuda);
  // Calls in flight finish before the interpreter's finalisation (see released_gil).
  nb::module_::import_("atexit").attr("register")(nb::cpp_function(&wait_for_calls_at_exit));
  pthread_atfork(nullptr, nullptr, &reset_calls_in_child);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ds::invalid_argument& e) {
      PyErr_SetString(exc_invalid, e.what());
    } catch (const ds::out_of_memory& e) {
      PyErr_SetString(exc_oom, e.what());
    } catch (const ds::cuda_error& e) {
      PyErr_SetString(exc_cuda, e.what());
    } catch (const ds::error& e) {
      PyErr_SetString(exc_error, e.what());
    }
  });

  // ---- enums ----------------------------------------------------------------------------------------------------
  // Every enum's values from the library's one list (src/enum_tables.hpp), so a new value reaches Python too.
#define DIFFSAMPLE_PY_ENUM_VALUE(type, name, c_name) .value(#name, ds::type::name)
  nb::enum_<ds::executor>(m, "Executor", DS_DOC_FREE(executor))
      DIFFSAMPLE_EXECUTOR_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::quantity>(m, "Quantity", DS_DOC_FREE(quantity))
      DIFFSAMPLE_QUANTITY_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::mixture_path>(m, "MixturePath", DS_DOC_FREE(mixture_path))
      DIFFSAMPLE_MIXTURE_PATH_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::schedule_kind>(m, "ScheduleKind", DS_DOC_FREE(schedule_kind))
      DIFFSAMPLE_SCHEDULE_KIND_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::time_grid>(m, "TimeGrid", DS_DOC_FREE(time_grid))
      DIFFSAMPLE_TIME_GRID_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::diffusion_sampler>(m, "DiffusionSampler", DS_DOC_FREE(diffusion_sampler))
      DIFFSAMPLE_DIFFUSION_SAMPLER_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::model_output>(m, "ModelOutput", DS_DOC_FREE(model_output))
      DIFFSAMPLE_MODEL_OUTPUT_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::langevin_method>(m, "LangevinMethod", DS_DOC_FREE(langevin_method))
      DIFFSAMPLE_LANGEVIN_METHOD_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::resampling_scheme>(m, "ResamplingScheme", DS_DOC_FREE(resampling_scheme))
      DIFFSAMPLE_RESAMPLING_SCHEME_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::guided_sampler>(m, "GuidedSampler", DS_DOC_FREE(guided_sampler))
      DIFFSAMPLE_GUIDED_SAMPLER_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::dps_step_form>(m, "DpsStepForm", DS_DOC_FREE(dps_step_form))
      DIFFSAMPLE_DPS_STEP_FORM_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::guided_potentials>(m, "GuidedPotentials", DS_DOC_FREE(guided_potentials))
      DIFFSAMPLE_GUIDED_POTENTIALS_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::guided_grid>(m, "GuidedGrid", DS_DOC_FREE(guided_grid))
      DIFFSAMPLE_GUIDED_GRID_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);
  nb::enum_<ds::observation_kind>(m, "ObservationKind", DS_DOC_FREE(observation_kind))
      DIFFSAMPLE_OBSERVATION_KIND_VALUES(DIFFSAMPLE_PY_ENUM_VALUE);

  m.def("parse_executor", &ds::parse_executor, "name"_a, "Parses 'auto'/'automatic', 'cuda'/'gpu' or 'cpu'.");
  m.def("parse_schedule_kind", &ds::parse_schedule_kind, "name"_a, "Parses a schedule kind's name.");
  m.def("parse_time_grid", &ds::parse_time_grid, "name"_a, "Parses a time grid's name.");
  m.def("parse_diffusion_sampler", &ds::parse_diffusion_sampler, "name"_a,
        "Parses a diffusion sampler's name (also 'sms', 'heun', 'euler', 'sl').");
  m.def("parse_model_output", &ds::parse_model_output, "name"_a, "Parses a model output's name (also 'x0').");
  m.def("parse_langevin_method", &ds::parse_langevin_method, "name"_a, "Parses a Langevin method's name.");
  m.def("parse_resampling_scheme", &ds::parse_resampling_scheme, "name"_a, "Parses a resampling scheme's name.");
  m.def("parse_guided_sampler", &ds::parse_guided_sampler, "name"_a, "Parses a guided sampler's name.");
  m.def("parse_dps_step_form", &ds::parse_dps_step_form, "name"_a, "Parses 'likelihood' or 'normalised'.");
  m.def("parse_guided_potentials", &ds::parse_guided_potentials, "name"_a, "Parses 'automatic' (or 'auto'), 'linear', 'moment' or 'twisted'.");
  m.def("parse_guided_grid", &ds::parse_guided_grid, "name"_a, "Parses 'schedule', 'sqrt_alpha_bar', 'spectral' or 'noise_ratio'.");
  m.def("parse_mixture_path", &ds::parse_mixture_path, "name"_a, "Parses 'auto'/'automatic', 'direct' or 'gemm'.");

  m.def("version", &ds::version, "The library's version (its CMake project version, e.g. '0.3.0').");
  // The queries the package re-exports: no arguments (an argument is a TypeError naming the call, as for a def).
  m.def(
      "cuda_available",
      [](nb::args args, nb::kwargs kwargs) {
        call_arguments("cuda_available", args, kwargs, {}, 0);
        return ds::cuda_available();
      },
      nb::sig("def cuda_available() -> bool"), "True when the CUDA runtime finds at least one device.");
  m.def(
      "cuda_unavailable_reason",
      [](nb::args args, nb::kwargs kwargs) {
        call_arguments("cuda_unavailable_reason", args, kwargs, {}, 0);
        return ds::cuda_unavailable_reason();
      },
      nb::sig("def cuda_unavailable_reason() -> str"),
      "Why no GPU is used: the CUDA runtime's message, or '' when a device was found.");
  m.def(
      "cpu_threads",
      [](nb::args args, nb::kwargs kwargs) {
        call_arguments("cpu_threads", args, kwargs, {}, 0);
        return ds::cpu_threads();
      },
      nb::sig("def cpu_threads() -> int"), "Number of threads the CPU executor uses.");
  m.def(
      "cpu_blas_name",
      [](nb::args args, nb::kwargs kwargs) {
        call_arguments("cpu_blas_name", args, kwargs, {}, 0);
        return ds::cpu_blas_name();
      },
      nb::sig("def cpu_blas_name() -> str"), "Name of the CPU BLAS of the gemm path, or 'none'.");

  // ---- limits ---------------------------------------------------------------------------------------------------
  // diffsample.limits: every constant of diffsample::limits (limits.hpp) as an int, the names listed by the
  // generator (DS_LIMITS) and the values the compiled constants' (a name the header lacks does not compile).
  {
    nb::module_ limits = m.def_submodule("limits", DS_LIMITS_DOC);
#define DIFFSAMPLE_PY_LIMIT(name) limits.attr(#name) = ds::limits::name;
    DS_LIMITS(DIFFSAMPLE_PY_LIMIT)
#undef DIFFSAMPLE_PY_LIMIT
  }

  // ---- schedules ------------------------------------------------------------------------------------------------
  nb::class_<ds::noise_schedule> cls_noise_schedule(m, "NoiseSchedule",
      DS_DOC_FREE(noise_schedule) DS_PY_SETTINGS_DOC("NoiseSchedule"));
  def_init_settings(cls_noise_schedule, "NoiseSchedule");
  def_setting(cls_noise_schedule, "kind", &ds::noise_schedule::kind, DS_DOC(noise_schedule, kind));
  def_setting(cls_noise_schedule, "beta_min", &ds::noise_schedule::beta_min, DS_DOC(noise_schedule, beta_min));
  def_setting(cls_noise_schedule, "beta_max", &ds::noise_schedule::beta_max, DS_DOC(noise_schedule, beta_max));
  def_setting(cls_noise_schedule, "cosine_offset", &ds::noise_schedule::cosine_offset,
              DS_DOC(noise_schedule, cosine_offset));
  def_setting(cls_noise_schedule, "alpha_bar", &ds::noise_schedule::alpha_bar, DS_DOC(noise_schedule, alpha_bar));
  def_setting(cls_noise_schedule, "sigma_min", &ds::noise_schedule::sigma_min, DS_DOC(noise_schedule, sigma_min));
  def_setting(cls_noise_schedule, "sigma_max", &ds::noise_schedule::sigma_max, DS_DOC(noise_schedule, sigma_max));
  def_setting(cls_noise_schedule, "grid", &ds::noise_schedule::grid, DS_DOC(noise_schedule, grid));
  def_setting(cls_noise_schedule, "t_start", &ds::noise_schedule::t_start, DS_DOC(noise_schedule, t_start));
  def_setting(cls_noise_schedule, "t_end", &ds::noise_schedule::t_end, DS_DOC(noise_schedule, t_end));
  def_setting(cls_noise_schedule, "times", &ds::noise_schedule::times, DS_DOC(noise_schedule, times));
  cls_noise_schedule
      .def_static("vp_linear",
                  [](nb::args args, nb::kwargs kwargs) {
                    call_arguments a("NoiseSchedule.vp_linear", args, kwargs, {"beta_min", "beta_max"}, 0);
                    return ds::noise_schedule::vp_linear(a.real(0, 0.1), a.real(1, 20.0));
                  },
                  sig_to<ds::noise_schedule>("def vp_linear(beta_min: float = 0.1, beta_max: float = 20.0)"),
                  DS_DOC(noise_schedule, vp_linear))
      .def_static("vp_cosine",
                  [](nb::args args, nb::kwargs kwargs) {
                    call_arguments a("NoiseSchedule.vp_cosine", args, kwargs, {"offset"}, 0);
                    return ds::noise_schedule::vp_cosine(a.real(0, 0.008));
                  },
                  sig_to<ds::noise_schedule>("def vp_cosine(offset: float = 0.008)"),
                  DS_DOC(noise_schedule, vp_cosine) "\n\noffset: the cosine's offset in theta(t) = (t + offset) / (1 + "
                                                    "offset) * pi / 2, in [0, 1) (cosine_offset).")
      .def_static("vp_table",
                  [](nb::args args, nb::kwargs kwargs) {
                    call_arguments a("NoiseSchedule.vp_table", args, kwargs, {"alpha_bar"}, 1);
                    return ds::noise_schedule::vp_table(arg_value<std::vector<double>>(a[0], "alpha_bar"));
                  },
                  sig_to<ds::noise_schedule>("def vp_table(alpha_bar: collections.abc.Sequence[float])"),
                  DS_DOC(noise_schedule, vp_table) "\n\nalpha_bar: the N values alpha-bar_1..N (a sequence of floats).")
      .def_static("variance_exploding",
                  [](nb::args args, nb::kwargs kwargs) {
                    call_arguments a("NoiseSchedule.variance_exploding", args, kwargs, {"sigma_min", "sigma_max"}, 0);
                    return ds::noise_schedule::variance_exploding(a.real(0, 0.01), a.real(1, 50.0));
                  },
                  sig_to<ds::noise_schedule>(
                      "def variance_exploding(sigma_min: float = 0.01, sigma_max: float = 50.0)"),
                  DS_DOC(noise_schedule, variance_exploding))
      .def_static("ornstein_uhlenbeck",
                  [](nb::args args, nb::kwargs kwargs) {
                    call_arguments a("NoiseSchedule.ornstein_uhlenbeck", args, kwargs, {"horizon"}, 0);
                    return ds::noise_schedule::ornstein_uhlenbeck(a.real(0, 5.0));
                  },
                  sig_to<ds::noise_schedule>("def ornstein_uhlenbeck(horizon: float = 5.0)"),
                  DS_DOC(noise_schedule, ornstein_uhlenbeck))
      .def_static("linear_interpolant",
                  [](nb::args args, nb::kwargs kwargs) {
                    call_arguments("NoiseSchedule.linear_interpolant", args, kwargs, {}, 0);
                    return ds::noise_schedule::linear_interpolant();
                  },
                  sig_to<ds::noise_schedule>("def linear_interpolant()"), DS_DOC(noise_schedule, linear_interpolant))
      .def_static("stochastic_localization",
                  [](nb::args args, nb::kwargs kwargs) {
                    call_arguments a("NoiseSchedule.stochastic_localization", args, kwargs, {"t_min", "t_max"}, 0);
                    return ds::noise_schedule::stochastic_localization(a.real(0, 1e-3), a.real(1, 1e3));
                  },
                  sig_to<ds::noise_schedule>(
                      "def stochastic_localization(t_min: float = 0.001, t_max: float = 1000.0)"),
                  DS_DOC(noise_schedule, stochastic_localization))
      .def("with_grid",
           [](ds::noise_schedule s, nb::args args, nb::kwargs kwargs) {
             call_arguments a("NoiseSchedule.with_grid", args, kwargs, {"grid", "start", "end"}, 3);
             return s.with_grid(arg_value<ds::time_grid>(a[0], "grid"), a.real(1, 0), a.real(2, 0));
           },
           sig_to<ds::noise_schedule>("def with_grid(self, grid: " + py_name<ds::time_grid>() +
                                                " | str, start: float, end: float)"),
           "A copy with the grid kind (a TimeGrid) and its ends set: the grid runs from time start to time end.")
      .def("with_times",
           [](ds::noise_schedule s, nb::args args, nb::kwargs kwargs) {
             call_arguments a("NoiseSchedule.with_times", args, kwargs, {"times"}, 1);
             return s.with_times(arg_value<std::vector<double>>(a[0], "times"));
           },
           sig_to<ds::noise_schedule>("def with_times(self, times: collections.abc.Sequence[float])"),
           "A copy with a custom grid of steps + 1 times.")
      .def("at",
           [](const ds::noise_schedule& s, nb::args args, nb::kwargs kwargs) {
             call_arguments a("NoiseSchedule.at", args, kwargs, {"t"}, 1);
             auto p = s.at(a.real(0, 0));
             return std::make_tuple(p.a, p.s, p.da_dt, p.ds_dt);
           },
           nb::sig("def at(self, t: float) -> tuple[float, float, float, float]"), "(a, s, da/dt, ds/dt) at time t.")
      .def("points",
           [](const ds::noise_schedule& s, nb::args args, nb::kwargs kwargs) {
             call_arguments a("NoiseSchedule.points", args, kwargs, {"steps"}, 1);
             auto pts = s.points(int64_arg(a[0], "steps"));
             std::vector<double> v;
             for (auto& p : pts) v.insert(v.end(), {p.t, p.a, p.s, p.da_dt, p.ds_dt});
             return to_numpy(std::move(v), {pts.size(), 5});
           },
           nb::sig("def points(self, steps: int) -> numpy.ndarray[dtype=float64]"),
           "The steps + 1 grid points as rows (t, a, s, da/dt, ds/dt); validates the schedule.");

  // ---- mixtures -------------------------------------------------------------------------------------------------
  nb::class_<ds::gaussian_mixture>(
      m, "GaussianMixtureCore",
      "A Gaussian mixture with diagonal or isotropic components, evaluated exactly at any channel (a, s).")
      .def(
          "__init__",
          [](ds::gaussian_mixture* self, py_int dim_arg, problem_data w, problem_data mu, problem_data v) {
            const std::int64_t dim = int_arg<std::int64_t>(dim_arg, "dim");
            host_data wh = read_host(w, "weights", {1}, "(K,)");
            const std::int64_t K = std::int64_t(wh.values.size());
            const std::string kd = "(" + std::to_string(K) + ", " + std::to_string(dim) + ")";
            host_data mh = read_host(mu, "means", {1, 2}, "(K, d) or K * d values");
            expect_shape(mh, "means", K, dim, "(K, d) = " + kd + " or K * d values");
            host_data vh = read_host(v, "variances", {1, 2}, "(K,) or (K, d)");
            expect_shape(vh, "variances", K, dim, "(K,) or (K, d) = " + kd);
            const construction once(self);
            // The tables (and on a GPU their upload and the synchronisation of the legacy default stream, which
            // waits for the device's other work): without the GIL, as every call that runs work.
            released_gil release;
            new (self) ds::gaussian_mixture(dim, std::move(wh.values), std::move(mh.values), std::move(vh.values));
          },
          "dim"_a, "weights"_a, "means"_a, "variances"_a,
          "K weights, K x d means, K (isotropic) or K x d (diagonal) variances: host problem data, copied as float64 "
          "(any CPU array of a real dtype or nested sequence of numbers; CUDA arrays refused).")
      .def_prop_ro("components", &ds::gaussian_mixture::components, DS_DOC(gaussian_mixture, components))
      .def_prop_ro("dim", &ds::gaussian_mixture::dim, DS_DOC(gaussian_mixture, dim))
      .def_prop_ro("isotropic", &ds::gaussian_mixture::isotropic, DS_DOC(gaussian_mixture, isotropic))
      .def_prop_ro("weights", [](const ds::gaussian_mixture& g) { return to_numpy(g.weights(), {g.weights().size()}); },
                   DS_DOC(gaussian_mixture, weights) " (a NumPy copy)", nb::rv_policy::move)
      .def_prop_ro("means",
                   [](const ds::gaussian_mixture& g) {
                     return to_numpy(g.means(), {std::size_t(g.components()), std::size_t(g.dim())});
                   },
                   DS_DOC(gaussian_mixture, means) " (a NumPy copy)", nb::rv_policy::move)
      .def_prop_ro("variances",
                   [](const ds::gaussian_mixture& g) {
                     if (g.isotropic()) return to_numpy(g.variances(), {std::size_t(g.components())});
                     return to_numpy(g.variances(), {std::size_t(g.components()), std::size_t(g.dim())});
                   },
                   DS_DOC(gaussian_mixture, variances) " (a NumPy copy)", nb::rv_policy::move)
      .def(
          "evaluate",
          [](const ds::gaussian_mixture& g, py_enum<ds::quantity> what_arg, array x, py_real a, py_real s,
             out_array out, py_enum<ds::mixture_path> path_arg, py_int stream_h) {
            const ds::quantity what = enum_arg(what_arg, "what");
            const ds::channel ch = channel_arg(a, s);
            const ds::mixture_path path = enum_arg(path_arg, "path");
            const std::uintptr_t stream = stream_arg(stream_h);
            place p;
            const float* xp = checked<float>(x, "x", {-1, g.dim()}, p);
            std::int64_t n = dim_of(x, 0);
            float* op = what == ds::quantity::log_density ? checked<float>(out, "out", {n}, p)
                                                            : checked<float>(out, "out", {n, g.dim()}, p);
            ds::evaluate_options o;
            o.path = path;
            ds::evaluate_report r;
            run_on on(p, stream);
            expect_tables_on(g, p, "mixture");
            {
              released_gil release;
              r = g.evaluate(op, n, xp, ch, what, o, on.exec);
            }
            auto d = report(r.ran);
            d["path"] = ds::to_string(r.path);
            return d;
          },
          "what"_a, "x"_a, "a"_a, "s"_a, "out"_a, "path"_a = ds::mixture_path::automatic, "stream"_a = 0,
          "Writes the log-density (n,), score or denoiser (n, d) at x (n, d) of the channel (a, s) into out "
          "(float32). Returns {'executor', 'path'}.")
      .def(
          "denoiser_jvp",
          [](const ds::gaussian_mixture& g, array x, array v, py_real a, py_real s, out_array out, py_int stream_h) {
            const ds::channel ch = channel_arg(a, s);
            const std::uintptr_t stream = stream_arg(stream_h);
            place p;
            const float* xp = checked<float>(x, "x", {-1, g.dim()}, p);
            std::int64_t n = dim_of(x, 0);
            const float* vp = checked<float>(v, "v", {n, g.dim()}, p);
            float* op = checked<float>(out, "out", {n, g.dim()}, p);
            ds::executor ran;
            run_on on(p, stream);
            expect_tables_on(g, p, "mixture");
            {
              released_gil release;
              ran = g.denoiser_jvp(op, n, xp, vp, ch, on.exec);
            }
            return report(ran);
          },
          "x"_a, "v"_a, "a"_a, "s"_a, "out"_a, "stream"_a = 0,
          "Writes (dD/dx) v, the denoiser's Jacobian times v (the Jacobian is symmetric, so also J^T v), into out.")
      .def(
          "evaluate_fp64",
          [](const ds::gaussian_mixture& g, py_enum<ds::quantity> what_arg, array x, py_real a, py_real s,
             out_array out) {
            const ds::quantity what = enum_arg(what_arg, "what");
            const ds::channel ch = channel_arg(a, s);
            place p;
            const double* xp = checked<double>(x, "x", {-1, g.dim()}, p);
            std::int64_t n = dim_of(x, 0);
            double* op = what == ds::quantity::log_density ? checked<double>(out, "out", {n}, p)
                                                             : checked<double>(out, "out", {n, g.dim()}, p);
            if (p.where != ds::executor::cpu) raise_invalid("x: evaluate_fp64 runs on the host; pass CPU arrays");
            released_gil release;
            g.evaluate_fp64(op, n, xp, ch, what);
          },
          "what"_a, "x"_a, "a"_a, "s"_a, "out"_a, "FP64 host reference of evaluate (float64 CPU arrays).")
      .def(
          "denoiser_jvp_fp64",
          [](const ds::gaussian_mixture& g, array x, array v, py_real a, py_real s, out_array out) {
            const ds::channel ch = channel_arg(a, s);
            place p;
            const double* xp = checked<double>(x, "x", {-1, g.dim()}, p);
            std::int64_t n = dim_of(x, 0);
            const double* vp = checked<double>(v, "v", {n, g.dim()}, p);
            double* op = checked<double>(out, "out", {n, g.dim()}, p);
            if (p.where != ds::executor::cpu) raise_invalid("x: denoiser_jvp_fp64 runs on the host; pass CPU arrays");
            released_gil release;
            g.denoiser_jvp_fp64(op, n, xp, vp, ch);
          },
          "x"_a, "v"_a, "a"_a, "s"_a, "out"_a, "FP64 host reference of denoiser_jvp (float64 CPU arrays).")
      .def(
          "sample",
          [](const ds::gaussian_mixture& g, out_array out, py_real a, py_real s, py_int seed_arg,
             std::optional<out_array> labels, py_int first_index_arg, py_int stream_h) {
            const ds::channel ch = channel_arg(a, s);
            const std::uint64_t seed = int_arg<std::uint64_t>(seed_arg, "seed");
            const std::uint64_t first_index = int_arg<std::uint64_t>(first_index_arg, "first_index");
            const std::uintptr_t stream = stream_arg(stream_h);
            place p;
            float* op = checked<float>(out, "out", {-1, g.dim()}, p);
            std::int64_t n = std::int64_t(out.shape(0));
            std::int32_t* lp = checked_opt<std::int32_t>(labels, "labels", {n}, p);
            ds::executor ran;
            run_on on(p, stream);
            expect_tables_on(g, p, "mixture");
            {
              released_gil release;
              ran = g.sample(op, n, ch, seed, lp, first_index, on.exec);
            }
            return report(ran);
          },
          "out"_a, "a"_a, "s"_a, "seed"_a, "labels"_a = nb::none(), "first_index"_a = 0, "stream"_a = 0,
          "Exact samples of p_t into out (n, d) float32; optional int32 component labels (n,).")
      .def(
          "prepare_gemm",
          [](const ds::gaussian_mixture& g, std::optional<py_enum<ds::executor>> executor,
             std::optional<array> like) {
            // Where, by the plans' rule (plan_executor): like's executor and device (made current for the call),
            // else the executor asked for (CUDA: on the current device), else the CPU.
            const std::optional<ds::executor> requested = enum_arg(executor, "executor");
            place p;
            if (like) locate(*like, "like", p);
            ds::executor where = requested.value_or(ds::executor::cpu);
            if (p.where != ds::executor::automatic) {
              if (requested && *requested != ds::executor::automatic && *requested != p.where)
                raise_invalid("like: on " + where_text(p.where, p.device_id) + ", but " + ds::to_string(*requested) +
                              " was asked for (like says where the tables are built): pass like on " +
                              (*requested == ds::executor::cuda ? std::string("a CUDA device") : std::string("the CPU")) +
                              ", or leave the executor to like");
              where = p.where;
            }
            if (where == ds::executor::automatic)
              raise_invalid("executor: automatic, and no like to follow; prepare_gemm builds one executor's "
                            "tables: pass cpu or cuda (or like, an array on the device to prepare)");
            device_scope scope;
            if (where == ds::executor::cuda) {
              if (like) {
                scope.enter(p.device_id, "like");  // refuses a device the runtime does not see, naming like
              } else {
                if (!ds::cuda_available())  // (the library's words, naming the argument)
                  raise_invalid(ds::detail::no_usable_gpu("executor"));
                p.where = ds::executor::cuda;
                p.device_id = current_device(ds::executor::cuda);
                p.first = "the current device";
              }
              // The gemm tables go beside the mixture's tables: a like on another device than theirs (or, without
              // like, another current device) is refused, as every call's arrays are.
              expect_tables_on(g, p, "mixture");
            }
            released_gil release;  // tables, uploads, cuBLAS handles: allocates and synchronises
            g.prepare_gemm(where);
          },
          "executor"_a = nb::none(), "like"_a = nb::none(),
          DS_DOC(gaussian_mixture, prepare_gemm) "\n\nexecutor: None (like's: CUDA on like's device for a CUDA "
          "like, else the CPU), Executor.cpu, Executor.cuda (the current device without like) or "
          "Executor.automatic (like's; refused without like); like: None or an array (any dtype and shape) on the "
          "device to prepare, made current for the call; an executor that contradicts like is refused, and so is "
          "Executor.cuda without a GPU. Releases the GIL.")
      .def_static(
          "empirical",
          [](problem_data points, py_real variance) {
            host_data p = read_host(points, "points", {2}, "(n, d)");
            const double v = finite_real_arg(variance, "variance");
            released_gil release;  // the constructor's tables (and upload and synchronisation)
            return ds::gaussian_mixture::empirical(p.shape[0], p.shape[1], p.values.data(), v);
          },
          "points"_a, "variance"_a,
          "Equal-weight mixture of N(point_i, variance I) over the rows of points ((n, d) host problem data, copied "
          "as float64).")
      .def_static(
          "grid",
          [](py_int dim_arg, py_int grid_arg, py_real spacing, py_real variance, std::optional<problem_data> weights) {
            const std::int64_t dim = int_arg<std::int64_t>(dim_arg, "dim");
            const int grid = int_arg<int>(grid_arg, "grid");
            const double h = finite_real_arg(spacing, "spacing"), v = finite_real_arg(variance, "variance");
            std::vector<double> w;
            if (weights) w = host_vector(*weights, "weights", {1}, "(grid^2,) or empty");
            released_gil release;  // the constructor's tables (and upload and synchronisation)
            return ds::grid_mixture(dim, grid, h, v, std::move(w));
          },
          "dim"_a, "grid"_a, "spacing"_a, "variance"_a, "weights"_a = nb::none(),
          "Means on a g x g grid in the first two coordinates, repeated across higher coordinates; weights (grid^2 "
          "values, None or empty: equal) are host problem data, copied as float64.");

  // ---- Langevin -------------------------------------------------------------------------------------------------
  nb::class_<ds::langevin_options> cls_langevin_options(m, "LangevinOptions",
      DS_DOC_FREE(langevin_options) DS_PY_SETTINGS_DOC("LangevinOptions"));
  def_init_settings(cls_langevin_options, "LangevinOptions");
  def_setting(cls_langevin_options, "method", &ds::langevin_options::method, DS_DOC(langevin_options, method));
  def_setting(cls_langevin_options, "step_size", &ds::langevin_options::step_size, DS_DOC(langevin_options, step_size));
  def_setting(cls_langevin_options, "steps", &ds::langevin_options::steps, DS_DOC(langevin_options, steps));
  cls_langevin_options
      .def_prop_rw("target_a", [](const ds::langevin_options& o) { return o.target.a; },
                   [](ds::langevin_options& o, nb::handle a) { o.target.a = setting_value<double>(a, "target_a"); },
                   nb::for_setter(nb::arg("arg").none()),
                   nb::for_setter(nb::sig("def target_a(self, arg: float, /) -> None")), "target channel's a")
      .def_prop_rw("target_s", [](const ds::langevin_options& o) { return o.target.s; },
                   [](ds::langevin_options& o, nb::handle s) { o.target.s = setting_value<double>(s, "target_s"); },
                   nb::for_setter(nb::arg("arg").none()),
                   nb::for_setter(nb::sig("def target_s(self, arg: float, /) -> None")), "target channel's s");
  def_setting(cls_langevin_options, "seed", &ds::langevin_options::seed, DS_DOC(langevin_options, seed));
  def_setting(cls_langevin_options, "first_chain", &ds::langevin_options::first_chain,
              DS_DOC(langevin_options, first_chain));
  def_setting(cls_langevin_options, "first_step", &ds::langevin_options::first_step,
              DS_DOC(langevin_options, first_step));
  def_setting(cls_langevin_options, "record_every", &ds::langevin_options::record_every,
              DS_DOC(langevin_options, record_every));
  // The options and problems of the calls below are taken by value: copied under the GIL, so that another thread
  // setting their fields while a call runs without the GIL changes nothing the call reads (taken by reference, a
  // `steps` set meanwhile made langevin() write past the trajectory the binding had checked against the old value).
  m.def(
      "langevin",
      [](const ds::gaussian_mixture& g, out_array x, ds::langevin_options o, std::optional<out_array> traj,
         std::optional<out_array> accepted, py_int stream_h) {
        const std::uintptr_t stream = stream_arg(stream_h);
        place p;
        float* xp = checked<float>(x, "x", {-1, g.dim()}, p);
        std::int64_t n = std::int64_t(x.shape(0));
        ds::langevin_outputs outs;
        // The trajectory's extent follows from the options: validated first (the library's checks and words), or
        // record_every > steps asked for a (0, n, d) trajectory, which the library then refused.
        if (traj) (void)ds::langevin_workspace_bytes(g, n, o);
        std::int64_t records = o.record_every > 0 ? o.steps / o.record_every : 0;
        outs.trajectory = checked_opt<float>(traj, "trajectory", {records, n, g.dim()}, p);
        outs.accepted = checked_opt<std::int64_t>(accepted, "accepted", {n}, p);
        ds::langevin_report r;
        run_on on(p, stream);
        expect_tables_on(g, p, "mixture");
        {
          released_gil release;
          r = ds::langevin(g, xp, outs, n, o, on.exec);
        }
        auto d = report(r.ran);
        d["register_path"] = r.register_path;
        return d;
      },
      "mixture"_a, "x"_a, "options"_a, "trajectory"_a = nb::none(), "accepted"_a = nb::none(), "stream"_a = 0,
      "Runs options.steps Langevin steps of every chain of x (n, d) in place.");

  // ---- diffusion ------------------------------------------------------------------------------------------------
  nb::class_<ds::diffusion_options> cls_diffusion_options(m, "DiffusionOptions",
      DS_DOC_FREE(diffusion_options) DS_PY_SETTINGS_DOC("DiffusionOptions"));
  def_init_settings(cls_diffusion_options, "DiffusionOptions");
  def_setting(cls_diffusion_options, "sampler", &ds::diffusion_options::sampler, DS_DOC(diffusion_options, sampler));
  def_setting(cls_diffusion_options, "schedule", &ds::diffusion_options::schedule, DS_DOC(diffusion_options, schedule));
  def_setting(cls_diffusion_options, "steps", &ds::diffusion_options::steps, DS_DOC(diffusion_options, steps));
  def_setting(cls_diffusion_options, "eta", &ds::diffusion_options::eta, DS_DOC(diffusion_options, eta));
  def_setting(cls_diffusion_options, "sigma", &ds::diffusion_options::sigma, DS_DOC(diffusion_options, sigma));
  def_setting(cls_diffusion_options, "step_size", &ds::diffusion_options::step_size,
              DS_DOC(diffusion_options, step_size));
  def_setting(cls_diffusion_options, "measurements", &ds::diffusion_options::measurements,
              DS_DOC(diffusion_options, measurements));
  def_setting(cls_diffusion_options, "final_denoise", &ds::diffusion_options::final_denoise,
              DS_DOC(diffusion_options, final_denoise));
  def_setting(cls_diffusion_options, "draw_initial", &ds::diffusion_options::draw_initial,
              DS_DOC(diffusion_options, draw_initial));
  def_setting(cls_diffusion_options, "seed", &ds::diffusion_options::seed, DS_DOC(diffusion_options, seed));
  def_setting(cls_diffusion_options, "first_chain", &ds::diffusion_options::first_chain,
              DS_DOC(diffusion_options, first_chain));
  def_setting(cls_diffusion_options, "record_every", &ds::diffusion_options::record_every,
              DS_DOC(diffusion_options, record_every));
  m.def(
      "diffusion",
      [](const ds::gaussian_mixture& g, out_array out, ds::diffusion_options o, std::optional<out_array> traj,
         py_int stream_h) {
        const std::uintptr_t stream = stream_arg(stream_h);
        place p;
        // The library's x is the package's out (diffsample.diffusion(out=)): named so here, and its alignment and
        // its overlap with the trajectory, which the library refused naming x, checked below as the library does.
        float* xp = checked<float>(out, "out", {-1, g.dim()}, p);
        std::int64_t n = std::int64_t(out.shape(0));
        const std::int64_t out_bytes = n * g.dim() * std::int64_t(sizeof(float));
        std::int64_t traj_bytes = 0;
        ds::diffusion_outputs outs;
        if (traj) {
          // Its extent follows from the options: validated first (the library's checks and words), or
          // record_every beyond the steps asked for a (0, n, d) trajectory, which the library then refused.
          (void)ds::diffusion_workspace_bytes(g, n, o);
          // The trajectory's extent, from options the library has not validated yet: a product beyond int64 (UB,
          // in practice a wrapped count that asked for another shape) is refused here naming both.
          std::int64_t total = o.steps;
          if (o.sampler == ds::diffusion_sampler::sequential_measurements &&
              __builtin_mul_overflow(o.steps, o.measurements, &total))
            raise_invalid("options.steps x options.measurements: " + std::to_string(o.steps) + " x " +
                          std::to_string(o.measurements) + " overflow a 64-bit count");
          std::int64_t records = o.record_every > 0 ? total / o.record_every : 0;
          outs.trajectory = checked<float>(*traj, "trajectory", {records, n, g.dim()}, p);
          traj_bytes = records * out_bytes;
        }
        ds::diffusion_report r;
        run_on on(p, stream);
        expect_tables_on(g, p, "mixture");
        if (out_bytes > 0 && reinterpret_cast<std::uintptr_t>(xp) % alignof(float) != 0) {
          std::ostringstream os;
          os << "out: pointer " << static_cast<const void*>(xp) << " is not aligned to " << alignof(float) << " bytes";
          raise_invalid(os.str());
        }
        const auto first = reinterpret_cast<std::uintptr_t>(xp), other = reinterpret_cast<std::uintptr_t>(outs.trajectory);
        if (out_bytes > 0 && traj_bytes > 0 && first < other + std::uintptr_t(traj_bytes) &&
            other < first + std::uintptr_t(out_bytes)) {
          std::ostringstream os;
          os << "trajectory: must not overlap out (trajectory " << static_cast<const void*>(outs.trajectory) << ", "
             << traj_bytes << " bytes; out " << static_cast<const void*>(xp) << ", " << out_bytes << " bytes)";
          raise_invalid(os.str());
        }
        {
          released_gil release;
          r = ds::diffusion(g, xp, outs, n, o, on.exec);
        }
        auto d = report(r.ran);
        d["register_path"] = r.register_path;
        d["total_steps"] = r.total_steps;
        return d;
      },
      "mixture"_a, "out"_a, "options"_a, "trajectory"_a = nb::none(), "stream"_a = 0,
      "Runs the whole reverse-diffusion trajectory of every chain of out (n, d) in one fused launch (the C++ "
      "call's x: the initial states on entry when options.draw_initial is false, the samples on return).");

  nb::class_<py_diffusion_plan>(
      m, "DiffusionPlan",
      "Stepwise sampling with a caller's model: per step evaluate the model at step_channel(k) on x, write its "
      "output into a buffer, call step(x, model). Nothing allocates or synchronises per step.")
      .def(
          "__init__",
          [](py_diffusion_plan* self, py_int n_arg, py_int d_arg, ds::diffusion_options o,
             py_enum<ds::model_output> output, py_enum<ds::executor> executor, py_int stream_h) {
            const std::int64_t n = int_arg<std::int64_t>(n_arg, "n"), d = int_arg<std::int64_t>(d_arg, "d");
            const ds::model_output out = enum_arg(output, "output");
            const ds::executor where = enum_arg(executor, "executor");
            const std::uintptr_t stream = stream_arg(stream_h);
            check_plan_stream(where, stream);
            const construction once(self);
            released_gil release;
            new (self) py_diffusion_plan(n, d, o, out, {where, reinterpret_cast<cudaStream_t>(stream)});
            self->device = current_device(self->where());
          },
          "n"_a, "d"_a, "options"_a, "output"_a, "executor"_a = ds::executor::cpu, "stream"_a = 0,
          "A plan for n chains of dimension d whose model writes `output`.")
      .def_prop_ro("steps", &ds::diffusion_plan::steps, DS_DOC(diffusion_plan, steps))
      .def_prop_ro("executor", &ds::diffusion_plan::where, DS_DOC(diffusion_plan, where))
      .def_prop_ro("needs_final_jump", &ds::diffusion_plan::needs_final_jump, DS_DOC(diffusion_plan, needs_final_jump))
      .def(
          "step_channel",
          [](const py_diffusion_plan& pl, py_int k) {
            auto c = pl.step_channel(int_arg<std::int64_t>(k, "k"));
            return std::make_pair(c.a, c.s);
          },
          "k"_a, "(a, s): the channel at which the model is evaluated before step k (k = steps for finish()).")
      .def(
          "step_time", [](const py_diffusion_plan& pl, py_int k) { return pl.step_time(int_arg<std::int64_t>(k, "k")); },
          "k"_a, "Time of step k in the schedule.")
      .def(
          "reset",
          [](py_diffusion_plan& pl, out_array x, py_int stream_h) {
            const std::uintptr_t stream = stream_arg(stream_h);
            exclusive_call one(pl.lock, "reset");
            place p;
            float* xp = checked<float>(x, "x", {pl.n, pl.d}, p);
            expect_plan_place(pl, p);
            plan_run on(pl, stream);
            released_gil release;  // the initial draw: n x d normals, a step's work
            pl.reset(xp, on.exec);
          },
          "x"_a, "stream"_a = 0, "Starts the next trajectory (and draws x when options.draw_initial).")
      .def(
          "step",
          [](py_diffusion_plan& pl, out_array x, array model, py_int stream_h) {
            const std::uintptr_t stream = stream_arg(stream_h);
            exclusive_call one(pl.lock, "step");
            place p;
            float* xp = checked<float>(x, "x", {pl.n, pl.d}, p);
            const float* mp = checked<float>(model, "model", {pl.n, pl.d}, p);
            expect_plan_place(pl, p);
            plan_run on(pl, stream);
            released_gil release;
            pl.step(xp, mp, on.exec);
          },
          "x"_a, "model"_a, "stream"_a = 0, "Applies the current step's update to x given the model output at x.")
      .def(
          "finish",
          [](py_diffusion_plan& pl, out_array x, array model, py_int stream_h) {
            const std::uintptr_t stream = stream_arg(stream_h);
            exclusive_call one(pl.lock, "finish");
            place p;
            float* xp = checked<float>(x, "x", {pl.n, pl.d}, p);
            const float* mp = checked<float>(model, "model", {pl.n, pl.d}, p);
            expect_plan_place(pl, p);
            plan_run on(pl, stream);
            released_gil release;
            pl.finish(xp, mp, on.exec);
          },
          "x"_a, "model"_a, "stream"_a = 0, "The final jump x <- E[x0 | x] from the model output.");


#ifdef DIFFSAMPLE_PY_PLANS
  // ---- ask/tell plans -------------------------------------------------------------------------------------------
  m.attr("HAS_SAMPLING_PLANS") = true;
  m.attr("_PLAN_BUSY") = plan_busy;
#define PLAN_PLACE_DOC                                                                                              \
  "executor: None (like's: CUDA on like's device for a CUDA like, else the CPU), Executor.cpu, Executor.cuda or "  \
  "Executor.automatic (like's when like is given); like: None or an array (any dtype and shape) on the device the " \
  "plan is made on, made current while it is made; an executor that contradicts like is refused."
  nb::class_<py_sampling_plan>(
      m, "SamplingPlan",
      "An ask/tell plan: ask() says where the model is needed (points, channel, output), the caller writes the "
      "model's output into the request's answer buffer, tell() applies the step. The plan owns its state.")
      .def_static(
          "diffusion",
          [](py_int n_arg, py_int d_arg, ds::diffusion_options o, py_enum<ds::model_output> output,
             std::optional<py_enum<ds::executor>> executor, py_int stream_h, std::optional<array> like) {
            const std::int64_t n = int_arg<std::int64_t>(n_arg, "n"), d = int_arg<std::int64_t>(d_arg, "d");
            const ds::model_output out = enum_arg(output, "output");
            const std::uintptr_t stream = stream_arg(stream_h);
            device_scope scope;
            const ds::executor where = plan_executor(enum_arg(executor, "executor"), like, scope);
            check_plan_stream(where, stream);
            released_gil release;
            return py_sampling_plan(
                ds::sampling_plan::diffusion(n, d, o, out, {where, reinterpret_cast<cudaStream_t>(stream)}));
          },
          "n"_a, "d"_a, "options"_a, "output"_a = ds::model_output::denoiser, "executor"_a = nb::none(),
          "stream"_a = 0, "like"_a = nb::none(),
          "A plan for any diffusion sampler (Heun and SMS included). " PLAN_PLACE_DOC)
      .def_static(
          "langevin",
          [](py_int n_arg, py_int d_arg, ds::langevin_options o, py_enum<ds::model_output> output,
             std::optional<py_enum<ds::executor>> executor, py_int stream_h, std::optional<array> like) {
            const std::int64_t n = int_arg<std::int64_t>(n_arg, "n"), d = int_arg<std::int64_t>(d_arg, "d");
            const ds::model_output out = enum_arg(output, "output");
            const std::uintptr_t stream = stream_arg(stream_h);
            device_scope scope;
            const ds::executor where = plan_executor(enum_arg(executor, "executor"), like, scope);
            check_plan_stream(where, stream);
            released_gil release;
            py_sampling_plan plan(
                ds::sampling_plan::langevin(n, d, o, out, {where, reinterpret_cast<cudaStream_t>(stream)}));
            plan.mala = o.method == ds::langevin_method::mala;
            return plan;
          },
          "n"_a, "d"_a, "options"_a, "output"_a = ds::model_output::score, "executor"_a = nb::none(),
          "stream"_a = 0, "like"_a = nb::none(), DS_DOC(sampling_plan, langevin) "\n\n" PLAN_PLACE_DOC)
      .def_static(
          "guided",
          [](py_int d_arg, ds::guided_problems pr, ds::guided_options o, py_enum<ds::model_output> output,
             std::optional<py_enum<ds::executor>> executor, py_int stream_h, std::optional<array> like) {
            const std::int64_t d = int_arg<std::int64_t>(d_arg, "d");
            const ds::model_output out = enum_arg(output, "output");
            const std::uintptr_t stream = stream_arg(stream_h);
            device_scope scope;
            const ds::executor where = plan_executor(enum_arg(executor, "executor"), like, scope);
            check_plan_stream(where, stream);
            released_gil release;
            py_sampling_plan pl(ds::sampling_plan::guided(d, pr, o, out, {where, reinterpret_cast<cudaStream_t>(stream)}));
            pl.guided = true;
            pl.problems = pr.problems;
            pl.particles = o.particles;
            pl.steps = o.steps;
            return pl;
          },
          "d"_a, "problems"_a, "options"_a, "output"_a = ds::model_output::denoiser, "executor"_a = nb::none(),
          "stream"_a = 0, "like"_a = nb::none(), DS_DOC(sampling_plan, guided) "\n\n" PLAN_PLACE_DOC)
      .def(
          "write_outputs",
          [](py_sampling_plan& pl, py_int problems_arg, py_int particles_arg, py_int steps_arg,
             std::optional<out_array> particles_out, std::optional<out_array> log_weights,
             std::optional<out_array> samples, std::optional<out_array> log_normaliser,
             std::optional<out_array> ess_trace, std::optional<out_array> resample_count, py_int stream_h) {
            const std::int64_t problems = int_arg<std::int64_t>(problems_arg, "problems");
            const std::int64_t particles = int_arg<std::int64_t>(particles_arg, "particles");
            const std::int64_t steps = int_arg<std::int64_t>(steps_arg, "steps");
            const std::uintptr_t stream = stream_arg(stream_h);
            exclusive_call one(pl.lock, "write_outputs");
            place p;
            const std::int64_t B = problems, N = particles, d = pl.dim();
            std::int64_t rows = 0;
            if (__builtin_mul_overflow(B, N, &rows) || rows != pl.rows())
              raise_invalid("problems: problems x particles must be the plan's rows");
            // The plan writes B and B x (steps + 1) values of its own: sizes that differ would pass smaller arrays.
            if (pl.guided && (B != pl.problems || N != pl.particles || steps != pl.steps))
              raise_invalid("write_outputs: problems = " + std::to_string(B) + ", particles = " + std::to_string(N) +
                            ", steps = " + std::to_string(steps) + ", but the plan has " +
                            std::to_string(pl.problems) + " problems of " + std::to_string(pl.particles) +
                            " particles and " + std::to_string(pl.steps) + " steps");
            ds::guided_outputs outs;
            outs.particles = checked_opt<float>(particles_out, "particles", {B, N, d}, p);
            outs.log_weights = checked_opt<float>(log_weights, "log_weights", {B, N}, p);
            outs.samples = checked_opt<float>(samples, "samples", {B, N, d}, p);
            outs.log_normaliser = checked_opt<double>(log_normaliser, "log_normaliser", {B}, p);
            if (ess_trace) ds::limits::check("steps", steps, 1, ds::limits::max_steps);  // steps + 1 below
            outs.ess_trace = checked_opt<float>(ess_trace, "ess_trace", {B, steps + 1}, p);
            outs.resample_count = checked_opt<std::int32_t>(resample_count, "resample_count", {B}, p);
            expect_plan_place(pl, p);
            plan_run on(pl, stream);
            released_gil release;
            pl.write_outputs(outs, on.exec);
          },
          "problems"_a, "particles"_a, "steps"_a, "particles_out"_a = nb::none(), "log_weights"_a = nb::none(),
          "samples"_a = nb::none(), "log_normaliser"_a = nb::none(), "ess_trace"_a = nb::none(),
          "resample_count"_a = nb::none(), "stream"_a = 0,
          DS_DOC(sampling_plan, write_outputs) "\n\nproblems, particles and steps: the plan's B, N and options.steps "
          "(other values are refused); the arrays' shapes as for guided_sample.")
      .def_prop_ro(
          "guided_sizes",
          [](const py_sampling_plan& pl) -> std::optional<std::tuple<std::int64_t, std::int64_t, std::int64_t>> {
            if (!pl.guided) return std::nullopt;
            return std::make_tuple(pl.problems, pl.particles, pl.steps);
          },
          "A guided plan's (problems, particles, steps): the B, N and options.steps of write_outputs' arrays; None "
          "for the other plans.")
      .def(
          "report",
          [](const py_sampling_plan& pl) {
            exclusive_call one(pl.lock, "report");
            return guided_report_dict(pl.report());
          },
          DS_DOC(sampling_plan, report) "\n\nA dict with the keys of guided_sample()'s report.")
      .def_prop_ro("rows", &ds::sampling_plan::rows, DS_DOC(sampling_plan, rows))
      .def_prop_ro("dim", &ds::sampling_plan::dim, DS_DOC(sampling_plan, dim))
      .def_prop_ro("executor", &ds::sampling_plan::where, DS_DOC(sampling_plan, where))
      .def_prop_ro(
          "device", [](const py_sampling_plan& pl) { return pl.device; },
          "The CUDA device of the plan's memory and kernels (the device current when it was made: like's, else the "
          "current one); 0 on the CPU executor.")
      .def_prop_ro("asks", &ds::sampling_plan::asks, DS_DOC(sampling_plan, asks))
      .def_prop_ro("position", &ds::sampling_plan::position, DS_DOC(sampling_plan, position))
      .def_prop_ro("done", &ds::sampling_plan::done, DS_DOC(sampling_plan, done))
      .def(
          "ask",
          [](nb::handle self, py_int k_arg) {
            const std::int64_t k = int_arg<std::int64_t>(k_arg, "k");
            const auto& pl = nb::cast<const py_sampling_plan&>(self);
            exclusive_call one(pl.lock, "ask");
            ds::plan_request r = k == -1 ? pl.ask() : pl.request(k);  // request() refuses another negative k
            nb::dict d;
            d["index"] = r.index;
            d["a"] = r.at.a;
            d["s"] = r.at.s;
            d["time"] = r.time;
            d["output"] = r.output;
            d["points"] = plan_view(self, r.points, r.rows, r.dim, pl.where(), false);
            d["answer"] = plan_view(self, r.answer, r.rows, r.dim, pl.where(), true);
            d["vector"] = r.vector != nullptr
                              ? plan_view(self, r.vector, r.rows, r.dim, pl.where(), false)
                              : nb::none();
            d["log_density"] = r.log_density != nullptr || (pl.mala && r.rows == 0)
                                   ? plan_view(self, r.log_density, r.rows, 0, pl.where(), true)
                                   : nb::none();
            return d;
          },
          "k"_a = -1,
          "The next ask (k = -1) or the ask at position k: a dict with index, a, s, time, output, points (rows, d) "
          "read-only and answer (rows, d) writable views of the plan's buffers (valid while the plan lives), and "
          "vector: None, or (rows, d) read-only v whose J^T v the caller writes into answer (dps, pigdm, dcps, tmpd), "
          "and log_density: None, or a (rows,) writable view where the caller also writes the model's log-density "
          "at the points (mala).")
      .def(
          "tell",
          [](py_sampling_plan& pl, py_int stream_h) {
            const std::uintptr_t stream = stream_arg(stream_h);
            exclusive_call one(pl.lock, "tell");
            plan_run on(pl, stream);
            released_gil release;
            pl.tell(on.exec);
          },
          "stream"_a = 0, "Applies the answer written into the current ask's buffer and advances.")
      .def(
          "reset",
          [](py_sampling_plan& pl, std::optional<array> initial, py_int stream_h) {
            const std::uintptr_t stream = stream_arg(stream_h);
            exclusive_call one(pl.lock, "reset");
            const float* ip = nullptr;
            if (initial) {
              place p;
              ip = checked<float>(*initial, "initial", {pl.rows(), pl.dim()}, p);
              expect_plan_place(pl, p);
            }
            plan_run on(pl, stream);
            released_gil release;  // the initial draw or copy: rows x d values, a step's work
            pl.reset(ip, on.exec);
          },
          "initial"_a = nb::none(), "stream"_a = 0,
          "Starts the next trajectory from initial (rows, d) (copied) or the plan's own draw.")
      .def(
          "samples", [](nb::handle self) {
            const auto& pl = nb::cast<const py_sampling_plan&>(self);
            return nb::borrow<array_view>(plan_view(self, pl.samples(), pl.rows(), pl.dim(), pl.where(), true));
          },
          "The state (rows, d), a writable view of plan memory: the samples once done.")
      .def(
          "accepted",
          [](nb::handle self) -> array_view {
            const auto& pl = nb::cast<const py_sampling_plan&>(self);
            if (pl.accepted() == nullptr && !(pl.mala && pl.rows() == 0)) return nb::borrow<array_view>(nb::none());
            return nb::borrow<array_view>(plan_view<std::int64_t>(self, pl.accepted(), pl.rows(), 0, pl.where(), false));
          },
          "MALA plans: the proposals accepted per row in the current trajectory, a (rows,) int64 read-only view of "
          "plan memory; None for other plans.");
#else
  m.attr("HAS_SAMPLING_PLANS") = false;
#endif

  // ---- particles ------------------------------------------------------------------------------------------------
  nb::class_<ds::resampling_options> cls_resampling_options(m, "ResamplingOptions",
      DS_DOC_FREE(resampling_options) DS_PY_SETTINGS_DOC("ResamplingOptions"));
  def_init_settings(cls_resampling_options, "ResamplingOptions");
  def_setting(cls_resampling_options, "scheme", &ds::resampling_options::scheme, DS_DOC(resampling_options, scheme));
  def_setting(cls_resampling_options, "ess_threshold", &ds::resampling_options::ess_threshold,
              DS_DOC(resampling_options, ess_threshold));
  def_setting(cls_resampling_options, "seed", &ds::resampling_options::seed, DS_DOC(resampling_options, seed));
  def_setting(cls_resampling_options, "step", &ds::resampling_options::step, DS_DOC(resampling_options, step));
  def_setting(cls_resampling_options, "metropolis_steps", &ds::resampling_options::metropolis_steps,
              DS_DOC(resampling_options, metropolis_steps));
  m.attr("PARTICLE_REPORT_BYTES") = sizeof(ds::particle_report);
  m.def(
      "resample",
      [](array lw, ds::resampling_options o, std::optional<out_array> anc, std::optional<out_array> weights,
         std::optional<out_array> reports, py_int stream_h) {
        const std::uintptr_t stream = stream_arg(stream_h);
        place p;
        const float* lp = checked<float>(lw, "log_weights", {-1, -1}, p);
        std::int64_t B = dim_of(lw, 0), N = dim_of(lw, 1);
        ds::particle_outputs outs;
        if (anc) {
          if (anc->dtype() != nb::dtype<std::int64_t>() && anc->dtype() != nb::dtype<std::int32_t>())
            raise_invalid("ancestors: dtype " + dtype_string(anc->dtype()) + ", expected int32 or int64");
          if (anc->dtype() == nb::dtype<std::int64_t>())
            outs.ancestors64 = checked<std::int64_t>(*anc, "ancestors", {B, N}, p);
          else
            outs.ancestors = checked<std::int32_t>(*anc, "ancestors", {B, N}, p);
        }
        outs.normalised_weights = checked_opt<float>(weights, "normalised_weights", {B, N}, p);
        outs.reports = reinterpret_cast<ds::particle_report*>(
            checked_opt<std::uint8_t>(reports, "reports", {B, std::int64_t(sizeof(ds::particle_report))}, p));
        ds::executor ran;
        run_on on(p, stream);
        {
          released_gil release;
          ran = ds::resample(outs, B, N, lp, o, on.exec);
        }
        return report(ran);
      },
      "log_weights"_a, "options"_a, "ancestors"_a = nb::none(), "normalised_weights"_a = nb::none(),
      "reports"_a = nb::none(), "stream"_a = 0,
      "Statistics and exact resampling of B problems of N particles: log_weights (B, N) float32, ancestors (B, N) "
      "int32 or int64, normalised_weights (B, N) float32, reports (B, PARTICLE_REPORT_BYTES) uint8.");
  m.def(
      "gather_particles",
      [](array states, array anc, out_array out, py_int stream_h) {
        const std::uintptr_t stream = stream_arg(stream_h);
        place p;
        const float* sp = checked<float>(states, "states", {-1, -1, -1}, p);
        std::int64_t B = dim_of(states, 0), N = dim_of(states, 1), d = dim_of(states, 2);
        float* op = checked<float>(out, "out", {B, N, d}, p);
        ds::executor ran;
        if (anc.dtype() != nb::dtype<std::int64_t>() && anc.dtype() != nb::dtype<std::int32_t>())
          raise_invalid("ancestors: dtype " + dtype_string(anc.dtype()) + ", expected int32 or int64");
        if (anc.dtype() == nb::dtype<std::int64_t>()) {
          const std::int64_t* ap = checked<std::int64_t>(anc, "ancestors", {B, N}, p);
          run_on on(p, stream);
          released_gil release;
          ran = ds::gather_particles(op, B, N, d, sp, ap, on.exec);
        } else {
          const std::int32_t* ap = checked<std::int32_t>(anc, "ancestors", {B, N}, p);
          run_on on(p, stream);
          released_gil release;
          ran = ds::gather_particles(op, B, N, d, sp, ap, on.exec);
        }
        return report(ran);
      },
      "states"_a, "ancestors"_a, "out"_a, "stream"_a = 0,
      "out[b, j] = states[b, ancestors[b, j]] for states (B, N, d); out must not overlap states.");

  // ---- observations and the exact posterior ---------------------------------------------------------------------
  // The headers' comments of the calls the package wraps in Python functions, for their docstrings.
  {
    nb::dict docs;
    docs["guided_sample"] = DS_DOC_FREE(guided_sample);
    docs["mixture_posterior"] = DS_DOC_FREE(mixture_posterior);
    docs["mixture_posterior::mixture_posterior"] = DS_DOC(mixture_posterior, mixture_posterior);
    docs["mixture_posterior::mixture_posterior#3"] = DS_DOC_OVERLOAD(mixture_posterior, mixture_posterior, 3);
    docs["guided_problems"] = DS_DOC_FREE(guided_problems);
    m.attr("_header_docs") = docs;
  }
  m.def(
      "_check_limit",
      [](const std::string& name, py_int value, py_int lo, py_int limit) {
        ds::limits::check(name, int_arg<std::int64_t>(value, "value"), int_arg<std::int64_t>(lo, "lo"),
                          int_arg<std::int64_t>(limit, "limit"));
      },
      "name"_a, "value"_a, "lo"_a, "limit"_a,
      "Raises InvalidArgument with the library's message (limits.hpp) unless lo <= value <= limit: the package's "
      "check of a size it allocates for before the library sees it.");
  m.def(
      "_check_gpu_usable",
      [](const std::string& name) {
        if (!ds::cuda_available()) raise_invalid(ds::detail::no_usable_gpu(name.c_str()));
      },
      "name"_a,
      "Raises InvalidArgument with the library's message for a CUDA request where no GPU is usable, naming the "
      "argument name, unless a GPU is usable: the package's check of a CUDA request it answers before the library "
      "sees it.");
  m.def(
      "_check_array",
      [](nb::handle a, const std::string& name, std::optional<std::string> dtype,
         std::optional<std::vector<std::int64_t>> shape) {
        array arr;
        if (!nb::try_cast(a, arr)) refuse_import(a, name);
        if (dtype) {
          place p;
          const std::vector<std::int64_t> want = shape ? *shape : std::vector<std::int64_t>(arr.ndim(), -1);
          if (*dtype == "float32") checked<float>(arr, name.c_str(), want, p);
          else if (*dtype == "int32") checked<std::int32_t>(arr, name.c_str(), want, p);
          else if (*dtype == "int64") checked<std::int64_t>(arr, name.c_str(), want, p);
          else raise_invalid("dtype: '" + *dtype + "', expected 'float32', 'int32' or 'int64'");
        }
        nb::list extents;
        for (std::size_t i = 0; i < arr.ndim(); ++i) extents.append(std::int64_t(arr.shape(i)));
        return nb::tuple(extents);
      },
      "a"_a.none(), "name"_a, "dtype"_a = nb::none(), "shape"_a = nb::none(),
      nb::sig("def _check_array(a: object, name: str, dtype: str | None = None, shape: "
              "collections.abc.Sequence[int] | None = None) -> tuple[int, ...]"),
      "Imports a as the calls import their arrays (DLPack or the buffer protocol) and returns its shape; with dtype "
      "('float32', 'int32' or 'int64'), also checks its dtype, shape (-1: any extent; None: any shape) and "
      "C-contiguity as the calls do, with their messages naming `name`: the package's check of an input whose "
      "shape sizes an output, before it allocates that output. An object the binding cannot import is an "
      "InvalidArgument naming `name` (the exception its __dlpack_device__() or __dlpack__() raised, if any).");
  m.def(
      "_read_host",
      [](nb::handle a, const std::string& name, std::vector<std::size_t> ndims, const std::string& expected) {
        host_data h = read_host(a, name, ndims, expected);
        std::vector<std::size_t> shape(h.shape.begin(), h.shape.end());
        return to_numpy(std::move(h.values), std::move(shape));
      },
      "a"_a.none(), "name"_a, "ndims"_a, "expected"_a,
      "Host problem data a as a new C-contiguous float64 NumPy array (a copy), read as the operators and the "
      "posterior read theirs: any CPU array of a real dtype or nested sequence of numbers with one of ndims "
      "dimensions; errors name the argument `name` and say `expected`.",
      nb::rv_policy::move);
  nb::class_<ds::observation_operator>(m, "ObservationOperator",
                                       DS_DOC_FREE(observation_operator) "\n\nObservationOperator(*args, **kwargs) "
                                       "is refused with a TypeError: make operators with dense(), mask() or svd().")
      .def(
          "__init__",
          [](ds::observation_operator*, nb::args, nb::kwargs) {
            raise_type("ObservationOperator() makes no operator: use ObservationOperator.dense(A), "
                       "ObservationOperator.mask(d_x, indices, diagonal=None) or ObservationOperator.svd(U, "
                       "singular_values, V)");
          },
          nb::sig("def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None"),
          "Refused with a TypeError: make operators with dense(), mask() or svd().")
      .def_static(
          "dense",
          [](nb::args args, nb::kwargs kwargs) {
            call_arguments arguments("ObservationOperator.dense", args, kwargs, {"A"}, 1);
            host_data a = read_host(arguments[0], "A", {2}, "(d_y, d_x)");
            released_gil release;  // the operator's checks and tables
            return ds::observation_operator::dense(a.shape[0], a.shape[1], std::move(a.values));
          },
          sig_to<ds::observation_operator>("def dense(A: ProblemData)"),
          DS_DOC(observation_operator, dense) "\n\nA: the (d_y, d_x) matrix (d_y and d_x are its shape), host problem "
          "data copied into the operator as float64 (any CPU array of a real dtype, any strides, or a nested sequence "
          "of numbers; CUDA arrays, complex and bool are refused).")
      .def_static(
          "mask",
          [](nb::args args, nb::kwargs kwargs) {
            call_arguments arguments("ObservationOperator.mask", args, kwargs, {"d_x", "indices", "diagonal"}, 2);
            const std::int64_t d_x = int64_arg(arguments[0], "d_x");
            std::vector<std::int64_t> idx =
                read_host(arguments[1], "indices", {1}, "(d_y,) integers", true).indices;
            std::vector<double> g;
            if (arguments.given(2) && !arguments[2].is_none())
              g = host_vector(arguments[2], "diagonal", {1}, "(d_y,)");
            released_gil release;  // the operator's checks
            return ds::observation_operator::mask(d_x, std::move(idx), std::move(g));
          },
          sig_to<ds::observation_operator>(
              "def mask(d_x: int, indices: ProblemIndices, diagonal: ProblemData | None = None)"),
          DS_DOC(observation_operator, mask) "\n\nindices: the d_y observed coordinates, of an integer dtype; "
          "diagonal: the d_y gains, or None (all ones). Host problem data, copied (the gains as float64); CUDA "
          "arrays are refused.")
      .def_static(
          "svd",
          [](nb::args args, nb::kwargs kwargs) {
            call_arguments arguments("ObservationOperator.svd", args, kwargs, {"U", "singular_values", "V"}, 3);
            host_data u = read_host(arguments[0], "U", {2}, "(d_y, r)");
            std::vector<double> s = host_vector(arguments[1], "singular_values", {1}, "(r,)");
            host_data v = read_host(arguments[2], "V", {2}, "(d_x, r)");
            const std::int64_t r = std::int64_t(s.size());
            const std::string rs = " with r = " + std::to_string(r) + " (the singular values)";
            expect_shape(u, "U", u.shape[0], r, "(d_y, r)" + rs);
            expect_shape(v, "V", v.shape[0], r, "(d_x, r)" + rs);
            // The factors' orthonormality check: O((d_y + d_x) r^2), seconds for factors of a few thousand.
            released_gil release;
            return ds::observation_operator::svd(u.shape[0], v.shape[0], std::move(u.values), std::move(s),
                                                 std::move(v.values));
          },
          sig_to<ds::observation_operator>(
              "def svd(U: ProblemData, singular_values: ProblemData, V: ProblemData)"),
          DS_DOC(observation_operator, svd) "\n\nU (d_y, r), singular_values (r,) and V (d_x, r): host problem data, "
          "copied as float64 (CPU arrays of a real dtype; CUDA arrays refused); d_y, d_x and r are their shapes.")
      .def_prop_ro("kind", &ds::observation_operator::kind, DS_DOC(observation_operator, kind))
      .def_prop_ro("d_y", &ds::observation_operator::d_y, DS_DOC(observation_operator, d_y))
      .def_prop_ro("d_x", &ds::observation_operator::d_x, DS_DOC(observation_operator, d_x))
      .def(
          "matrix",
          [](const ds::observation_operator& A, nb::args args, nb::kwargs kwargs) {
            call_arguments("ObservationOperator.matrix", args, kwargs, {}, 0);
            return to_numpy(A.matrix(), {std::size_t(A.d_y()), std::size_t(A.d_x())});
          },
          nb::sig("def matrix(self) -> numpy.ndarray[dtype=float64]"), "A as a dense (d_y, d_x) float64 array.");

  nb::class_<ds::mixture_posterior>(m, "MixturePosterior", DS_DOC_FREE(mixture_posterior))
      .def(
          "__init__",
          [](ds::mixture_posterior* self, const ds::gaussian_mixture& prior, const ds::observation_operator& A,
             problem_scalar sigma, problem_data obs) {
            const double sigma_y = host_vector(sigma, "sigma_y", {0}, "a scalar")[0];
            std::vector<double> y = host_vector(obs, "y", {1}, "(d_y,)");
            const construction once(self);
            {
              released_gil release;
              new (self) ds::mixture_posterior(prior, A, sigma_y, std::move(y));
            }
            // The device its tables were copied to: the current one, when the runtime sees a device.
            int device = -1;
            if (ds::cuda_available() && cudaGetDevice(&device) != cudaSuccess) {
              cudaGetLastError();
              device = -1;
            }
            std::lock_guard<std::mutex> lock(posterior_devices_mutex);
            posterior_devices[self] = device;
          },
          "prior"_a, "operator"_a, "sigma_y"_a, "y"_a,
          "Computes the posterior of prior under y = A x + sigma_y z (FP64, on the CPU executor); sigma_y (a scalar) "
          "and y (d_y,) are host problem data, copied as float64.\n\n"
          DS_DOC_OVERLOAD(mixture_posterior, mixture_posterior, 3)
          "\n\nThe constructor above, from a linear_observation: " DS_DOC(mixture_posterior, mixture_posterior))
      .def_prop_ro("components", &ds::mixture_posterior::components, DS_DOC(mixture_posterior, components))
      .def_prop_ro("dim", &ds::mixture_posterior::dim, DS_DOC(mixture_posterior, dim))
      .def_prop_ro("weights", [](const ds::mixture_posterior& q) { return to_numpy(q.weights(), {q.weights().size()}); },
                   DS_DOC(mixture_posterior, weights) " (a NumPy copy)", nb::rv_policy::move)
      .def_prop_ro("log_weights",
                   [](const ds::mixture_posterior& q) { return to_numpy(q.log_weights(), {q.log_weights().size()}); },
                   DS_DOC(mixture_posterior, log_weights) " (a NumPy copy)", nb::rv_policy::move)
      .def_prop_ro("means",
                   [](const ds::mixture_posterior& q) {
                     return to_numpy(q.means(), {std::size_t(q.components()), std::size_t(q.dim())});
                   },
                   DS_DOC(mixture_posterior, means) " (a NumPy copy)", nb::rv_policy::move)
      .def_prop_ro("covariances",
                   [](const ds::mixture_posterior& q) {
                     return to_numpy(q.covariances(),
                                     {std::size_t(q.components()), std::size_t(q.dim()), std::size_t(q.dim())});
                   },
                   DS_DOC(mixture_posterior, covariances) " (a NumPy copy)", nb::rv_policy::move)
      .def_prop_ro("log_evidence", &ds::mixture_posterior::log_evidence, DS_DOC(mixture_posterior, log_evidence))
      .def("mean",
           [](const ds::mixture_posterior& q) {
             std::vector<double> v;
             {
               released_gil release;  // O(K d) on the host
               v = q.mean();
             }
             return to_numpy(std::move(v), {std::size_t(q.dim())});
           },
           DS_DOC(mixture_posterior, mean) " A new (d_x,) float64 NumPy array.")
      .def("covariance",
           [](const ds::mixture_posterior& q) {
             std::vector<double> c;
             {
               released_gil release;  // O(K d^2) on the host: a second for thousands of components
               c = q.covariance();
             }
             return to_numpy(std::move(c), {std::size_t(q.dim()), std::size_t(q.dim())});
           },
           DS_DOC(mixture_posterior, covariance) " A new (d_x, d_x) float64 NumPy array.")
      .def(
          "sample",
          [](const ds::mixture_posterior& q, out_array out, py_int seed_arg, std::optional<out_array> labels,
             py_int first_index_arg, py_int stream_h) {
            const std::uint64_t seed = int_arg<std::uint64_t>(seed_arg, "seed");
            const std::uint64_t first_index = int_arg<std::uint64_t>(first_index_arg, "first_index");
            const std::uintptr_t stream = stream_arg(stream_h);
            place p;
            std::int64_t n = out.ndim() == 2 ? std::int64_t(out.shape(0)) : -1;
            std::int32_t* lp = nullptr;
            ds::executor ran;
            if (out.dtype() != nb::dtype<double>() && out.dtype() != nb::dtype<float>())
              raise_invalid("out: dtype " + dtype_string(out.dtype()) + ", expected float32 or float64");
            if (out.dtype() == nb::dtype<double>()) {
              double* op = checked<double>(out, "out", {-1, q.dim()}, p);
              lp = checked_opt<std::int32_t>(labels, "labels", {n}, p);
              run_on on(p, stream);
              expect_tables_on(q, p, "posterior");
              released_gil release;
              ran = q.sample(op, n, seed, lp, first_index, on.exec);
            } else {
              float* op = checked<float>(out, "out", {-1, q.dim()}, p);
              lp = checked_opt<std::int32_t>(labels, "labels", {n}, p);
              run_on on(p, stream);
              expect_tables_on(q, p, "posterior");
              released_gil release;
              ran = q.sample(op, n, seed, lp, first_index, on.exec);
            }
            return report(ran);
          },
          "out"_a, "seed"_a, "labels"_a = nb::none(), "first_index"_a = 0, "stream"_a = 0,
          "Exact posterior samples into out (n, d_x), float32 or float64, on out's executor (labels: None or (n,) "
          "int32 on the same device); sample i uses the Philox stream (seed, first_index + i, 0).\n\n"
          DS_DOC_OVERLOAD(mixture_posterior, sample, 3) "\n" DS_DOC_OVERLOAD(mixture_posterior, sample, 4));

  // ---- guided posterior sampling ------------------------------------------------------------------------------
  nb::class_<ds::guided_problems> cls_guided_problems(m, "GuidedProblems",
      DS_DOC_FREE(guided_problems) DS_PY_SETTINGS_DOC("GuidedProblems"));
  def_init_settings(cls_guided_problems, "GuidedProblems");
  def_setting(cls_guided_problems, "problems", &ds::guided_problems::problems, DS_DOC(guided_problems, problems));
  def_setting(cls_guided_problems, "d_y", &ds::guided_problems::d_y, DS_DOC(guided_problems, d_y));
  // None reaches read_host, which refuses it naming the field.
  cls_guided_problems
      // A, y and sigma_y: host problem data, read as read_host() reads it (any CPU array of a real dtype or nested
      // sequence of numbers, flattened in row-major order) and copied; read back as lists.
      .def_prop_rw(
          "A", [](const ds::guided_problems& g) { return g.A; },
          [](ds::guided_problems& g, problem_data v) {
            g.A = host_vector(v, "A", {1, 2, 3}, "(d_y, d_x) or (B, d_y, d_x)");
          },
          nb::for_setter(nb::arg("arg").none()), nb::for_setter(nb::sig("def A(self, arg: ProblemData, /) -> None")),
          DS_DOC(guided_problems, A));
  def_setting(cls_guided_problems, "operators", &ds::guided_problems::operators, DS_DOC(guided_problems, operators));
  cls_guided_problems
      .def_prop_rw(
          "y", [](const ds::guided_problems& g) { return g.y; },
          [](ds::guided_problems& g, problem_data v) { g.y = host_vector(v, "y", {1, 2}, "(d_y,) or (B, d_y)"); },
          nb::for_setter(nb::arg("arg").none()), nb::for_setter(nb::sig("def y(self, arg: ProblemData, /) -> None")),
          DS_DOC(guided_problems, y))
      .def_prop_rw(
          "sigma_y", [](const ds::guided_problems& g) { return g.sigma_y; },
          [](ds::guided_problems& g, problem_data v) {
            g.sigma_y = host_vector(v, "sigma_y", {0, 1}, "a scalar or (B,)");
          },
          nb::for_setter(nb::arg("arg").none()),
          nb::for_setter(nb::sig("def sigma_y(self, arg: ProblemData, /) -> None")), DS_DOC(guided_problems, sigma_y));
  nb::class_<ds::guided_options> cls_guided_options(m, "GuidedOptions",
      DS_DOC_FREE(guided_options) DS_PY_SETTINGS_DOC("GuidedOptions"));
  def_init_settings(cls_guided_options, "GuidedOptions");
  def_setting(cls_guided_options, "sampler", &ds::guided_options::sampler, DS_DOC(guided_options, sampler));
  def_setting(cls_guided_options, "schedule", &ds::guided_options::schedule, DS_DOC(guided_options, schedule));
  def_setting(cls_guided_options, "steps", &ds::guided_options::steps, DS_DOC(guided_options, steps));
  def_setting(cls_guided_options, "grid", &ds::guided_options::grid, DS_DOC(guided_options, grid));
  def_setting(cls_guided_options, "ddim", &ds::guided_options::ddim, DS_DOC(guided_options, ddim));
  def_setting(cls_guided_options, "eta", &ds::guided_options::eta, DS_DOC(guided_options, eta));
  def_setting(cls_guided_options, "particles", &ds::guided_options::particles, DS_DOC(guided_options, particles));
  def_setting(cls_guided_options, "potential_spread", &ds::guided_options::potential_spread,
              DS_DOC(guided_options, potential_spread));
  def_setting(cls_guided_options, "potentials", &ds::guided_options::potentials, DS_DOC(guided_options, potentials));
  def_setting(cls_guided_options, "resampling", &ds::guided_options::resampling, DS_DOC(guided_options, resampling));
  def_setting(cls_guided_options, "start_correction", &ds::guided_options::start_correction,
              DS_DOC(guided_options, start_correction));
  def_setting(cls_guided_options, "multistep_kernel", &ds::guided_options::multistep_kernel,
              DS_DOC(guided_options, multistep_kernel));
  def_setting(cls_guided_options, "final_resample", &ds::guided_options::final_resample,
              DS_DOC(guided_options, final_resample));
  // final_moves: an int, or 'auto' / 'automatic' for -1 (the automatic default), as potentials takes 'automatic'.
  cls_guided_options.def_prop_rw(
      "final_moves", [](ds::guided_options& c) { return c.final_moves; },
      [](ds::guided_options& c, nb::handle v) {
        if (nb::isinstance<nb::str>(v)) {
          const std::string name = nb::cast<std::string>(v);
          if (name != "auto" && name != "automatic")
            raise_invalid("final_moves: unknown name '" + name + "', expected 'auto', 'automatic', -1 or a "
                          "count >= 0");
          c.final_moves = -1;
          return;
        }
        c.final_moves = setting_value<std::int64_t>(v, "final_moves");
      },
      nb::for_setter(nb::arg("arg").none()),
      nb::for_setter(nb::sig("def final_moves(self, arg: int | str, /) -> None")), DS_DOC(guided_options, final_moves));
  def_setting(cls_guided_options, "final_move_step", &ds::guided_options::final_move_step,
              DS_DOC(guided_options, final_move_step));
  def_setting(cls_guided_options, "final_move_curvature", &ds::guided_options::final_move_curvature,
              DS_DOC(guided_options, final_move_curvature));
  def_setting(cls_guided_options, "guidance_scale", &ds::guided_options::guidance_scale,
              DS_DOC(guided_options, guidance_scale));
  def_setting(cls_guided_options, "operator_path", &ds::guided_options::operator_path,
              DS_DOC(guided_options, operator_path));
  def_setting(cls_guided_options, "dps_step", &ds::guided_options::dps_step, DS_DOC(guided_options, dps_step));
  def_setting(cls_guided_options, "diffpir_zeta", &ds::guided_options::diffpir_zeta,
              DS_DOC(guided_options, diffpir_zeta));
  def_setting(cls_guided_options, "diffpir_lambda", &ds::guided_options::diffpir_lambda,
              DS_DOC(guided_options, diffpir_lambda));
  def_setting(cls_guided_options, "skrock_stages", &ds::guided_options::skrock_stages,
              DS_DOC(guided_options, skrock_stages));
  def_setting(cls_guided_options, "skrock_eta", &ds::guided_options::skrock_eta, DS_DOC(guided_options, skrock_eta));
  def_setting(cls_guided_options, "skrock_step_fraction", &ds::guided_options::skrock_step_fraction,
              DS_DOC(guided_options, skrock_step_fraction));
  def_setting(cls_guided_options, "skrock_lipschitz", &ds::guided_options::skrock_lipschitz,
              DS_DOC(guided_options, skrock_lipschitz));
  def_setting(cls_guided_options, "ddrm_eta", &ds::guided_options::ddrm_eta, DS_DOC(guided_options, ddrm_eta));
  def_setting(cls_guided_options, "ddrm_eta_b", &ds::guided_options::ddrm_eta_b, DS_DOC(guided_options, ddrm_eta_b));
  def_setting(cls_guided_options, "dcps_blocks", &ds::guided_options::dcps_blocks, DS_DOC(guided_options, dcps_blocks));
  def_setting(cls_guided_options, "dcps_langevin_steps", &ds::guided_options::dcps_langevin_steps,
              DS_DOC(guided_options, dcps_langevin_steps));
  def_setting(cls_guided_options, "dcps_langevin_step", &ds::guided_options::dcps_langevin_step,
              DS_DOC(guided_options, dcps_langevin_step));
  def_setting(cls_guided_options, "dcps_gradient_steps", &ds::guided_options::dcps_gradient_steps,
              DS_DOC(guided_options, dcps_gradient_steps));
  def_setting(cls_guided_options, "dcps_learning_rate", &ds::guided_options::dcps_learning_rate,
              DS_DOC(guided_options, dcps_learning_rate));
  def_setting(cls_guided_options, "dcps_bridge_variance", &ds::guided_options::dcps_bridge_variance,
              DS_DOC(guided_options, dcps_bridge_variance));
  def_setting(cls_guided_options, "dcps_absolute_step", &ds::guided_options::dcps_absolute_step,
              DS_DOC(guided_options, dcps_absolute_step));
  def_setting(cls_guided_options, "seed", &ds::guided_options::seed, DS_DOC(guided_options, seed));
  m.def(
      "guided_sample",
      [](const ds::gaussian_mixture& prior, ds::guided_problems pr, ds::guided_options o,
         std::optional<out_array> particles, std::optional<out_array> log_weights, std::optional<out_array> samples,
         std::optional<out_array> log_normaliser, std::optional<out_array> ess_trace,
         std::optional<out_array> resample_count, py_int stream_h, std::optional<array> device) {
        const std::uintptr_t stream = stream_arg(stream_h);
        place p;
        if (device) locate(*device, "device", p);  // where the call runs, outputs or none
        std::int64_t B = pr.problems, N = o.particles, d = prior.dim();
        ds::guided_outputs outs;
        outs.particles = checked_opt<float>(particles, "particles", {B, N, d}, p);
        outs.log_weights = checked_opt<float>(log_weights, "log_weights", {B, N}, p);
        outs.samples = checked_opt<float>(samples, "samples", {B, N, d}, p);
        outs.log_normaliser = checked_opt<double>(log_normaliser, "log_normaliser", {B}, p);
        if (ess_trace) ds::limits::check("options.steps", o.steps, 1, ds::limits::max_steps);  // the library's check,
        outs.ess_trace = checked_opt<float>(ess_trace, "ess_trace", {B, o.steps + 1}, p);    // before o.steps + 1
        outs.resample_count = checked_opt<std::int32_t>(resample_count, "resample_count", {B}, p);
        ds::guided_report r;
        run_on on(p, stream);
        expect_tables_on(prior, p, "prior");
        {
          released_gil release;
          r = ds::guided_sample(prior, outs, pr, o, on.exec);
        }
        return guided_report_dict(r);
      },
      "prior"_a, "problems"_a, "options"_a, "particles"_a = nb::none(), "log_weights"_a = nb::none(),
      "samples"_a = nb::none(), "log_normaliser"_a = nb::none(), "ess_trace"_a = nb::none(),
      "resample_count"_a = nb::none(), "stream"_a = 0, "device"_a = nb::none(),
      "Runs options.sampler on every problem of problems; the outputs (particles (B, N, d), log_weights (B, N), "
      "samples (B, N, d), ess_trace (B, steps + 1) float32, log_normaliser (B,) float64, resample_count (B,) int32) "
      "are optional arrays on one device, whose executor runs the call; device: None or an array (any dtype and "
      "shape) on the device the call runs on, which the outputs must be on too (with no output and no device the "
      "call runs on the CPU executor).\n\n" DS_DOC_FREE(guided_sample));

  // ---- metrics --------------------------------------------------------------------------------------------------
  m.def(
      "sliced_wasserstein",
      [](array a, array b, py_int directions_arg, py_int seed_arg, py_int p_arg, py_int stream_h) {
        const int directions = int_arg<int>(directions_arg, "directions");
        const std::uint64_t seed = int_arg<std::uint64_t>(seed_arg, "seed");
        const int pw = int_arg<int>(p_arg, "p");
        const std::uintptr_t stream = stream_arg(stream_h);
        place p;
        const float* ap = checked<float>(a, "a", {-1, -1}, p);
        const float* bp = checked<float>(b, "b", {-1, dim_of(a, 1)}, p);
        run_on on(p, stream);
        released_gil release;
        return ds::sliced_wasserstein(dim_of(a, 0), dim_of(b, 0), dim_of(a, 1), ap, bp, directions, seed, pw, on.exec);
      },
      "a"_a, "b"_a, "directions"_a = 256, "seed"_a = 0, "p"_a = 1, "stream"_a = 0,
      "Sliced Wasserstein-p distance between two float32 sample sets (n_a, d) and (n_b, d) on one device.");
  m.def(
      "component_weights",
      [](const ds::mixture_posterior& q, array x) {
        place p;
        const float* xp = checked<float>(x, "x", {-1, q.dim()}, p);
        if (p.where != ds::executor::cpu) raise_invalid("x: component_weights runs on the host; pass CPU arrays");
        std::vector<double> w;
        {
          released_gil release;
          w = ds::component_weights(q, dim_of(x, 0), xp);
        }
        return to_numpy(std::move(w), {std::size_t(q.components())});
      },
      "reference"_a, "x"_a, "Posterior component weights recovered from samples x (n, d_x) float32 (host).");
  m.def(
      "component_weights",
      [](const ds::gaussian_mixture& g, array x) {
        place p;
        const float* xp = checked<float>(x, "x", {-1, g.dim()}, p);
        if (p.where != ds::executor::cpu) raise_invalid("x: component_weights runs on the host; pass CPU arrays");
        std::vector<double> w;
        {
          released_gil release;
          w = ds::component_weights(g, dim_of(x, 0), xp);
        }
        return to_numpy(std::move(w), {std::size_t(g.components())});
      },
      "reference"_a, "x"_a, "Mixture component weights recovered from samples x (n, d) float32 (host).");
  m.def(
      "component_weight_error",
      [](const ds::mixture_posterior& q, array x) {
        place p;
        const float* xp = checked<float>(x, "x", {-1, q.dim()}, p);
        if (p.where != ds::executor::cpu) raise_invalid("x: component_weight_error runs on the host; pass CPU arrays");
        released_gil release;
        return ds::component_weight_error(q, dim_of(x, 0), xp);
      },
      "reference"_a, "x"_a, "max_k |recovered weight_k - w'_k| (host).");
  m.def(
      "component_weight_error",
      [](const ds::gaussian_mixture& g, array x) {
        place p;
        const float* xp = checked<float>(x, "x", {-1, g.dim()}, p);
        if (p.where != ds::executor::cpu) raise_invalid("x: component_weight_error runs on the host; pass CPU arrays");
        released_gil release;
        return ds::component_weight_error(g, dim_of(x, 0), xp);
      },
      "reference"_a, "x"_a, "max_k |recovered weight_k - w_k| (host).");
}
