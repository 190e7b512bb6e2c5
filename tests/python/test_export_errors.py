"""Arrays the library cannot read or write as they are (a tensor torch will not export through DLPack, a lazy negation
view, another dtype, a dtype DLPack cannot carry, a device other than the CPU or CUDA, a list) are refused before
anything runs, with an InvalidArgument that names the argument, says what is wrong and what to pass instead; nothing
is converted or copied silently. NumPy cases always run; the PyTorch and JAX cases skip without their framework."""
import array
import re

import numpy as np
import pytest

import diffsample as ds
from conftest import requires_gpu, torch_or_none
from dlpack_fake import DLPackOnly

torch = torch_or_none()
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(8, 2)


def as_out(pattern):
    """The pattern of x's message for the same kind of array given as out=: the same fault, and advice that does not
    offer a copy (a converted copy of out would not receive the results)."""
    return re.split(r"\.\*|; ", pattern)[0].replace("x:", "out:", 1) + ".*receive the results"


def refused(call, pattern):
    with pytest.raises(ds.InvalidArgument, match=pattern):
        call()


@pytest.mark.parametrize("bad, pattern", [
    (np.zeros((8, 2), dtype=object), r"x: dtype object .*expected float32.*astype\(numpy\.float32\)"),
    (np.zeros((8, 2), dtype="U1"), r"x: dtype <U1 .*expected float32.*astype\(numpy\.float32\)"),
    (np.zeros((8, 2), dtype="M8[s]"), r"x: dtype datetime64\[s\] .*expected float32"),
    (np.zeros(8, dtype=[("a", "f4"), ("b", "f4")]), r"x: dtype \[\('a', '<f4'\), \('b', '<f4'\)\] .*expected"),
    (np.zeros((8, 2), dtype=">f4"), r"x: dtype >f4 \(big-endian\).*astype\(numpy\.float32\)"),
    (np.zeros((8, 2)),
     r"x: dtype float64, expected float32; convert explicitly \(a copy\): x\.astype\(numpy\.float32\)"),
    ([[0.0, 0.0]] * 8, r"x: a list, expected an array.*numpy\.asarray\(x, dtype=numpy\.float32\)"),
])
def test_numpy_and_python_inputs_are_refused_with_the_argument_named(mixture2, bad, pattern):
    refused(lambda: mixture2.score(bad, 1.0, 0.5), pattern)
    out = np.zeros((8, 2), np.float32)
    refused(lambda: mixture2.score(X, 1.0, 0.5, out=bad), as_out(pattern))
    assert not out.any()


def test_non_contiguous_arrays_are_refused_with_advice_for_reads_and_writes(mixture2):
    t = np.zeros((2, 8), np.float32).T
    refused(lambda: mixture2.score(t, 1.0, 0.5), r"x: not C-contiguous .*numpy\.ascontiguousarray")
    refused(lambda: mixture2.score(X, 1.0, 0.5, out=t), r"out: not C-contiguous .*receive the results")
    refused(lambda: ds.langevin(mixture2, t, method="ula", step_size=0.01, steps=2),
            r"x: not C-contiguous .*receive the results")
    assert not t.any()


def packed_field(shape, dtype="<f4"):
    """A view of one field of a packed structured array: byte strides that are not multiples of its item size (6
    bytes per element of a 4-byte dtype), which neither DLPack nor the buffer protocol can describe."""
    a = np.zeros(shape, dtype=[("v", dtype), ("pad", "<i2")])
    a["v"] = np.arange(a.size).reshape(shape)
    return a["v"]


def test_arrays_with_strides_of_no_whole_item_are_refused_by_name(mixture2):
    """An array read or written in place with byte strides that are not multiples of its item size (a field of a
    packed structured array) was nanobind's TypeError 'incompatible function arguments', naming nothing: it is an
    InvalidArgument naming the argument, with advice for reads and writes, and nothing is written."""
    why = (r"strides \(\d+, 6\) bytes, not multiples of its item size \(4 bytes: a field of a packed structured "
           r"array\?\)")
    v = packed_field((4, 2))
    refused(lambda: mixture2.score(v, 1.0, 0.5), rf"^x: {why}.*pass numpy\.ascontiguousarray\(x\) \(a copy\)")
    out = packed_field((4, 2))
    refused(lambda: mixture2.score(X[:4], 1.0, 0.5, out=out), rf"^out: {why}.*would be a copy that does not receive")
    np.testing.assert_array_equal(out, np.arange(8).reshape(4, 2))
    refused(lambda: ds.langevin(mixture2, packed_field((4, 2)), steps=2, step_size=0.1), rf"^x: {why}")
    refused(lambda: ds.resample(packed_field((2, 4))), rf"^log_weights: {why}")
    refused(lambda: ds.resample(np.zeros((2, 4), np.float32), ancestors=packed_field((2, 4), "<i4")),
            rf"^ancestors: {why}")
    plan = ds.DiffusionPlan(4, 2, sampler="ddpm", steps=2)
    refused(lambda: plan.reset(packed_field((4, 2))), rf"^x: {why}")


