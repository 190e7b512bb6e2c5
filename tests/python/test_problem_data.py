"""Problem data (a mixture's parameters, an observation operator's matrix, mask or SVD factors, the observations y and
noise levels sigma_y) is host data the C++ API keeps as float64 copies: it is read once and copied, from any CPU
array of a real dtype (NumPy, PyTorch, JAX; float32 and integers widened exactly, any strides) or nested sequences
of numbers, and the same values give the same problem whatever held them. CUDA arrays, complex, bool and non-numeric
data, another number of dimensions and non-finite values are refused with an InvalidArgument naming the argument.
The PyTorch and JAX cases skip without their framework; the CUDA tensor case skips without a GPU."""
import numpy as np
import pytest

import diffsample as ds
from conftest import requires_gpu, runs_beside, torch_or_none

torch = torch_or_none()
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
try:
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = jnp = None
needs_jax = pytest.mark.skipif(jax is None, reason="JAX is not installed")

# Values exact in float32, so every dtype below holds the same numbers.
A = np.array([[1.0, 0.5], [-0.25, 2.0]])
Y = np.array([0.375, -1.5])
SIGMA = 0.5


def prior():
    return ds.GaussianMixture([0.25, 0.75], [[-2.0, 0.0], [2.0, 1.0]], [0.25, 0.5])


def posterior_means(A_, sigma_, y_):
    p = ds.MixturePosterior(prior(), A_, sigma_, y_)
    return np.concatenate([p.means.ravel(), p.weights, [p.log_evidence]])


def guided(A_, y_, sigma_):
    return ds.guided_sample(prior(), A_, y_, sigma_, sampler="smc", particles=16, steps=4, seed=3,
                            outputs=("samples", "log_normaliser"))


def same_as_float64(call, *args):
    reference = call(A, SIGMA, Y) if call is posterior_means else call(A, Y, SIGMA)
    got = call(*args)
    if isinstance(reference, dict):
        for k in ("samples", "log_normaliser"):
            np.testing.assert_array_equal(np.asarray(got[k]), reference[k])
    else:
        np.testing.assert_array_equal(got, reference)


def test_float32_integer_and_strided_numpy_give_the_float64_problem():
    same_as_float64(posterior_means, A.astype(np.float32), np.float32(SIGMA), Y.astype(np.float32))
    same_as_float64(guided, A.astype(np.float32), Y.astype(np.float32), np.float32(SIGMA))
    # A transposed view (any strides: the values are copied) and nested lists.
    same_as_float64(posterior_means, np.ascontiguousarray(A.T).T, SIGMA, Y.tolist())
    same_as_float64(guided, A.tolist(), Y.tolist(), SIGMA)
    # Integers widen exactly.
    Ai = np.array([[1, 0], [0, 2]])
    np.testing.assert_array_equal(posterior_means(Ai.astype(np.int32), 1, [0, 1]),
                                  posterior_means(Ai.astype(np.float64), 1.0, [0.0, 1.0]))
    # The operators' own constructors read the same way.
    np.testing.assert_array_equal(ds.ObservationOperator.dense(A.astype(np.float32)).matrix(), A)
    np.testing.assert_array_equal(ds.ObservationOperator.dense(A.tolist()).matrix(), A)
    np.testing.assert_array_equal(ds.ObservationOperator.mask(3, np.array([2, 0], dtype=np.int32),
                                                              np.array([2.0, 0.5], dtype=np.float32)).matrix(),
                                  [[0, 0, 2.0], [0.5, 0, 0]])
    U = np.eye(2, dtype=np.float32)
    np.testing.assert_array_equal(ds.ObservationOperator.svd(U, np.array([2.0, 1.0], np.float32), U).matrix(),
                                  np.diag([2.0, 1.0]))


def test_problem_data_with_strides_of_no_whole_item_is_read():
    """Problem data is read whatever its strides, a field of a packed structured array too (byte strides that are
    not multiples of the item size, which neither DLPack nor the buffer protocol describes): it went through NumPy,
    which hands back the same view, and building the error message read a null string (a segmentation fault). It is
    read through a C-contiguous copy. A dtype the binding cannot import even so (big-endian, given to the core
    directly) is an InvalidArgument naming it, where it crashed the same way."""
    packed = np.zeros(A.shape, dtype=[("v", "<f4"), ("pad", "<i2")])
    packed["v"] = A
    same_as_float64(posterior_means, packed["v"], SIGMA, Y)
    m = ds.GaussianMixture([0.25, 0.75], packed["v"], [0.25, 0.5])
    np.testing.assert_array_equal(m.means, A)
    with pytest.raises(ds.InvalidArgument, match=r"^y: a ndarray that NumPy reads as dtype >f4, expected real numbers"):
        ds._core._read_host(np.zeros(2, ">f4"), "y", [1], "(d_y,)")


