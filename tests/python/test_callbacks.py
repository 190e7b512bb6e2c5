"""A model (a neural prior's callback) that fails inside a plan's run(): its exception reaches the caller as it is
(type, message, traceback through the model), nothing is left half-done that a new trajectory would see, and a
failed allocation of an output in the caller's framework (PyTorch's CUDA out-of-memory error, its CPU allocator's
RuntimeError) is an OutOfMemory naming the argument, with the framework's error as the cause. The CUDA cases skip
without a GPU and PyTorch with CUDA."""
import numpy as np
import pytest

import diffsample as ds
from conftest import requires_gpu, torch_or_none

torch = torch_or_none()
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
plans = pytest.mark.skipif(not ds._core.HAS_SAMPLING_PLANS, reason="the library has no ask/tell plans")


class Failing:
    """model(x, a, s): the mixture's denoiser, raising `error` at the call numbered `at` (0-based)."""

    def __init__(self, mixture, error, at):
        self.mixture, self.error, self.at, self.calls = mixture, error, at, 0

    def __call__(self, x, a, s):
        self.calls += 1
        if self.calls - 1 == self.at:
            raise self.error
        if torch is not None and isinstance(x, torch.Tensor):
            return torch.from_numpy(self.mixture.denoiser(x.cpu().numpy(), a, s)).to(x.device)
        return self.mixture.denoiser(np.ascontiguousarray(x), a, s)


def test_diffusion_plan_run_passes_the_models_exception_on(mixture2):
    plan = ds.DiffusionPlan(64, 2, sampler="ddpm", steps=6, seed=3)
    error = ValueError("the network failed at step 2")
    x = np.zeros((64, 2), dtype=np.float32)
    with pytest.raises(ValueError) as caught:
        plan.run(Failing(mixture2, error, 2), x)
    assert caught.value is error  # not wrapped, not replaced
    assert "__call__" in [entry.name for entry in caught.traceback]
    # The next trajectory starts from reset(): it equals a fresh plan's.
    good = lambda x, a, s: mixture2.denoiser(np.ascontiguousarray(x), a, s)  # noqa: E731
    again = plan.run(good, np.zeros((64, 2), dtype=np.float32))
    fresh = ds.DiffusionPlan(64, 2, sampler="ddpm", steps=6, seed=3)
    fresh.run(good, np.zeros((64, 2), dtype=np.float32))  # trajectory 0, as the failed one was
    np.testing.assert_array_equal(again, fresh.run(good, np.zeros((64, 2), dtype=np.float32)))


@plans
def test_sampling_plan_run_passes_the_models_exception_on(mixture2):
    plan = ds.SamplingPlan.diffusion(64, 2, sampler="ode_heun", steps=5, seed=1)
    error = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
    with pytest.raises(RuntimeError) as caught:
        plan.run(Failing(mixture2, error, 3))
    assert caught.value is error
    assert plan.position == 3 and not plan.done  # where the model failed; nothing applied beyond
    good = lambda x, a, s: mixture2.denoiser(np.ascontiguousarray(x), a, s)  # noqa: E731
    fresh = ds.SamplingPlan.diffusion(64, 2, sampler="ode_heun", steps=5, seed=1)
    fresh.run(good)
    np.testing.assert_array_equal(plan.run(good), fresh.run(good))


@needs_torch
@plans
def test_torch_out_of_memory_from_the_model_reaches_the_caller(mixture2):
    # PyTorch's own out-of-memory error type, raised by a torch model on CPU tensors (the CUDA case below).
    plan = ds.SamplingPlan.diffusion(16, 2, sampler="ddpm", steps=4, like=torch.zeros(1))
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate"):
        plan.run(Failing(mixture2, error, 1))
    assert plan.position == 1