def test_empty_arrays_are_contiguous(mixture2):
    """An array without elements is contiguous whatever its strides (NumPy exports an empty array's strides as 0):
    such arrays were refused as 'not C-contiguous (strides 0, 0 elements for shape (0, 3))', so resample() of no
    problems, sample(0) and score() of no points failed though the library takes zero sizes. Seen failing before the
    fix: InvalidArgument 'log_weights: not C-contiguous' / 'out: not C-contiguous'."""
    ancestors, weights, reports = ds.resample(np.zeros((0, 3), np.float32))
    assert ancestors.shape == (0, 3) and weights.shape == (0, 3) and reports.shape == (0,)
    assert mixture2.sample(0).shape == (0, 2)
    assert mixture2.score(np.zeros((0, 2), np.float32), 1.0, 0.5).shape == (0, 2)
    assert ds.gather_particles(np.zeros((0, 3, 2), np.float32), np.zeros((0, 3), np.int32)).shape == (0, 3, 2)
    # Sizes the library refuses are refused for what they are, not for their strides.
    refused(lambda: ds.resample(np.zeros((2, 0), np.float32)), r"particles: must be >= 1 when problems > 0")


def test_sample_counts_are_checked_by_name(mixture2):
    """A call that allocates its output (out=None) took n as it came: no n gave TypeError ("int() argument must be
    ... not 'NoneType'"), n = -1 NumPy's "negative dimensions are not allowed" and n = 2.5 a TypeError, none naming n.
    Seen failing before the fix: those exceptions."""
    post = ds.MixturePosterior(mixture2, [[1.0, 0.0]], 0.5, [0.1])
    for call in (mixture2.sample, post.sample, lambda n: ds.diffusion(mixture2, n, steps=2)):
        refused(lambda: call(None), r"n: None; give the number of samples n, or out= to fill")
        refused(lambda: call(-1), r"n: must be >= 0, got -1")
        refused(lambda: call(2.5), r"n: expected an integer >= 0, got 2.5")
        refused(lambda: call(True), r"n: expected an integer >= 0, got True")
        assert call(np.int64(3)).shape == (3, 2)


def test_other_arguments_are_named_too(mixture2):
    refused(lambda: mixture2.denoiser_jvp(X, X.astype(np.float64), 1.0, 0.5), r"v: dtype float64, expected float32")
    refused(lambda: ds.sliced_wasserstein(X, X.astype(">f4")), r"b: dtype >f4 \(big-endian\)")
    refused(lambda: ds.resample(X.reshape(2, 8).astype(object)), r"log_weights: dtype object")
    plan = ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3)
    x = X.copy()
    plan.reset(x)
    refused(lambda: plan.step(x, X.astype(np.float64)), r"model: dtype float64, expected float32")


def read_only(shape, dtype=np.float32):
    a = np.zeros(shape, dtype)
    a.flags.writeable = False
    return a