@needs_torch
def test_torch_tensors_give_the_float64_problem():
    same_as_float64(posterior_means, torch.tensor(A, dtype=torch.float32), torch.tensor(SIGMA),
                    torch.tensor(Y, dtype=torch.float32))
    same_as_float64(posterior_means, torch.tensor(A), SIGMA, torch.tensor(Y))
    same_as_float64(guided, torch.tensor(A, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32),
                    torch.tensor(SIGMA, dtype=torch.float32))
    # A tensor that requires grad is read (its values copied), a transposed view too.
    same_as_float64(posterior_means, torch.tensor(A.T.copy(), requires_grad=True).t(), SIGMA, torch.tensor(Y))
    m = ds.ObservationOperator.mask(3, torch.tensor([2, 0]), torch.tensor([2.0, 0.5]))
    np.testing.assert_array_equal(m.matrix(), [[0, 0, 2.0], [0.5, 0, 0]])
    g = ds.GaussianMixture(torch.tensor([0.25, 0.75]), torch.tensor([[-2.0, 0.0], [2.0, 1.0]]),
                           torch.tensor([0.25, 0.5], dtype=torch.float32))
    np.testing.assert_array_equal(g.means, prior().means)


@needs_jax
def test_jax_arrays_give_the_float64_problem():
    same_as_float64(posterior_means, jnp.asarray(A, dtype=jnp.float32), SIGMA, jnp.asarray(Y, dtype=jnp.float32))
    same_as_float64(guided, jnp.asarray(A, dtype=jnp.float32), jnp.asarray(Y, dtype=jnp.float32), SIGMA)


def refused(call, pattern):
    with pytest.raises(ds.InvalidArgument, match=pattern):
        call()