@needs_torch
def test_a_failed_torch_allocation_is_out_of_memory_naming_the_argument(mixture2, monkeypatch):
    # A torch output the package allocates: PyTorch's CPU allocator raises a RuntimeError ("can't allocate memory"),
    # its CUDA allocator torch.OutOfMemoryError; both reached the caller as they were, naming no argument (NumPy's
    # MemoryError was already OutOfMemory naming n).
    # A machine that overcommits memory (seen on a GPU machine with 128 GiB) hands out the 35 TB array; the library's
    # own host-memory limit then refuses the run's workspace, OutOfMemory as well.
    y = np.zeros((2**18, 1))
    with pytest.raises(ds.OutOfMemory, match=r"^(options\.particles: the \(262144, 16777216, 2\) float32 output "
                                             r"\(35184372088832 bytes\) could not be allocated \(RuntimeError: |guided "
                                             r"workspace: needs \d+ bytes of host memory, the limit is )") as e:
        ds.guided_sample(mixture2, [[1.0, 0.0]], y, 0.5, outputs=("particles",), particles=2**24, steps=2,
                         device=torch.zeros(1))
    if str(e.value).startswith("options.particles"):
        assert isinstance(e.value.__cause__, RuntimeError)
    real_empty = torch.empty

    def empty_oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 MiB")

    monkeypatch.setattr(torch, "empty", empty_oom)
    x = torch.zeros(8, 2)
    with pytest.raises(ds.OutOfMemory, match=r"^out: the \(8, 2\) float32 output \(64 bytes\) could not be allocated "
                                             r"\(OutOfMemoryError: CUDA out of memory") as e:
        mixture2.score(x, 1.0, 0.5)
    assert isinstance(e.value.__cause__, torch.OutOfMemoryError)
    with pytest.raises(ds.OutOfMemory, match=r"^labels: the \(8,\) int32 labels"):
        mixture2.sample(out=x, labels=True)
    with pytest.raises(ds.OutOfMemory, match=r"^ancestors: "):
        ds.resample(torch.zeros(2, 4))

    def empty_other(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch, "empty", empty_other)
    with pytest.raises(RuntimeError, match="illegal memory access"):  # not taken for a lack of memory
        mixture2.score(x, 1.0, 0.5)
    monkeypatch.setattr(torch, "empty", real_empty)
    assert mixture2.score(x, 1.0, 0.5).shape == (8, 2)


@requires_gpu
@plans
def test_cuda_out_of_memory_in_the_model_leaves_the_plan_usable(mixture2):
    # A torch model on CUDA tensors that asks for more device memory than there is: torch.OutOfMemoryError reaches
    # the caller from run(), the plan's queued work is intact, and the next trajectory equals a fresh plan's.
    like = torch.zeros(1, device="cuda")
    plan = ds.SamplingPlan.diffusion(256, 2, sampler="ddpm", steps=4, seed=2, device="cuda", like=like)
    calls = [0]

    def greedy(x, a, s):
        calls[0] += 1
        if calls[0] == 2:
            torch.empty(2**50, dtype=torch.uint8, device=x.device)  # 1 PiB
        return torch.from_numpy(mixture2.denoiser(x.cpu().numpy(), a, s)).to(x.device)

    with pytest.raises(torch.OutOfMemoryError):
        plan.run(greedy)
    assert plan.position == 1
    good = lambda x, a, s: torch.from_numpy(mixture2.denoiser(x.cpu().numpy(), a, s)).to(x.device)  # noqa: E731
    fresh = ds.SamplingPlan.diffusion(256, 2, sampler="ddpm", steps=4, seed=2, device="cuda", like=like)
    fresh.run(good)
    again, want = plan.run(good), fresh.run(good)
    torch.cuda.synchronize()
    assert torch.equal(again, want)
    # An output the package allocates on the device, beyond its memory: OutOfMemory naming the argument.
    y = np.zeros((2**16, 1))
    with pytest.raises(ds.OutOfMemory, match=r"^options\.particles: .* could not be allocated on cuda"):
        ds.guided_sample(mixture2, [[1.0, 0.0]], y, 0.5, outputs=("particles",), particles=2**24, steps=2,
                         device=like)


def _two_gpus():
    """Why the two-device test cannot run here, or '' when it can."""
    if not ds.cuda_available() or torch is None or not torch.cuda.is_available():
        return "no CUDA device with PyTorch CUDA"
    return "" if torch.cuda.device_count() >= 2 else "fewer than two CUDA devices"


@pytest.mark.skipif(_two_gpus() != "", reason=_two_gpus() or "two gpus")
@plans
def test_plan_views_name_the_plans_device(mixture2):
    # A CUDA plan made while device 1 is current keeps its memory there; its views were labelled cuda:0 whatever the
    # device (the binding passed device 0 to DLPack), so torch read them on the wrong device. Not run here (no GPU).
    model = lambda x, a, s: torch.from_numpy(mixture2.denoiser(x.cpu().numpy(), a, s)).to(x.device)  # noqa: E731
    results = []
    for device in (0, 1):
        like = torch.zeros(1, device=f"cuda:{device}")
        with torch.cuda.device(device):
            plan = ds.SamplingPlan.diffusion(64, 2, sampler="ddpm", steps=3, seed=5, device="cuda", like=like)
            r = plan.ask(0)
            for view in (r["points"], r["answer"], plan.samples()):
                assert view.device == torch.device(f"cuda:{device}")
            results.append(plan.run(model).cpu())
            torch.cuda.synchronize(device)
    assert torch.equal(results[0], results[1])  # the same executor's kernels on either device