def test_read_only_outputs_are_refused_by_name(mixture2):
    """A read-only NumPy array given where the call writes reached nanobind, whose TypeError ("incompatible function
    arguments") names neither the argument nor the fault. Each is refused with InvalidArgument naming it, the array
    untouched. Seen failing before the fix: TypeError for every case."""
    x = X.copy()
    plan = ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3)
    cases = [
        ("out", lambda: mixture2.score(X, out=read_only((8, 2)))),
        ("out", lambda: mixture2.log_density(X, out=read_only(8))),
        ("out", lambda: mixture2.denoiser_jvp(X, X, out=read_only((8, 2)))),
        ("out", lambda: mixture2.sample(out=read_only((8, 2)))),
        ("labels", lambda: mixture2.sample(8, labels=read_only(8, np.int32))),
        ("x", lambda: ds.langevin(mixture2, read_only((8, 2)), method="ula", step_size=0.01, steps=2)),
        ("trajectory", lambda: ds.langevin(mixture2, x, method="ula", step_size=0.01, steps=2, record_every=1,
                                           trajectory=read_only((2, 8, 2)))),
        ("out", lambda: ds.diffusion(mixture2, out=read_only((8, 2)), steps=2)),
        ("ancestors", lambda: ds.resample(X.reshape(2, 8), ancestors=read_only((2, 8), np.int32))),
        ("out", lambda: ds.gather_particles(X.reshape(1, 8, 2), np.zeros((1, 8), np.int32),
                                            out=read_only((1, 8, 2)))),
        ("out", lambda: ds.MixturePosterior(mixture2, [[1.0, 0.0]], 0.5, [0.1]).sample(out=read_only((8, 2)))),
        ("x", lambda: plan.reset(read_only((8, 2)))),
        ("x", lambda: plan.step(read_only((8, 2)), X)),
        ("x", lambda: plan.finish(read_only((8, 2)), X)),
    ]
    for name, call in cases:
        refused(call, rf"^{name}: a read-only NumPy array, which the call would write into")
    np.testing.assert_array_equal(x, X)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_other_read_only_outputs_are_refused_by_name(mixture2):
    """Read-only arrays of other types given where the call writes: a NumPy subclass (np.matrix, a user's ndarray
    subclass) and a memoryview over bytes reached nanobind, whose TypeError ("incompatible function arguments")
    named nothing. Seen failing before the fix: TypeError for every case."""
    matrix = np.asmatrix(np.zeros((8, 2), np.float32))
    matrix.flags.writeable = False

    class Sub(np.ndarray):
        pass

    sub = read_only((8, 2)).view(Sub)
    frozen = memoryview(bytes(64)).cast("B").cast("f", (8, 2))
    plan = ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3)
    cases = [
        ("out", lambda: mixture2.score(X, out=matrix), r"NumPy array \(matrix\)"),
        ("out", lambda: mixture2.score(X, out=sub), r"NumPy array \(Sub\)"),
        ("out", lambda: mixture2.score(X, out=frozen), "memoryview"),
        ("x", lambda: ds.langevin(mixture2, sub, method="ula", step_size=0.01, steps=2), r"NumPy array \(Sub\)"),
        ("x", lambda: plan.step(sub, X), r"NumPy array \(Sub\)"),
        ("out", lambda: ds.diffusion(mixture2, out=frozen, steps=2), "memoryview"),
    ]
    for name, call, kind in cases:
        refused(call, rf"^{name}: a read-only {kind}, which the call would write into")
    assert not matrix.any() and not sub.any() and bytes(frozen.cast("B")) == bytes(64)
    # A writable memoryview is written in place (the results are there).
    buffer = bytearray(64)
    mixture2.score(X, out=memoryview(buffer).cast("B").cast("f", (8, 2)))
    np.testing.assert_array_equal(np.frombuffer(buffer, np.float32).reshape(8, 2), mixture2.score(X))


def test_misaligned_plan_buffers_are_refused_by_name():
    """A float32 view one byte off its alignment given to DiffusionPlan.reset / step / finish was written through
    without a word (the fused calls refused it, the stepwise plan did not check; on CUDA it would be a
    misaligned-address fault). Seen failing before the library's check (no error in any case)."""
    raw = np.zeros(8 * 2 * 4 + 4, np.uint8)
    off = np.frombuffer(raw.data, np.float32, count=16, offset=1).reshape(8, 2)
    assert not off.flags.aligned and off.flags.writeable
    plan = ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3)
    refused(lambda: plan.reset(off), r"^x: pointer 0x[0-9a-f]+ is not aligned to 4 bytes$")
    x = np.zeros((8, 2), np.float32)
    plan.reset(x)
    refused(lambda: plan.step(off, X), r"^x: pointer .* is not aligned to 4 bytes$")
    refused(lambda: plan.step(x.copy(), off), r"^model: pointer .* is not aligned to 4 bytes$")
    refused(lambda: plan.finish(x.copy(), off), r"^model: pointer .* is not aligned to 4 bytes$")
    assert not raw.any()


def test_masked_arrays_are_refused_by_name(mixture2):
    """A NumPy masked array's mask means nothing to the library: as an input its masked elements were read as
    data, as an output they were written under the mask (the results hidden), as problem data they became the
    problem's values, all without a word. Seen failing before the fix: every case ran."""
    mask = np.zeros((8, 2), bool)
    mask[:, 0] = True
    masked = np.ma.masked_array(X.copy(), mask=mask)
    out = np.ma.masked_array(np.zeros((8, 2), np.float32), mask=mask)
    cases = [
        ("x", lambda: mixture2.score(masked), "read"),
        ("out", lambda: mixture2.score(X, out=out), "written"),
        ("x", lambda: ds.langevin(mixture2, masked, method="ula", step_size=0.01, steps=2), "written"),
        ("means", lambda: ds.GaussianMixture([1.0], np.ma.masked_array([[0.0, 1.0]], mask=[[1, 0]]), [1.0]),
         "read"),
        ("y", lambda: ds.guided_sample(mixture2, [[1.0, 0.0]], np.ma.masked_array([0.5], mask=[1]), 0.5,
                                       particles=4, steps=2), "read"),
    ]
    for name, call, how in cases:
        refused(call, rf"^{name}: a NumPy masked array; the library ignores the mask, so the masked elements "
                      rf"would be {how} as any other: pass {name}\.filled\(value\) or {name}\.data explicitly$")
    assert not out.data.any()
    np.testing.assert_array_equal(masked.data, X)


