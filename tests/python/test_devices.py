"""Where a call runs, and the stream= argument.

A call on CUDA arrays runs on their device: the binding makes it current for the call and restores the caller's
after, refuses a device the CUDA runtime does not see, a mixture or posterior whose tables are on another device,
and a stream of another device. The device checks run here on arrays that say through DLPack that they live on a
CUDA device (dlpack_fake.FakeCudaArray), so they run on machines without that device (or any GPU); the device
switch itself needs two GPUs (test_arrays_on_a_second_gpu_run_there).

stream= is checked before anything runs: a value of the wrong type, a negative or too large handle, an object whose
handle is none of those, and a stream given for a call that runs on the CPU executor are InvalidArgument naming
stream (they were a TypeError or ValueError naming nothing, or were ignored)."""
import sys
import threading
import types

import numpy as np
import pytest

import diffsample as ds
from conftest import torch_or_none
from dlpack_fake import FakeCudaArray

torch = torch_or_none()

# A device no machine has: the runtime's count is below it everywhere, GPU machines included.
FAR = 64
UNSEEN = rf"on cuda:{FAR}, but the CUDA runtime sees (no device \(.*\)|\d+ devices? \(cuda:0.*\))"


@pytest.fixture(scope="module")
def m():
    return ds.GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0])


def x4():
    return np.zeros((4, 2), np.float32)


def far(*shape, dtype="float32"):
    return FakeCudaArray(shape, FAR, dtype)


# ---- the device of a call ----------------------------------------------------------------------------------------

DEVICE_CASES = [
    ("score", lambda m: m.score(far(4, 2), out=far(4, 2)), "x"),
    ("log_density", lambda m: m.log_density(far(4, 2), out=far(4)), "x"),
    ("denoiser_jvp", lambda m: m.denoiser_jvp(far(4, 2), far(4, 2), out=far(4, 2)), "x"),
    ("sample", lambda m: m.sample(out=far(4, 2)), "out"),
    ("langevin", lambda m: ds.langevin(m, far(4, 2), steps=2, step_size=0.1), "x"),
    ("diffusion", lambda m: ds.diffusion(m, out=far(4, 2), steps=2), "out"),  # (the binding named it x, C++'s name)
    ("resample", lambda m: ds.resample(far(2, 4), ancestors=far(2, 4, dtype="int32"),
                                       normalised_weights=far(2, 4), reports=False), "log_weights"),
    ("gather", lambda m: ds.gather_particles(far(1, 4, 2), far(1, 4, dtype="int32"), out=far(1, 4, 2)), "states"),
    ("sliced_wasserstein", lambda m: ds.sliced_wasserstein(far(4, 2), far(4, 2)), "a"),
    ("posterior", lambda m: ds.MixturePosterior(m, [[1.0, 0.0]], 0.5, [0.5]).sample(out=far(4, 2)), "out"),
    # device= says where the call runs, with or without outputs: with none it ran on the CPU without a word.
    ("guided-no-outputs", lambda m: ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, outputs=(), device=far(0),
                                                     particles=4, steps=2), "device"),
]


@pytest.mark.parametrize("call,first", [c[1:] for c in DEVICE_CASES], ids=[c[0] for c in DEVICE_CASES])
def test_a_cuda_device_the_runtime_does_not_see_is_refused_by_name(m, call, first):
    """Arrays on a CUDA device other than the current one ran with the current device's kernels and streams; the
    call now runs on the arrays' device, and one the runtime does not see is refused naming the argument and the
    device. Seen failing before: 'executor: cuda was requested but no GPU is usable' (no device named), and on GPU
    machines a launch on the current device over another device's memory."""
    with pytest.raises(ds.InvalidArgument, match=rf"^{first}: {UNSEEN}"):
        call(m)


def test_arrays_of_one_call_on_two_devices_are_refused(m):
    with pytest.raises(ds.InvalidArgument, match=r"^out: on cuda:2 but x is on cuda:1 \(every array of a call"):
        m.score(FakeCudaArray((4, 2), 1), out=FakeCudaArray((4, 2), 2))


GUIDED = dict(particles=4, steps=2)