@pytest.mark.parametrize("what, call, pattern", [
    ("complex A", lambda: ds.MixturePosterior(prior(), A + 1j, SIGMA, Y), r"^A: dtype complex128, expected real"),
    ("bool A", lambda: guided(A > 0, Y, SIGMA), r"^A: dtype bool8?, expected real"),
    ("string y", lambda: ds.MixturePosterior(prior(), A, SIGMA, ["0.375", "1"]), r"^y: .*dtype <U5"),
    ("string sigma_y", lambda: ds.MixturePosterior(prior(), A, "0.5", Y), r"^sigma_y: a str, expected real numbers"),
    ("object y", lambda: guided(A, np.array([0.5, None]), SIGMA), r"^y: dtype object"),
    ("1-D A", lambda: ds.MixturePosterior(prior(), [1.0, 0.5], SIGMA, [0.375]),
     r"^A: shape \(2,\), expected \(d_y, d_x\) \(one observation: a \(1, d_x\) matrix\)"),
    ("1-D A, guided", lambda: guided(np.array([1.0, 0.5]), [0.375], SIGMA), r"^A: shape \(2,\), expected \(d_y"),
    ("3-D A", lambda: guided(np.ones((1, 2, 2)), Y, SIGMA), r"^A: shape \(1, 2, 2\), expected \(d_y, d_x\)"),
    ("nested 3-D A", lambda: guided([[[1.0, 0.0]], [[0.0, 1.0]]], [[0.5], [1.0]], SIGMA),
     r"^A: shape \(2, 1, 2\), expected .*a list of B arrays or ObservationOperators"),
    ("wrong per-problem A", lambda: guided([A, A[0]], np.stack([Y, Y]), SIGMA), r"^A\[1\]: shape \(2,\), expected"),
    ("2-D y", lambda: ds.MixturePosterior(prior(), A, SIGMA, Y[None, :]), r"^y: shape \(1, 2\), expected \(d_y,\)"),
    ("3-D y", lambda: guided(A, Y[None, None, :], SIGMA), r"^y: shape \(1, 1, 2\), expected \(d_y,\) or \(B, d_y\)"),
    ("(1,) sigma_y", lambda: ds.MixturePosterior(prior(), A, [SIGMA], Y), r"^sigma_y: shape \(1,\), expected a scalar"),
    ("2-D sigma_y", lambda: guided(A, Y, [[SIGMA]]), r"^sigma_y: shape \(1, 1\), expected a scalar or \(B,\)"),
    ("float indices", lambda: ds.ObservationOperator.mask(3, np.array([2.0, 0.0]), [1.0, 1.0]),
     r"^indices: dtype float64, expected an integer dtype"),
    ("2-D singular values", lambda: ds.ObservationOperator.svd(np.eye(2), [[2.0, 1.0]], np.eye(2)),
     r"^singular_values: shape \(1, 2\), expected \(r,\)"),
    ("1-D U", lambda: ds.ObservationOperator.svd(np.ones(2), [1.0], np.eye(2)[:, :1]), r"^U: shape \(2,\)"),
    ("complex means", lambda: ds.GaussianMixture([1.0], np.zeros((1, 2), complex), [1.0]), r"^means: dtype complex"),
    ("2-D weights", lambda: ds.GaussianMixture([[1.0]], np.zeros((1, 2)), [1.0]), r"^weights: shape \(1, 1\)"),
    # A 2-D array of the right count in another shape would be read in the wrong order.
    ("transposed variances", lambda: ds.GaussianMixture([0.5, 0.5], np.zeros((2, 3)), np.ones((3, 2))),
     r"^variances: shape \(3, 2\), expected \(K,\) or \(K, d\) = \(2, 3\)"),
    ("(1, K) variances", lambda: ds.GaussianMixture([0.5, 0.5], np.zeros((2, 3)), np.ones((1, 2))),
     r"^variances: shape \(1, 2\), expected"),
    ("means not (K, dim)", lambda: ds._core.GaussianMixtureCore(2, [0.5, 0.25, 0.25], np.zeros((2, 3)), [1.0] * 3),
     r"^means: shape \(2, 3\), expected \(K, d\) = \(3, 2\) or K \* d values"),
    ("transposed U", lambda: ds.ObservationOperator.svd(np.eye(4)[:, :2].T, [2.0, 1.0], np.eye(3)[:, :2]),
     r"^U: shape \(2, 4\), expected \(d_y, r\) with r = 2"),
    ("V not (d_x, r)", lambda: ds.ObservationOperator.svd(np.eye(2), [2.0, 1.0], np.eye(4)[:, :2].reshape(2, 4)),
     r"^V: shape \(2, 4\), expected \(d_x, r\) with r = 2"),
    ("None sigma_y", lambda: ds.MixturePosterior(prior(), A, None, Y), r"^sigma_y: None, expected a scalar"),
    ("None y", lambda: guided(A, None, SIGMA), r"^y: None, expected \(d_y,\) or \(B, d_y\)"),
    ("None A", lambda: guided(None, Y, SIGMA), r"^A: None, expected \(d_y, d_x\)"),
    ("None means", lambda: ds.GaussianMixture([1.0], None, [1.0]), r"^means: None, expected \(K, d\)"),
])
def test_wrong_problem_data_is_refused_by_name(what, call, pattern):
    refused(call, pattern)


def test_non_finite_problem_data_is_refused():
    refused(lambda: ds.MixturePosterior(prior(), np.where(A == 2.0, np.nan, A).astype(np.float32), SIGMA, Y),
            r"A\[3\]: must be finite, got nan")
    refused(lambda: guided(A, np.array([np.inf, 0.0], dtype=np.float32), SIGMA), r"y\[0\]: must be finite")
    refused(lambda: guided(A, Y, np.float32(np.nan)), r"sigma_y.*nan")


class CudaArray:
    """Stands for a CUDA array of a framework this suite does not install (CuPy): it says it is on CUDA device 0."""

    shape = (2, 2)

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):
        raise AssertionError("a CUDA array must be refused before it is read")


def test_cuda_problem_data_is_refused_by_name():
    refused(lambda: ds.MixturePosterior(prior(), CudaArray(), SIGMA, Y),
            r"^A: a CudaArray on CUDA; problem data is read on the host and copied into the problem as float64: "
            r"pass a CPU array \(copy it to the host explicitly\)")
    refused(lambda: guided(A, CudaArray(), SIGMA), r"^y: a CudaArray on CUDA")
    refused(lambda: guided([A, CudaArray()], np.stack([Y, Y]), SIGMA), r"^A\[1\]: a CudaArray on CUDA")
    refused(lambda: ds.GaussianMixture([1.0], CudaArray(), [1.0]), r"^means: a CudaArray on CUDA")