def test_integer_arguments_are_checked_by_name(mixture2):
    """Seeds, first indices and counts passed to the binding directly: a float was cut (seed=1.5 ran seed 1), a bool
    taken as 0 or 1 (directions=True ran one direction), and a negative or too large value gave nanobind's
    TypeError naming nothing. Keyword settings out of their integer type's range said 'a int (-1), expected int'.
    Seen failing before the fix: those results and messages."""
    post = ds.MixturePosterior(mixture2, [[1.0, 0.0]], 0.5, [0.1])
    for sample in (mixture2.sample, post.sample):
        refused(lambda: sample(3, seed=1.5), r"^seed: expected an integer in \[0, 18446744073709551615\], got 1\.5")
        refused(lambda: sample(3, seed=-1), r"^seed: -1 is outside \[0, 18446744073709551615\]")
        refused(lambda: sample(3, seed=2**64), r"^seed: 18446744073709551616 is outside")
        refused(lambda: sample(3, first_index=-1), r"^first_index: -1 is outside")
        refused(lambda: sample(3, first_index=True), r"^first_index: expected an integer")
        np.testing.assert_array_equal(sample(3, seed=np.uint64(7)), sample(3, seed=7))
    refused(lambda: ds.sliced_wasserstein(X, X, directions=True), r"^directions: expected an integer in \[1, ")
    refused(lambda: ds.sliced_wasserstein(X, X, directions=0), r"^directions: 0 is outside \[1, 2147483647\]")
    refused(lambda: ds.sliced_wasserstein(X, X, directions=2**31), r"^directions: 2147483648 is outside")
    refused(lambda: ds.sliced_wasserstein(X, X, seed=-1), r"^seed: -1 is outside")
    refused(lambda: ds.sliced_wasserstein(X, X, p=True), r"^p: expected an integer in \[1, 2\], got True")
    refused(lambda: ds.langevin(mixture2, X.copy(), seed=-1), r"^seed: -1 is outside \[0, 18446744073709551615\] "
                                                              r"\(the setting's integer type\)")
    refused(lambda: ds.resample(X.reshape(2, 8), metropolis_steps=2**40),
            r"^metropolis_steps: 1099511627776 is outside \[-2147483648, 2147483647\]")


def test_shapes_and_arguments_the_package_reads_itself_are_named(mixture2):
    """Arguments the package unpacked or allocated for before the library saw them: a 1-D log_weights ("not enough
    values to unpack"), a one-number target (IndexError), a list x of denoiser_jvp (AttributeError), a model that
    returned None (nanobind's TypeError), particles = -1 (NumPy's "negative dimensions") or 2^40 (a MemoryError for
    8 TiB), device='cuda' as a string (ran on the CPU into NumPy arrays), complex or bool points of the FP64
    references (the imaginary part dropped, True read as 1). Seen failing before the fix: those exceptions or runs."""
    refused(lambda: ds.resample(X[0]), r"^log_weights: shape \(2,\), expected a \(B, N\) float32 array")
    refused(lambda: ds.resample(X[None]), r"^log_weights: shape \(1, 8, 2\)")
    refused(lambda: ds.langevin(mixture2, X.copy(), target=(1.0,)), r"^target: expected the channel \(a, s\)")
    refused(lambda: ds.SamplingPlan.langevin(8, 2, target=None), r"^target: expected the channel")
    refused(lambda: mixture2.denoiser_jvp([[0.0, 0.0]], X[:1]), r"^x: a list, expected an array")
    plan = ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3)
    refused(lambda: plan.run(lambda x, a, s: None), r"^model: None, expected the model's \(n, d\) float32 output")
    x = plan.reset(X.copy())
    refused(lambda: plan.step(x, None), r"^model: None")
    A, y = [[1.0, 0.5]], [0.25]
    refused(lambda: ds.guided_sample(mixture2, A, y, 0.5, particles=-1, steps=2),
            r"^options\.particles = -1, must be at least 1")
    refused(lambda: ds.guided_sample(mixture2, A, y, 0.5, particles=2**40, steps=2),
            r"^options\.particles = 1099511627776, the limit is 16777216 \(2\^24\)")
    refused(lambda: ds.guided_sample(mixture2, A, y, 0.5, particles=4, steps=2**40),
            r"^options\.steps = 1099511627776, the limit is")
    refused(lambda: ds.guided_sample(mixture2, A, y, 0.5, particles=4, steps=2, device="cuda"),
            r"^device: a str \('cuda'\); pass None")
    for what in ("score", "log_density"):
        refused(lambda: mixture2.evaluate_fp64(what, np.ones((2, 2), complex)), r"^x: .*complex")
        refused(lambda: mixture2.evaluate_fp64(what, np.ones((2, 2), bool)), r"^x: .*bool")
        refused(lambda: mixture2.evaluate_fp64(what, [1.0, 2.0]), r"^x: .*\(n, d\)")
    refused(lambda: mixture2.denoiser_jvp_fp64(np.ones((2, 2)), np.ones((2, 2), complex)), r"^v: .*complex")
    np.testing.assert_allclose(mixture2.evaluate_fp64("score", X.astype(np.float64)),
                               mixture2.score(X), rtol=1e-4, atol=1e-5)