def test_guided_sample_runs_on_its_device_without_outputs(m, monkeypatch):
    """guided_sample(device=a CUDA array, outputs=()) ran on the CPU executor (report 'cpu') without a word: the
    binding chose the executor from the outputs alone, and there were none. The device now goes to the binding,
    which places the call there whatever the outputs: here a device the runtime does not see, so the call is refused
    naming device (on a GPU machine too: no machine has cuda:64). Checked with a DLPack array and with CuPy's
    stand-in (whose current stream the package takes first). Seen failing before the fix: a dict with
    report['executor'] == 'cpu'."""
    with pytest.raises(ds.InvalidArgument, match=rf"^device: {UNSEEN}"):
        ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, outputs=(), device=far(0), **GUIDED)
    array_on = _fake_cupy(monkeypatch)
    with pytest.raises(ds.InvalidArgument, match=rf"^device: {UNSEEN}"):
        ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, outputs=(), device=array_on(FAR), **GUIDED)
    # A CPU device, or none: the CPU executor, with or without outputs.
    for device in (None, np.zeros(0, np.float32)):
        for outputs in ((), ("samples",)):
            r = ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, outputs=outputs, device=device, **GUIDED)
            assert r["report"]["executor"] == "cpu"


def test_guided_sample_outputs_on_another_device_than_device_are_refused(m):
    """The binding's outputs and its device are one call's arrays: on two devices they are refused naming both."""
    pr, o = ds._guided_setup([[1.0, 0.0]], [0.5], 0.5, "smc", None, None, dict(GUIDED))
    with pytest.raises(ds.InvalidArgument, match=r"^samples: on cuda:1 but device is on cpu:0 \(every array"):
        ds._core.guided_sample(m._m, pr, o, samples=FakeCudaArray((1, 4, 2), 1), device=np.zeros(0))
    with pytest.raises(ds.InvalidArgument, match=r"^samples: on cpu:0 but device is on cuda:1 \(every array"):
        ds._core.guided_sample(m._m, pr, o, samples=np.zeros((1, 4, 2), np.float32), device=FakeCudaArray((0,), 1))


def test_a_stream_for_a_call_without_arrays_is_refused(m):
    """guided_sample(outputs=(), stream=7) without device ran on the CPU and dropped the stream without a word (a
    stream for CPU arrays is refused): a call without any array runs on the CPU executor and refuses a stream too."""
    with pytest.raises(ds.InvalidArgument, match=r"^stream: 7, but the call runs on the CPU executor \(the call has "
                                                 r"no array: no output, no device\); a stream orders CUDA work only"):
        ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, outputs=(), stream=7, **GUIDED)
    with pytest.raises(ds.InvalidArgument, match=r"^stream: 7, but the call runs on the CPU executor \(device is on "
                                                 r"cpu:0\)"):
        ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, outputs=(), stream=7, device=np.zeros(0), **GUIDED)


def test_cupy_arrays_take_the_current_stream_of_their_own_device(monkeypatch):
    """CuPy's current stream is per device: an array on cuda:1 while cuda:0 was current took cuda:0's stream (a
    launch on cuda:1 cannot go into it). Checked with a stand-in for CuPy that gives each device its own stream."""
    array = _fake_cupy(monkeypatch)(3)
    assert ds._stream(array, None) == 1003
    assert ds._stream(array, 77) == 77


def _fake_cupy(monkeypatch):
    """A stand-in for CuPy with a current stream per device (ptr 1000 + device) and from_dlpack, and its array type
    (module cupy) for arrays on a given device."""
    entered = []

    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            entered.append(self.index)

        def __exit__(self, *exc):
            entered.pop()

    ndarray = type("ndarray", (FakeCudaArray,), {"__module__": "cupy"})

    def array_on(device):
        a = ndarray((4, 2), device)
        a.device = types.SimpleNamespace(id=device)
        return a

    def from_dlpack(view):
        return array_on(int(view.__dlpack_device__()[1]))

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(
        Device=Device, get_current_stream=lambda: types.SimpleNamespace(ptr=1000 + (entered[-1] if entered else 0)))
    cupy.from_dlpack = from_dlpack
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    return array_on