@needs_torch
def test_meta_tensor_is_refused_by_name():
    refused(lambda: ds.MixturePosterior(prior(), A, SIGMA, torch.empty(2, device="meta")), r"^y: a tensor on meta")


@requires_gpu
def test_torch_cuda_problem_data_is_refused_by_name():
    t = torch.tensor(A, device="cuda")
    refused(lambda: ds.MixturePosterior(prior(), t, SIGMA, Y), r"^A: a Tensor on CUDA.*pass a CPU array \(A\.cpu\(\)\)")
    # The binding itself (diffsample._core) refuses them too.
    refused(lambda: ds._core.ObservationOperator.dense(t), r"^A: on cuda:0; problem data is read on the host")
    same_as_float64(posterior_means, t.cpu(), SIGMA, Y)


def test_guided_problems_fields_read_problem_data():
    pr = ds.GuidedProblems()
    pr.y = np.array([[0.375, -1.5]], dtype=np.float32)
    pr.sigma_y = 0.5
    assert pr.y == [0.375, -1.5] and pr.sigma_y == [0.5]
    with pytest.raises(ds.InvalidArgument, match=r"^y: dtype complex128"):
        pr.y = np.array([1j])
    with pytest.raises(ds.InvalidArgument, match=r"^A: a str"):
        pr.A = "1 0"


def test_grid_weights_read_problem_data():
    w = np.array([1, 2, 3, 4], dtype=np.int32)
    np.testing.assert_array_equal(ds.GaussianMixture.grid(2, 2, 1.0, 0.1, w).weights,
                                  ds.GaussianMixture.grid(2, 2, 1.0, 0.1, [0.1, 0.2, 0.3, 0.4]).weights)
    refused(lambda: ds.GaussianMixture.grid(2, 2, 1.0, 0.1, CudaArray()), r"^weights: a CudaArray on CUDA")
    refused(lambda: ds.GaussianMixture.grid(2, 2, 1.0, 0.1, [[1.0, 1.0, 1.0, 1.0]]), r"^weights: shape \(1, 4\)")


def test_integers_without_an_exact_float64_are_refused():
    """int64 and uint64 values beyond 2^53 in magnitude have no exact float64 and were rounded without a word
    (2^53 + 1 read as 2^53), though integers are documented to widen exactly. Refused naming the flat index; 2^53
    itself and mask indices (their range is the library's check) still pass. Seen failing before the fix: the
    rounded values accepted."""
    refused(lambda: ds.GaussianMixture([1.0], np.array([[2**53 + 1]], np.int64), [1.0]),
            r"^means\[0\]: 9007199254740993 is not exact in float64 \(the problem keeps float64 values, exact for "
            r"integers up to 2\^53 in magnitude\); pass float64 values")
    refused(lambda: ds.ObservationOperator.dense(np.array([[1, 2**64 - 1]], np.uint64)),
            r"^A\[1\]: 18446744073709551615 is not exact in float64")
    refused(lambda: ds.MixturePosterior(prior(), A, SIGMA, [0, -(2**60) - 1]), r"^y\[1\]: -1152921504606846977 is not")
    assert ds.GaussianMixture([1.0], np.array([[-(2**53)]], np.int64), [1.0]).means[0, 0] == -(2.0**53)
    np.testing.assert_array_equal(ds.ObservationOperator.mask(3, np.array([2, 0], np.int64)).matrix(),
                                  [[0, 0, 1.0], [1.0, 0, 0]])
    with pytest.raises(ds.InvalidArgument) as caught:
        ds.ObservationOperator.mask(3, np.array([2**60 + 1], np.int64))
    assert "not exact" not in str(caught.value)