@needs_torch
@pytest.mark.parametrize("make, pattern", [
    (lambda: torch._neg_view(torch.from_numpy(X.copy())),
     r"x: a tensor with the negative bit set .*x\.resolve_neg\(\)"),
    (lambda: torch.empty(8, 2, device="meta"), r"x: a tensor on meta.*cpu or cuda.*x\.cpu\(\)"),
    (lambda: torch.from_numpy(X.copy()).to_sparse(), r"x: a sparse_coo tensor.*x\.to_dense\(\)"),
    (lambda: torch.from_numpy(X.copy()).double(), r"x: dtype float64, expected float32; .*x\.float\(\)"),
    (lambda: torch.from_numpy(X.copy()).to(torch.float8_e4m3fn),
     r"x: dtype float8_e4m3fn, expected float32; .*x\.float\(\)"),
    (lambda: torch.randn(8, 2, dtype=torch.complex64).conj(), r"x: dtype complex64, expected float32"),
    (lambda: torch.zeros(2, 8).t(), r"x: not C-contiguous .*tensor\.contiguous\(\)"),
])
def test_torch_tensors_that_cannot_be_read_as_they_are(mixture2, make, pattern):
    refused(lambda: mixture2.score(make(), 1.0, 0.5), pattern)
    out = make()
    refused(lambda: mixture2.score(X, 1.0, 0.5, out=out), as_out(pattern))


@needs_torch
def test_a_negated_view_is_not_read_as_its_base(mixture2):
    # torch's DLPack export ignores the negative bit: read through it, the library would see x and not -x.
    x = torch.from_numpy(X.copy())
    plan = ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3)
    state = torch.zeros(8, 2)
    plan.reset(state)
    before = state.clone()
    refused(lambda: plan.step(state, torch._neg_view(x)), r"model: a tensor with the negative bit set")
    assert torch.equal(state, before)
    refused(lambda: ds.langevin(mixture2, torch._neg_view(torch.zeros(8, 2)), method="ula", step_size=0.01, steps=2),
            r"x: a tensor with the negative bit set")
    # The explicit copy is read as the values it holds.
    assert torch.equal(mixture2.score(torch._neg_view(x).resolve_neg(), 1.0, 0.5), mixture2.score(-x, 1.0, 0.5))


@needs_torch
def test_requires_grad_inputs_are_read_detached_and_outputs_refused(mixture2):
    x = torch.from_numpy(X.copy()).requires_grad_()
    assert torch.equal(mixture2.score(x, 1.0, 0.5), mixture2.score(x.detach(), 1.0, 0.5))
    refused(lambda: mixture2.score(X, 1.0, 0.5, out=torch.zeros(8, 2, requires_grad=True)),
            r"out: a tensor that requires grad .*out\.detach\(\)")


def test_jax_arrays_that_cannot_be_read_as_they_are(mixture2):
    jnp = pytest.importorskip("jax.numpy")
    refused(lambda: mixture2.score(jnp.zeros((8, 2), jnp.bfloat16), 1.0, 0.5),
            r"x: dtype bfloat16, expected float32; .*x\.astype\(jax\.numpy\.float32\)")
    refused(lambda: mixture2.score(jnp.zeros((8, 2), jnp.int4), 1.0, 0.5),
            r"x: dtype int4, expected float32; .*x\.astype\(jax\.numpy\.float32\)")
    refused(lambda: ds.sliced_wasserstein(X, jnp.zeros((8, 2), jnp.float64 if jnp.zeros(1).dtype == jnp.float64
                                                             else jnp.int32)),
            r"b: dtype (float64|int32), expected float32")