def test_a_cuda_plan_takes_the_current_stream_of_its_own_device(monkeypatch):
    """A SamplingPlan's calls without stream= took the current stream of like's device, and like (the array whose
    framework the views follow) may be on another device than the plan: a stream its launches cannot go into. They
    take the current stream of like's framework on the plan's device. Checked with a stand-in plan on cuda:2 and
    CuPy's stand-in, like on cuda:0. Seen failing before: tell() on stream 1000 (cuda:0's)."""
    array_on = _fake_cupy(monkeypatch)
    told = []
    core = types.SimpleNamespace(executor=ds._core.Executor.cuda, samples=lambda: FakeCudaArray((4, 2), 2),
                                 tell=told.append, reset=lambda initial, h: told.append(("reset", h)))
    plan = object.__new__(ds.SamplingPlan)
    plan._call = ds._plan_call(core)  # (what __init__ sets: one call at a time)
    plan._plan, plan._like = core, array_on(0)
    if hasattr(ds.SamplingPlan, "_on_device"):
        plan._on_device = None
    plan.tell()
    plan.tell(stream=5)
    plan.reset()
    plan.reset(array_on(2))
    assert told == [1002, 5, ("reset", 1002), ("reset", 1002)]


def test_an_answer_on_another_cuda_device_than_the_plan_is_refused():
    """SamplingPlan.tell(answer) and run()'s model output compared only CUDA against CPU: an answer on cuda:1 for a
    plan on cuda:0 was copied across the devices by the framework without a word. Seen failing before: the stand-in
    arrays' TypeError from the copy."""
    with pytest.raises(ds.InvalidArgument, match=r"^answer: on cuda:1, but the plan's buffers are on cuda:0$"):
        ds._answer(FakeCudaArray((4, 2), 0), FakeCudaArray((4, 2), 1), "answer")


@pytest.mark.skipif(torch is None or not torch.cuda.is_available() or torch.cuda.device_count() < 2
                    or not ds.cuda_available(), reason="needs PyTorch and two CUDA devices")
def test_arrays_on_a_second_gpu_run_there():
    """A mixture made on cuda:1 evaluated at cuda:1 tensors while cuda:0 is current: the call runs on cuda:1 (the
    result equals the CPU executor's) and cuda:0 stays current. The same mixture at cuda:0 tensors is refused (its
    tables are on cuda:1), as is a stream of cuda:0 for cuda:1 tensors."""
    torch.cuda.set_device(0)
    with torch.cuda.device(1):
        m1 = ds.GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0])
    x = np.random.default_rng(1).normal(size=(64, 2)).astype(np.float32)
    got = m1.score(torch.tensor(x, device="cuda:1"), 1.0, 0.5, path="direct")
    torch.cuda.synchronize(1)
    assert torch.cuda.current_device() == 0
    np.testing.assert_allclose(got.cpu().numpy(), m1.score(x, 1.0, 0.5, path="direct"), rtol=1e-5, atol=1e-6)
    with pytest.raises(ds.InvalidArgument, match=r"^mixture: its tables are on cuda:1, but x is on cuda:0"):
        m1.score(torch.tensor(x, device="cuda:0"), 1.0, 0.5)
    with pytest.raises(ds.InvalidArgument, match=r"^stream: a stream of cuda:0, but x is on cuda:1"):
        m1.score(torch.tensor(x, device="cuda:1"), 1.0, 0.5, stream=torch.cuda.current_stream(0))
    assert torch.cuda.current_device() == 0


# ---- stream= -----------------------------------------------------------------------------------------------------