def test_problem_data_sizes_are_checked_before_the_copy():
    """A view of few values can say many: numpy.broadcast_to of one value to (2^22, 2^22) holds 8 bytes and says 2^44
    values, whose float64 copy (128 TiB) was std::bad_alloc as a bare MemoryError naming nothing (smaller ones took
    gigabytes before the library's limits refused them). The copy's size is checked first against
    limits.max_host_bytes, an OutOfMemory naming the argument. Seen failing before the fix: MemoryError
    'std::bad_alloc'."""
    huge = np.broadcast_to(np.float64(1.0), (2**22, 2**22))
    for call, name in ((lambda: ds.GaussianMixture([1.0], huge, [1.0]), "means"),
                       (lambda: ds.ObservationOperator.dense(huge), "A"),
                       (lambda: ds.GaussianMixture.empirical(huge, 1.0), "points"),
                       (lambda: prior().evaluate_fp64("score", huge), "x")):
        with pytest.raises(ds.OutOfMemory, match=rf"^{name}: its \(4194304, 4194304\) values need 17592186044416 x 8 "
                                                 r"bytes of host memory for their float64 copy, the limit is "
                                                 r"70368744177664 \(2\^46\) \(diffsample.limits.max_host_bytes\)$"):
            call()


def test_the_svd_operator_releases_the_gil():
    """ObservationOperator.svd checks its factors' orthonormality, O((d_y + d_x) r^2) (seconds for factors of a few
    thousand), and held the GIL meanwhile: no other Python thread ran. It releases it once the data is read (dense
    and mask too). Seen failing before the fix: this thread never ran inside the constructor."""
    d = 256
    U = np.eye(d)
    assert runs_beside(lambda: ds.ObservationOperator.svd(U, np.ones(d), U))


def test_float16_problem_data_widens_exactly():
    """float16 values are float64 values, as float32's are, but problem data of that dtype was refused ('dtype
    float16, expected real numbers'). Read and widened exactly: the problem is the float64 one, and every finite
    float16 value (subnormals, -0.0 and the extremes included) reaches the problem unchanged. Seen failing before the
    fix: InvalidArgument."""
    same_as_float64(posterior_means, A.astype(np.float16), np.float16(SIGMA), Y.astype(np.float16))
    same_as_float64(guided, A.astype(np.float16), Y.astype(np.float16), np.float16(SIGMA))
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    every = every[np.isfinite(every)][None, :]
    got = ds.ObservationOperator.dense(every).matrix()
    np.testing.assert_array_equal(got, every.astype(np.float64))
    assert np.array_equal(np.signbit(got), np.signbit(every))


@needs_torch
def test_bfloat16_problem_data_widens_exactly():
    """The same for bfloat16 (PyTorch's): its values are float32's high halves. Seen failing before the fix:
    InvalidArgument 'dtype bfloat16, expected real numbers'."""
    b = torch.bfloat16
    same_as_float64(posterior_means, torch.tensor(A, dtype=b), torch.tensor(SIGMA, dtype=b), torch.tensor(Y, dtype=b))
    g = ds.GaussianMixture(torch.tensor([0.25, 0.75], dtype=b), torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=b),
                           torch.tensor([0.25, 0.5], dtype=b))
    np.testing.assert_array_equal(g.means, prior().means)
    np.testing.assert_array_equal(g.variances, prior().variances)
    every = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(b)
    every = every[torch.isfinite(every)][None, :]
    got = ds.ObservationOperator.dense(every).matrix()
    np.testing.assert_array_equal(got, every.double().numpy())
    assert np.array_equal(np.signbit(got), every.double().signbit().numpy())


def test_16_bit_floats_are_refused_for_arrays_written_in_place():
    """Arrays the library writes take its float32 results as they are: a float16 or bfloat16 output is refused, by
    the binding too (diffsample._core, which the package's checks do not guard), saying why and what to pass. Seen
    failing before: the binding's message said only 'expected float32'."""
    x = np.zeros((4, 2), np.float32)
    outs = [("float16", np.zeros((4, 2), np.float16))]
    if torch is not None:
        outs.append(("bfloat16", torch.zeros((4, 2), dtype=torch.bfloat16)))
    for name, out in outs:
        refused(lambda: prior()._m.evaluate(ds._core.Quantity.score, x, 1.0, 0.0, out),
                rf"^out: dtype {name}, expected float32; the call writes float32 results into out in place: pass a "
                r"float32 array \(a converted copy of out would not receive the results\)$")
        refused(lambda: prior().score(x, out=out), rf"^out: dtype {name}, expected float32; pass a float32 array")
    refused(lambda: ds._core.langevin(prior()._m, np.zeros((4, 2), np.float16), ds.LangevinOptions()),
            r"^x: dtype float16, expected float32; the call writes float32 results into x in place")