@needs_torch
@pytest.mark.skipif(not ds._core.HAS_SAMPLING_PLANS, reason="the library has no ask/tell plans")
def test_sampling_plan_copies_a_negated_view_by_its_values(mixture2):
    # SamplingPlan.run copies the model's output into the plan's buffer (a copy by design): a negated view is
    # copied as the values it holds, as torch's own copy does, rather than refused by NumPy's conversion.
    good = lambda x, a, s: torch.from_numpy(mixture2.denoiser(np.ascontiguousarray(x), a, s))  # noqa: E731
    want = ds.SamplingPlan.diffusion(16, 2, sampler="ddpm", steps=3, seed=4).run(good)
    got = ds.SamplingPlan.diffusion(16, 2, sampler="ddpm", steps=3, seed=4).run(
        lambda x, a, s: torch._neg_view(-good(x, a, s)))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


class FakeCuda:
    """A host NumPy array exported through DLPack labelled as memory of CUDA device `device`. The binding must refuse
    it before anything reads it (a kernel or the CPU executor dereferencing it would be wrong either way)."""

    def __init__(self, a, device):
        self.a, self.device, self.shape, self.dtype = a, device, a.shape, a.dtype

    def __dlpack_device__(self):
        return (2, self.device)

    def __dlpack__(self, **kwargs):
        import ctypes

        capsule = self.a.__dlpack__()  # a legacy "dltensor" capsule: DLManagedTensor, DLTensor first
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        device = (ctypes.c_int32 * 2).from_address(get(capsule, b"dltensor") + 8)  # DLTensor.device after data
        device[0], device[1] = 2, self.device  # kDLCUDA, device id
        return capsule


def test_plan_arrays_on_another_device_are_refused_naming_both():
    # A plan's calls compared only the executor of their arrays with the plan's ("x: on the wrong device for this
    # plan"), not the CUDA device: a CUDA plan made on device 0 took arrays of device 1 and ran its kernels on them
    # from device 0. The message names the array's device and the plan's. (CPU plans here; the CUDA case below.)
    x = FakeCuda(np.zeros((8, 2), np.float32), 1)
    plan = ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3)
    refused(lambda: plan.reset(x), r"^x: on cuda:1, but the plan is on cpu:0 \(its memory and kernels are there: pass "
                                    r"arrays on that device\)$")
    if ds._core.HAS_SAMPLING_PLANS:
        refused(lambda: ds.SamplingPlan.diffusion(8, 2, steps=3).reset(x), r"^initial: on cuda:1, but the plan is "
                                                                          r"on cpu:0")


@requires_gpu
def test_cuda_plan_refuses_arrays_of_another_device():
    # A CUDA plan on device 0 given an x labelled cuda:1 (host memory underneath: a kernel would fault on it) is
    # refused before anything is launched. Not run here (no GPU).
    import torch

    with torch.cuda.device(0):
        plan = ds.DiffusionPlan(8, 2, sampler="ddpm", steps=3, device="cuda")
        x = FakeCuda(np.zeros((8, 2), np.float32), 1)
        refused(lambda: plan.reset(x), r"^x: on cuda:1, but the plan is on cuda:0")


class ArrayInterfaceOnly:
    """An object that exposes NumPy's __array_interface__ and nothing the binding reads (no DLPack, no buffer)."""

    def __init__(self, a):
        self._a = a
        self.__array_interface__ = a.__array_interface__


def test_buffers_without_shape_and_array_interface_objects_are_refused_by_name(mixture2):
    """bytes, bytearray and array.array (the buffer protocol without a shape attribute) and objects with only
    __array_interface__ reached the package's own shape() and gave AttributeError ("'bytes' object has no attribute
    'shape'"), naming nothing; MixturePosterior.sample(out=memoryview) an AttributeError for its dtype. Seen failing
    before the fix: those AttributeErrors."""
    refused(lambda: mixture2.score(b"\0" * 32), r"^x: dtype uint8, expected float32")
    refused(lambda: mixture2.score(bytearray(32)), r"^x: dtype uint8, expected float32")
    refused(lambda: mixture2.score(array.array("f", [0.0] * 8)), r"^x: shape \(8,\), expected \(\*, 2\)")
    refused(lambda: ds.resample(array.array("f", [0.0] * 8)), r"^log_weights: shape \(8,\), expected a \(B, N\)")
    for call, name in ((lambda a: mixture2.score(a), "x"), (lambda a: ds.resample(a), "log_weights"),
                       (lambda a: mixture2.score(X, out=a), "out")):
        refused(lambda: call(ArrayInterfaceOnly(np.zeros((8, 2), np.float32))),
                rf"^{name}: a ArrayInterfaceOnly with __array_interface__ only; the library reads arrays through "
                rf"DLPack or the buffer protocol: pass numpy\.asarray\({name}\) \(the same memory, no copy\)")
    post = ds.MixturePosterior(mixture2, [[1.0, 0.0]], 0.5, [0.5])
    out = np.zeros((8, 2), np.float32)
    assert isinstance(post.sample(out=memoryview(out), dtype="float32", seed=2), memoryview)
    np.testing.assert_array_equal(out, post.sample(8, seed=2))
    refused(lambda: post.sample(out=memoryview(out), dtype="float64"),
            r"^dtype: 'float64', but out is float32 \(out= sets the dtype")