class Attr:
    """A stream object exposing its handle as an attribute (torch: cuda_stream, CuPy: ptr)."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


class Protocol:
    """A stream object of the CUDA stream protocol, __cuda_stream__() -> (version, handle)."""

    def __init__(self, answer):
        self.answer = answer

    def __cuda_stream__(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


STREAM_CASES = [
    ("cuda_stream-negative", Attr(cuda_stream=-1), r"^stream: a Attr whose cuda_stream is a int \(-1\), expected a CUDA "
                                                   r"stream handle, an integer in \[0, 18446744073709551615\]"),
    ("cuda_stream-None", Attr(cuda_stream=None), r"^stream: a Attr whose cuda_stream is None, expected"),
    ("cuda_stream-float", Attr(cuda_stream=1.5), r"^stream: a Attr whose cuda_stream is a float \(1.5\), expected"),
    ("cuda_stream-str", Attr(cuda_stream="7"), r"^stream: a Attr whose cuda_stream is a str \('7'\), expected"),
    ("cuda_stream-2^64", Attr(cuda_stream=2**64), r"^stream: a Attr whose cuda_stream is a int \(18446744073709551616"),
    ("ptr-negative", Attr(ptr=-5), r"^stream: a Attr whose ptr is a int \(-5\), expected"),
    ("protocol-int", Protocol(5), r"^stream: Protocol.__cuda_stream__\(\) returned a int \(5\), expected the pair "
                                  r"\(version, handle\)"),
    ("protocol-short", Protocol((0,)), r"^stream: Protocol.__cuda_stream__\(\) returned a tuple"),
    ("protocol-negative", Protocol((0, -1)), r"^stream: a Protocol whose __cuda_stream__\(\) handle is a int \(-1\)"),
    ("protocol-raises", Protocol(RuntimeError("closed")),
     r"^stream: Protocol.__cuda_stream__\(\) raised RuntimeError: closed"),
    ("object", object(), r"^stream: a object \(<object object at \w+>\) is not a CUDA stream; pass None"),
    ("float", 1.5, r"^stream: a float \(1.5\) is not a CUDA stream"),
    ("str", "0", r"^stream: a str \('0'\) is not a CUDA stream"),
    ("bool", True, r"^stream: expected an integer in \[0, 18446744073709551615\], got True"),
    ("negative", -1, r"^stream: -1 is outside \[0, 18446744073709551615\] \(a CUDA stream handle\)"),
]


@pytest.mark.parametrize("stream,pattern", [c[1:] for c in STREAM_CASES], ids=[c[0] for c in STREAM_CASES])
def test_stream_values_are_checked_by_name(m, stream, pattern):
    """Seen failing before: nanobind's 'evaluate(): incompatible function arguments' (negative handles), int()'s
    TypeError or ValueError (None, '7'), IndexError and TypeError of the protocol's answer, and a float handle cut to
    an int without a word."""
    out = np.zeros((4, 2), np.float32)
    with pytest.raises(ds.InvalidArgument, match=pattern):
        m.score(x4(), out=out, stream=stream)
    assert not out.any()
    with pytest.raises(ds.InvalidArgument, match=pattern):
        ds.DiffusionPlan(4, 2, steps=2, stream=stream)


CPU_STREAM = r"^stream: 7, but the call runs on the CPU executor \({} is on cpu:0\); a stream orders CUDA work only"


def test_a_stream_for_a_call_on_the_cpu_is_refused(m):
    """A stream given for CPU arrays was ignored without a word: the caller meant a CUDA run (a CUDA stream with
    arrays left on the host). None and 0 (no stream) still pass."""
    out = np.zeros((4, 2), np.float32)
    for stream in (7, Attr(cuda_stream=7), Attr(ptr=7), Protocol((0, 7))):
        with pytest.raises(ds.InvalidArgument, match=CPU_STREAM.format("x")):
            m.score(x4(), out=out, stream=stream)
    assert not out.any()
    with pytest.raises(ds.InvalidArgument, match=CPU_STREAM.format("out")):
        m.sample(4, stream=7)
    with pytest.raises(ds.InvalidArgument, match=CPU_STREAM.format("log_weights")):
        ds.resample(np.zeros((2, 4), np.float32), stream=7)
    with pytest.raises(ds.InvalidArgument, match=CPU_STREAM.format("x")):
        ds.langevin(m, x4(), steps=2, step_size=0.1, stream=7)
    made = r"^stream: 7, but the call runs on the CPU executor \(the plan is made on cpu:0\)"
    with pytest.raises(ds.InvalidArgument, match=made):
        ds.DiffusionPlan(4, 2, steps=2, device="cpu", stream=7)
    with pytest.raises(ds.InvalidArgument, match=made):
        ds.SamplingPlan.langevin(4, 2, steps=2, step_size=0.1, device="cpu", stream=7)
    plan = ds.DiffusionPlan(4, 2, steps=2, device="cpu")
    x = x4()
    with pytest.raises(ds.InvalidArgument, match=CPU_STREAM.format("the plan")):
        plan.reset(x, stream=7)
    sp = ds.SamplingPlan.diffusion(4, 2, steps=2)
    with pytest.raises(ds.InvalidArgument, match=CPU_STREAM.format("the plan")):
        sp.reset(stream=7)
    sp.reset()
    with pytest.raises(ds.InvalidArgument, match=CPU_STREAM.format("the plan")):
        sp.tell(stream=7)
    assert sp.position == 0  # nothing ran
    # No stream: None, 0, NumPy's 0, a default stream's handle 0.
    ref = m.score(x4(), 1.0, 0.5)
    for stream in (None, 0, np.uint64(0), Attr(cuda_stream=0)):
        np.testing.assert_array_equal(m.score(x4(), 1.0, 0.5, stream=stream), ref)
    plan.reset(x, stream=0)
    sp.tell(stream=0)
    assert sp.position == 1


@pytest.mark.skipif(not ds._core.HAS_SAMPLING_PLANS, reason="a library without sampling plans")
def test_guided_plan_outputs_on_another_device_are_refused():
    """write_outputs() (SamplingPlan.outputs() allocates on the plan's device; the core call takes the caller's
    arrays) compared no device: a CPU plan wrote its outputs from the host through the pointer of a CUDA array. It
    refuses them as the plan's other calls do. The array here points nowhere: before the check the host write
    faulted (the process died), so this was read, not run, against the previous binding."""
    plan = ds.SamplingPlan.guided(2, [[1.0, 0.0]], [0.5], 0.5, steps=2, particles=4)
    plan.run(lambda points, a, s: np.zeros((4, 2), np.float32))
    with pytest.raises(ds.InvalidArgument, match=r"^samples: on cuda:1, but the plan is on cpu:0 \(its memory and "
                                                 r"kernels are there"):
        plan._plan.write_outputs(1, 4, 2, None, None, FakeCudaArray((1, 4, 2), 1))
    assert plan.outputs(("samples",))["samples"].shape == (1, 4, 2)


def test_a_cuda_plan_refuses_a_like_of_another_framework(monkeypatch):
    """A CUDA plan shows its memory as arrays of like's framework, PyTorch or CuPy: a NumPy or JAX like gave PyTorch
    tensors whatever like was (or PyTorch's ImportError), and without like a missing CuPy was a bare ImportError.
    Checked with a stand-in core plan on cuda:0. Seen failing before the fix: ModuleNotFoundError 'No module named
    ...' naming nothing."""
    core = types.SimpleNamespace(executor=ds._core.Executor.cuda, samples=lambda: FakeCudaArray((4, 2), 0))
    plan = object.__new__(ds.SamplingPlan)
    plan._call = ds._plan_call(core)  # (what __init__ sets: one call at a time)
    plan._plan, plan._like = core, np.zeros(1, np.float32)
    with pytest.raises(ds.InvalidArgument, match=r"^like: a ndarray \(.*\); a CUDA plan's memory is shown as arrays "
                                                 r"of like's framework, PyTorch or CuPy"):
        plan.samples()
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setitem(sys.modules, "cupy", None)  # an import of cupy fails
    plan._like = None
    with pytest.raises(ds.InvalidArgument, match=r"^like: None, and CuPy cannot be imported"):
        plan.samples()
    array_on = _fake_cupy(monkeypatch)
    plan._like = array_on(0)
    assert plan.samples().device.id == 0


# ---- a plan's like= ------------------------------------------------------------------------------------------------

PLAN_MAKERS = [
    ("diffusion", lambda **kw: ds.SamplingPlan.diffusion(4, 2, steps=2, **kw)),
    ("langevin", lambda **kw: ds.SamplingPlan.langevin(4, 2, steps=2, step_size=0.1, **kw)),
    ("guided", lambda **kw: ds.SamplingPlan.guided(2, [[1.0, 0.0]], [0.5], 0.5, steps=2, particles=4, **kw)),
]
plan_makers = pytest.mark.parametrize("make", [c[1] for c in PLAN_MAKERS], ids=[c[0] for c in PLAN_MAKERS])
needs_plans = pytest.mark.skipif(not ds._core.HAS_SAMPLING_PLANS, reason="a library without sampling plans")


@needs_plans
@plan_makers
def test_a_plan_is_made_on_its_likes_device(make, monkeypatch):
    """SamplingPlan.diffusion/langevin/guided(like=a CUDA array) without device= made a CPU plan (device defaulted
    to 'cpu'), whose views are NumPy arrays whatever like is: a CUDA like ran everything on the CPU without a word.
    like now places the plan as any array places a call (device=None follows it), on like's device: here one the
    runtime does not see, refused naming like. 'auto' follows like too. Seen failing before the fix: a plan with
    executor cpu."""
    for like in (far(0), _fake_cupy(monkeypatch)(FAR)):
        for device in ({}, {"device": "auto"}, {"device": "cuda"}):
            with pytest.raises(ds.InvalidArgument, match=rf"^like: {UNSEEN}"):
                make(like=like, **device)
    assert make(like=np.zeros(0, np.float32)).executor == ds._core.Executor.cpu
    assert make().executor == ds._core.Executor.cpu


@needs_plans
@plan_makers
def test_a_plan_device_that_contradicts_like_is_refused(make):
    """device='cpu' with a CUDA like made a CPU plan, and device='cuda' with a CPU like a CUDA plan shown in like's
    framework on the GPU: mixed devices taken without a word. Both are refused naming like and the executor."""
    with pytest.raises(ds.InvalidArgument, match=r"^like: on cuda:64, but the plan's executor is cpu \(a plan is made "
                                                 r"where like is.*\): pass like on the CPU, or leave the executor"):
        make(like=far(0), device="cpu")
    with pytest.raises(ds.InvalidArgument, match=r"^like: on cpu:0, but the plan's executor is cuda .*: pass like on a "
                                                 r"CUDA device"):
        make(like=np.zeros(0, np.float32), device="cuda")
    with pytest.raises(ds.InvalidArgument, match=r"^like: a str \('cuda'\), expected None or an array"):
        make(like="cuda")


@needs_plans
def test_a_wrapped_plan_refuses_a_like_on_another_executor():
    """SamplingPlan(core_plan, like) with a CUDA like around a CPU plan gave NumPy views without a word (and a CPU
    like around a CUDA plan showed its memory in like's framework on the GPU); refused as the constructors refuse
    a like that contradicts the executor."""
    core = ds.SamplingPlan.diffusion(4, 2, steps=2)._plan
    with pytest.raises(ds.InvalidArgument, match=r"^like: on cuda, but core_plan runs on the cpu executor"):
        ds.SamplingPlan(core, far(0))
    assert ds.SamplingPlan(core, np.zeros(0, np.float32)).executor == ds._core.Executor.cpu


ALLOCATION_CASES = [
    ("score", lambda m: m.score(far(4, 2)), "out", r"pass out=, a writable CUDA array"),
    ("resample", lambda m: ds.resample(far(2, 4)), "ancestors", r"pass ancestors=, a writable CUDA array"),
    ("resample-reports", lambda m: ds.resample(far(2, 4), ancestors=far(2, 4, dtype="int32"),
                                               normalised_weights=far(2, 4)),
     "reports", r"pass reports=False, or log_weights as a torch or cupy array"),
    ("sample-labels", lambda m: m.sample(out=far(4, 2), labels=True), "labels", r"pass labels=, a writable"),
    ("posterior-labels",
     lambda m: ds.MixturePosterior(m, [[1.0, 0.0]], 0.5, [0.5]).sample(out=far(4, 2), labels=True),
     "labels", r"pass labels=False, or out= as a torch or cupy array"),
    ("guided", lambda m: ds.guided_sample(m, [[1.0, 0.0]], [0.5], 0.5, device=far(0), **GUIDED),
     "samples", r"pass device= a torch or cupy array on that device"),
]


@pytest.mark.parametrize("call,name,advice", [c[1:] for c in ALLOCATION_CASES], ids=[c[0] for c in ALLOCATION_CASES])
def test_a_new_cuda_array_the_package_cannot_allocate_names_the_array(m, call, name, advice):
    """A new output like a CUDA array of a framework the package does not allocate in (JAX, another DLPack array)
    was refused as 'out: ...; pass out=' whatever the array was: resample's ancestors and reports, the labels and
    guided_sample's outputs (neither resample nor guided_sample takes out=). The message names the array and says
    what the call takes instead. Seen failing before: every case (all said out, and score's wording changed)."""
    with pytest.raises(ds.InvalidArgument, match=rf"^{name}: cannot allocate a new CUDA array like a FakeCudaArray "
                                                 rf"\(the package allocates CUDA arrays with PyTorch or CuPy only\); "
                                                 rf"{advice}"):
        call(m)


def test_a_wrapped_plan_refuses_a_like_on_another_cuda_device(monkeypatch):
    """SamplingPlan(core_plan, like) compared only CPU against CUDA: a like on cuda:1 around a plan on cuda:0 was
    taken, and the plan's views were shown in like's framework on like's device. Refused naming both devices (the
    plan's: its samples' DLPack device). Checked with a stand-in core plan on cuda:2 (the package's _core seen
    through a copy whose SamplingPlan is the stand-in's class). Seen failing before the fix: no error."""
    class CorePlan:
        executor = ds._core.Executor.cuda
        device = 2  # the plan's record of its device (its memory's)

    core = types.SimpleNamespace(**{k: getattr(ds._core, k) for k in dir(ds._core) if not k.startswith("__")})
    core.SamplingPlan, core.HAS_SAMPLING_PLANS = CorePlan, True
    monkeypatch.setattr(ds, "_core", core)
    for device in (0, 1):
        with pytest.raises(ds.InvalidArgument, match=rf"^like: on cuda:{device}, but core_plan is on cuda:2 \(.*\): "
                                                     r"pass like on cuda:2$"):
            ds.SamplingPlan(CorePlan(), FakeCudaArray((0,), device))
    assert ds.SamplingPlan(CorePlan(), FakeCudaArray((0,), 2))._like.device == 2
    assert ds.SamplingPlan(CorePlan())._like is None


def _fake_cupy_empty(monkeypatch):
    """_fake_cupy with cupy.empty (an array on the device current in its stand-in), recording each allocation as
    (shape, dtype, device). Returns (shaped(shape, device, dtype): a stand-in CuPy array, the allocations)."""
    array_on = _fake_cupy(monkeypatch)
    made = []
    cupy = sys.modules["cupy"]
    current = []
    device_class = cupy.cuda.Device

    class Device(device_class):
        def __enter__(self):
            current.append(self.index)
            return super().__enter__()

        def __exit__(self, *exc):
            current.pop()
            return super().__exit__(*exc)

    ndarray = type(array_on(0))

    def shaped(shape, device, dtype="float32"):
        a = ndarray(tuple(shape), device, dtype)
        a.device = types.SimpleNamespace(id=device)
        return a

    def empty(shape, dtype):
        made.append((tuple(shape), str(dtype), current[-1] if current else 0))
        return shaped(shape, current[-1] if current else 0, str(dtype))

    cupy.cuda.Device, cupy.empty = Device, empty
    return shaped, made


def test_new_outputs_follow_the_arrays_the_caller_gave(m, monkeypatch):
    """diffusion(m, n, trajectory=<CUDA array>) and GaussianMixture.sample(n, labels=<CUDA array>) made a NumPy out,
    so the call was refused as mixed devices naming an x or out the caller never passed ('trajectory: on cuda:64 but
    x is on cpu:0'). The new out follows the given array's framework and device (the package's rule for outputs):
    here CuPy's stand-in on a device no machine has, so the call goes on to be refused as that device's (naming the
    new out, made on it), and a CUDA array of a framework the package cannot allocate in is refused saying to pass
    out=. Seen failing before the fix: the mixed-device message, no CuPy allocation."""
    shaped, made = _fake_cupy_empty(monkeypatch)
    with pytest.raises(ds.InvalidArgument, match=rf"^out: {UNSEEN}"):
        ds.diffusion(m, 4, trajectory=shaped((2, 4, 2), FAR), steps=2, record_every=1)
    assert made == [((4, 2), "float32", FAR)]
    with pytest.raises(ds.InvalidArgument, match=rf"^out: {UNSEEN}"):
        m.sample(4, labels=shaped((4,), FAR, "int32"))
    assert made[1:] == [((4, 2), "float32", FAR)]
    with pytest.raises(ds.InvalidArgument, match=r"^out: cannot allocate a new CUDA array like a FakeCudaArray .*; "
                                                 r"pass out=, a writable \(n, d\) float32 CUDA array on trajectory's"):
        ds.diffusion(m, 4, trajectory=far(2, 4, 2), steps=2, record_every=1)
    with pytest.raises(ds.InvalidArgument, match=r"^out: cannot allocate .*; pass out=, a writable \(n, d\) float32 "
                                                 r"CUDA array on labels' device"):
        m.sample(4, labels=far(4, dtype="int32"))
    # CPU arrays given: the new out is of their framework (NumPy here), and the call runs.
    traj = np.zeros((2, 4, 2), np.float32)
    out = ds.diffusion(m, 4, trajectory=traj, steps=2, record_every=1)
    assert type(out) is np.ndarray and out.shape == (4, 2)
    out, lab = m.sample(4, labels=np.zeros(4, np.int32))
    assert type(out) is np.ndarray and lab.shape == (4,)