def test_resample_checks_the_sizes_before_it_allocates():
    """A (B, 0) log_weights holds nothing, but resample() allocated its B reports (B x PARTICLE_REPORT_BYTES bytes)
    before the library refused N = 0: 2^40 problems were an OutOfMemory for 40 TiB of reports, fewer took gigabytes
    first. Seen failing before the fix: OutOfMemory 'reports: the (1099511627776, 40) uint8 reports ...'."""
    refused(lambda: ds.resample(np.zeros((2**40, 0), np.float32)),
            r"^particles: must be >= 1 when problems > 0, got 0 \(log_weights has shape \(1099511627776, 0\)\)")
    assert ds.resample(np.zeros((0, 3), np.float32))[2].shape == (0,)


def test_read_only_buffers_as_written_arrays_are_refused_by_name(mixture2):
    """bytes (a read-only buffer) given as an array the call writes reached the binding's import of a writable array:
    nanobind's "incompatible function arguments" TypeError, naming nothing. Seen failing before the fix: that
    TypeError for labels=, langevin's x and a plan's x."""
    post = ds.MixturePosterior(mixture2, [[1.0, 0.0]], 0.5, [0.5])
    pattern = r"^{}: a read-only bytes, which the call would write into; pass a writable array"
    refused(lambda: mixture2.sample(out=np.zeros((8, 2), np.float32), labels=b"\0" * 32), pattern.format("labels"))
    refused(lambda: ds.langevin(mixture2, b"\0" * 64, steps=2, step_size=0.1), pattern.format("x"))
    refused(lambda: ds.DiffusionPlan(8, 2, steps=2).reset(b"\0" * 64), pattern.format("x"))
    refused(lambda: post.sample(out=b"\0" * 64), pattern.format("out"))
    # A writable buffer is written as any array.
    out = bytearray(64)
    mixture2.sample(out=memoryview(out).cast("f", (8, 2)), seed=4)
    np.testing.assert_array_equal(np.frombuffer(out, np.float32).reshape(8, 2), mixture2.sample(8, seed=4))


def test_dlpack_only_arrays_are_read_through_dlpack(mixture2):
    """An array with only the DLPack protocol reached the package's own shape() (memoryview of it): a TypeError
    ("memoryview: a bytes-like object is required, not 'DLPackOnly'") for score, denoiser, log_density (out= given
    too), denoiser_jvp, resample and gather_particles, and 'out has None rows' for n given with such an out. Its
    shape is now the one the binding imports. Seen failing before the fix: those TypeErrors."""
    for call in (mixture2.score, mixture2.denoiser, mixture2.log_density):
        expected = call(X, 1.0, 0.5)
        np.testing.assert_array_equal(call(DLPackOnly(X), 1.0, 0.5), expected)
        out = np.zeros_like(expected)
        assert call(DLPackOnly(X), 1.0, 0.5, out=out) is out
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(mixture2.denoiser_jvp(DLPackOnly(X), DLPackOnly(X), 1.0, 0.5),
                                  mixture2.denoiser_jvp(X, X, 1.0, 0.5))
    weights = np.log(np.linspace(0.1, 1.0, 8, dtype=np.float32)).reshape(2, 4)
    for got, expected in zip(ds.resample(DLPackOnly(weights), seed=3)[:2], ds.resample(weights, seed=3)[:2]):
        np.testing.assert_array_equal(got, expected)
    states = X.reshape(2, 4, 2).copy()
    ancestors = np.array([[3, 2, 1, 0], [0, 0, 1, 1]], np.int32)
    np.testing.assert_array_equal(ds.gather_particles(DLPackOnly(states), ancestors),
                                  ds.gather_particles(states, ancestors))
    # The binding's checks and the package's count check read that shape too.
    refused(lambda: mixture2.score(DLPackOnly(np.zeros((8, 3), np.float32))), r"^x: shape \(8, 3\), expected \(\*, 2\)")
    refused(lambda: mixture2.sample(9, out=DLPackOnly(np.zeros((8, 2), np.float32))), r"^n: 9, but out has 8 rows")


def test_inputs_are_checked_before_the_outputs_they_size_are_allocated(mixture2):
    """The package allocated an output sized by x (log_weights, states) before the binding checked x's layout: a
    broadcast view of 2^40 rows (8 bytes of memory) was an OutOfMemory for an 8 TiB output, naming the output,
    rather than 'x: not C-contiguous'. Seen failing before the fix: OutOfMemory 'out: the (1099511627776, 2) float32
    output ... could not be allocated' (ancestors for resample)."""
    huge = np.broadcast_to(np.float32(0), (2**40, 2))
    for call in (lambda: mixture2.score(huge), lambda: mixture2.log_density(huge),
                 lambda: mixture2.denoiser_jvp(huge, huge)):
        refused(call, r"^x: not C-contiguous \(strides 0, 0 elements for shape \(1099511627776, 2\)\); pass a "
                      r"contiguous array")
    refused(lambda: ds.resample(np.broadcast_to(np.float32(0), (2**20, 2**24))), r"^log_weights: not C-contiguous")
    refused(lambda: ds.gather_particles(np.broadcast_to(np.float32(0), (2**20, 2**20, 2)),
                                        np.broadcast_to(np.int32(0), (2**20, 2**20))),
            r"^states: not C-contiguous")


class DeviceRaises(DLPackOnly):
    """A DLPack array whose __dlpack_device__() raises."""

    shape, dtype = (8, 2), "float32"

    def __dlpack_device__(self):
        raise RuntimeError("no device")


class ExportRaises(DLPackOnly):
    """A DLPack array whose __dlpack__() raises."""

    shape, dtype = (8, 2), "float32"

    def __dlpack__(self, **kwargs):
        raise RuntimeError("no export")


def test_array_objects_whose_protocol_raises_are_refused_by_name(mixture2):
    """A __dlpack_device__() that raises reached the caller as its RuntimeError from the package's _is_cuda (the
    binding imports the array without it), and a __dlpack__() that raises was nanobind's 'evaluate(): incompatible
    function arguments', naming nothing. Seen failing before the fix: RuntimeError('no device') and that
    TypeError."""
    np.testing.assert_array_equal(mixture2.score(DeviceRaises(X), 1.0, 0.5), mixture2.score(X, 1.0, 0.5))
    pattern = r"^{}: ExportRaises\.__dlpack__\(\) raised RuntimeError: no export$"
    refused(lambda: mixture2.score(ExportRaises(X)), pattern.format("x"))
    refused(lambda: mixture2.score(ExportRaises(X), out=np.zeros((8, 2), np.float32)), pattern.format("x"))
    refused(lambda: mixture2.score(X, out=ExportRaises(np.zeros((8, 2), np.float32))), pattern.format("out"))
    refused(lambda: ds.GaussianMixture(ExportRaises(np.ones(1)), [[0.0, 0.0]], [1.0]), pattern.format("weights"))


def test_diffusion_names_its_state_out(mixture2):
    """diffsample.diffusion's state is its out= argument, which the binding named x (the C++ parameter): 'x: shape
    (8, 3), expected (*, 2)', 'outputs.trajectory: must not overlap x', 'x: pointer ... is not aligned'. Seen failing
    before the fix: each message named x."""
    refused(lambda: ds.diffusion(mixture2, out=np.zeros((8, 3), np.float32), steps=2),
            r"^out: shape \(8, 3\), expected \(\*, 2\)$")
    refused(lambda: ds.diffusion(mixture2, out=np.zeros((2, 8), np.float32).T, steps=2), r"^out: not C-contiguous")
    out = np.zeros((8, 2), np.float32)
    refused(lambda: ds.diffusion(mixture2, out=out, trajectory=out.reshape(1, 8, 2), steps=2, record_every=2),
            r"^trajectory: must not overlap out \(trajectory 0x[0-9a-f]+, 64 bytes; out 0x[0-9a-f]+, 64 bytes\)$")
    raw = np.zeros(8 * 2 * 4 + 4, np.uint8)
    off = np.frombuffer(raw.data, np.float32, count=16, offset=1).reshape(8, 2)
    refused(lambda: ds.diffusion(mixture2, out=off, steps=2), r"^out: pointer 0x[0-9a-f]+ is not aligned to 4 bytes$")
    assert not out.any() and not raw.any()
