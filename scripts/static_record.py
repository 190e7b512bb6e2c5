#!/usr/bin/env python3
"""Static performance record of the library's CUDA kernels, from the normal build (no GPU needed).

The library is compiled with -Xptxas=-v and scripts/keep-ptxas-report.sh keeps each object's ptxas report under
<build>/ptxas/. This script reads those reports and writes, for every kernel: registers, stack frame, spill
stores/loads, static shared memory, block size and theoretical occupancy on sm_90; then, for the main kernels,
FLOPs and bytes per chain-step counted from the source and the bound they predict on an H100.

  scripts/static_record.py --ptxas build/ptxas --write bench/static_record.md   # regenerate the record
  scripts/static_record.py --ptxas build/ptxas --check                          # CI rules (the static_record test)

--write also counts the guided functors' SASS in the build's objects (build/CMakeFiles/diffsample.dir/src, or
--objects DIR) with cuobjdump, which runs nvdisasm. The CUDA toolkit may lack both: `pip install
nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm` provides them, found through the Python that runs this script (its
nvidia/*/bin); CUOBJDUMP and NVDISASM (paths) take precedence over PATH, $CUDA_HOME/bin and the pip copies. Without
them --write fails rather than drop the section; --no-sass writes the record without it.

Rules of --check: no kernel spills (spill stores or loads), no register-path kernel (chain state in registers,
register_chain_functor) has a stack frame, and every chain body that has a register-path kernel has one at every
dimension of DIFFSAMPLE_REGISTER_DIMS (kernels/config.cuh), so that no listed dimension goes unchecked.
--allow-register-stack relaxes the second rule and tolerates spills in register-path kernels (they come from the
same local arrays). Kernels of CUB (cub::) are recorded but not checked:
their code and tuning are CUB's. KNOWN_SPILLS lists the library's own kernels that still spill, each with its cause;
they are reported and do not fail, anything else that spills fails, and an entry that no longer spills is reported
so that it can be removed.
Python standard library only; demangling uses c++filt (binutils) when it is there.
"""
import argparse
import glob
import math
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- sm_90 (H100) limits for the occupancy calculation (CUDA C Programming Guide, compute capability 9.0) ---------
SM90 = dict(
    regs_per_sm=65536,
    reg_unit=256,           # registers are allocated per warp in units of 256
    max_warps=64,
    max_blocks=32,
    smem_per_sm=233472,     # 228 KB
    smem_reserved=1024,     # per block, reserved by the system
    smem_unit=128,
)
# --- H100 SXM5 datasheet ceilings used for the predicted bounds ---------------------------------------------------
H100_FP32 = 67e12           # FLOP/s, FP32 (non-tensor), an FMA counted as 2
H100_HBM = 3.35e12          # bytes/s, HBM3


def parse_reports(folder):
    """[(object, mangled, stack, spill_stores, spill_loads, registers, smem)] for every entry function."""
    kernels = []
    for path in sorted(glob.glob(os.path.join(folder, "*.log"))):
        obj = os.path.basename(path)[: -len(".log")]
        entry = None
        props = {}
        current = None
        with open(path, errors="replace") as f:
            for line in f:
                m = re.search(r"Compiling entry function '([^']+)'", line)
                if m:
                    entry = m.group(1)
                    continue
                m = re.search(r"Function properties for (\S+)", line)
                if m:
                    current = m.group(1)
                    continue
                m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if m and current is not None:
                    props[current] = tuple(int(g) for g in m.groups())
                    continue
                m = re.search(r"Used (\d+) registers", line)
                if m and entry is not None:
                    smem = re.search(r"(\d+) bytes smem", line)
                    stack, stores, loads = props.get(entry, (0, 0, 0))
                    kernels.append(dict(object=obj, mangled=entry, stack=stack, spill_stores=stores,
                                        spill_loads=loads, registers=int(m.group(1)),
                                        smem=int(smem.group(1)) if smem else 0))
                    entry = None
    return kernels


def demangle(names):
    tool = shutil.which("c++filt")
    if not tool or not names:
        return list(names)
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    return lines if len(lines) == len(names) else list(names)


def shorten(name):
    for prefix in ("diffsample::kernels::", "diffsample::", "(anonymous namespace)::", "cuda::std::__4::",
                   "cuda::std::"):
        name = name.replace(prefix, "")
    name = re.sub(r"\bCUB_\d+_SM_\d+::", "", name)
    name = re.sub(r"^void ", "", name)
    # Drop the parameter list (the template arguments say everything).
    depth = 0
    for i, c in enumerate(name):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "(" and depth == 0:
            return name[:i]
    return name


def launch_bounds_from_source():
    """Block sizes of kernels declared with __launch_bounds__(constant) in src/ and kernels/."""
    constants, bounds = {}, {}
    texts = []
    for path in glob.glob(os.path.join(ROOT, "src", "*.cu")) + glob.glob(os.path.join(ROOT, "kernels", "*.cuh")):
        with open(path) as f:
            texts.append(f.read())
    for text in texts:
        for m in re.finditer(r"constexpr\s+int\s+(\w+)\s*=\s*(\d+)\s*;", text):
            constants[m.group(1)] = int(m.group(2))
    for text in texts:
        for m in re.finditer(r"__launch_bounds__\((\w+)\)\s+(\w+)\s*\(", text):
            value = m.group(1)
            bounds[m.group(2)] = int(value) if value.isdigit() else constants.get(value)
    return bounds


def block_size(short, bounds):
    # for_each_index_scratch_kernel: the template's block is the largest; with d > 96 (weighting) or d > 32
    # (moment potentials) the launch takes fewer threads for its shared scratch (kernels/launch.cuh).
    m = re.match(r"(?:for_each_index(?:_scratch)?_kernel|for_each_row_staged_kernel|chain_kernel)<(\d+),", short)
    if m:
        return int(m.group(1))
    base = re.match(r"(\w+)", short)
    if base and base.group(1) in bounds:
        return bounds[base.group(1)]
    return None  # CUB kernels: the block size is in CUB's tuning policy, not in the name


def occupancy(registers, smem, block):
    """Theoretical occupancy on sm_90 (fraction of 64 warps) and the limiting resource."""
    if block is None:
        return None, "-"
    warps = math.ceil(block / 32)
    regs_per_warp = math.ceil(max(registers, 1) * 32 / SM90["reg_unit"]) * SM90["reg_unit"]
    by_regs = (SM90["regs_per_sm"] // regs_per_warp) // warps
    per_block_smem = math.ceil((smem + SM90["smem_reserved"]) / SM90["smem_unit"]) * SM90["smem_unit"]
    by_smem = SM90["smem_per_sm"] // per_block_smem
    by_warps = SM90["max_warps"] // warps
    limits = {"registers": by_regs, "shared memory": by_smem, "warps": by_warps, "blocks": SM90["max_blocks"]}
    limiter = min(limits, key=lambda k: limits[k])
    blocks = limits[limiter]
    return blocks * warps / SM90["max_warps"], limiter


def register_path(short):
    return "register_chain_functor<" in short


def register_dims():
    """The compile-time dimensions of the register path: DIFFSAMPLE_REGISTER_DIMS in kernels/config.cuh."""
    with open(os.path.join(ROOT, "kernels", "config.cuh")) as f:
        m = re.search(r"#define\s+DIFFSAMPLE_REGISTER_DIMS\(X\)((?:\s*X\(\d+\))+)", f.read())
    return sorted(int(d) for d in re.findall(r"X\((\d+)\)", m.group(1))) if m else []


def missing_register_kernels(kernels, dims):
    """Failures when the build lacks a register-path kernel: none at all, or a chain body (langevin_chain_body,
    diffusion_chain_body, ...) without its kernel at one of the listed dimensions (the rules above would then pass
    over a dimension that was never compiled)."""
    if not dims:
        return ["no DIFFSAMPLE_REGISTER_DIMS list found in kernels/config.cuh"]
    found = {}
    for k in kernels:
        m = re.search(r"register_chain_functor<(\d+), (\w+)>", k["short"])
        if m:
            found.setdefault(m.group(2), set()).add(int(m.group(1)))
    if not found:
        return ["no register-path kernel (register_chain_functor) in the ptxas reports"]
    return ["register-path kernel missing at D = {}: {}".format(", ".join(str(d) for d in dims if d not in have),
                                                                 body)
            for body, have in sorted(found.items()) if any(d not in have for d in dims)]


def third_party(short):
    return short.startswith("cub::")


# Own kernels known to spill today (substring of the short name -> cause). Empty: no kernel of the library spills;
# keep it so (never add an entry without its cause read from the SASS).
KNOWN_SPILLS = {}


def known_spill(short):
    return next((cause for key, cause in KNOWN_SPILLS.items() if key in short), None)


# --- main kernels: FLOPs and bytes per chain-step, counted from the source ----------------------------------------
# K components, dimension d (isotropic mixture, the benchmark's 25-component grid). FLOPs count an FMA as 2;
# transcendentals (exp, log, sincos) as ~8 each inside the per-component and per-coordinate terms below, so the
# FP32 bounds are estimates. The CUDA loops take the components C at a time (kernels/mixture.cuh chunk_for: 4, and
# 2 for the 32-float register vectors), so the per-(chunk, coordinate) terms appear ceil(K / C) times.
SM90_SMS = 132              # H100 SXM5
SM90_CLOCK = 1.98e9         # boost clock, Hz
LOADS_PER_SM_CLOCK = 1      # warp-wide load instructions issued per SM and clock (a broadcast is one wavefront)


def chunk(d, reg):
    return 2 if reg and d >= 32 else 4


def vector_width(d, reg):
    """Floats per parameter load: rows of a register-path d read from shared memory are 16-byte aligned when d is a
    multiple of 4 and 8-byte aligned when d is even (ptxas emits LDS.128 / LDS.64); global rows of the old path and
    the workspace path's run-time d are read one float at a time."""
    if not reg:
        return 1
    return 4 if d % 4 == 0 else 2 if d % 2 == 0 else 1


def main_kernels():
    """(name, K, d, FLOP, DRAM bytes, parameter loads before, parameter loads after) per chain-step."""
    rows = []
    K = 25
    for d in (2, 10, 32, 100):
        reg = d in (1, 2, 4, 8, 10, 16, 32)
        C = chunk(d, reg)
        chunks = -(-K // C)
        # kernels/langevin.cuh (ULA) + channel_score / channel_chunk_weights (kernels/mixture.cuh): per (k, j) the
        # logit's a mu - x and (.)^2 + q (two FFMA, 4) and the score's a mu - x and w (.) + acc (two FFMA, 4); per
        # component logit scale, cap, log-weight FMA, max, exp and sum (~18 with w / c); per (chunk, j) the rescale
        # (1); the final 1 / sum scaling d; the update x + drift g + noise z (two FFMA, 4 d); normals (~5 d).
        flops = 8 * K * d + 18 * K + chunks * d + d + 4 * d + 5 * d
        # DRAM: register path 0 (state loaded and stored once per call). Workspace path (coordinate-major, run-time
        # d): per (chunk, j) the logit reads x (4 B), the score reads x and reads and writes its accumulator (12 B);
        # zeroing (4 d), 1 / sum scaling (8 d) and the update (x, g read, x written: 12 d). Through L2; DRAM once the
        # workspace of the resident chains exceeds L2 (50 MB: about 30k chains at d = 100).
        moved = 0 if reg else 16 * chunks * d + 24 * d
        # Parameter loads per chain-step (two passes over the means, constants read twice per component): before,
        # one float per load from global memory (L1); after, from shared memory with the vector width above and the
        # component constants in one 16-byte load.
        before = 2 * K * d + 3 * K
        after = 2 * K * d // vector_width(d, reg) + 2 * K
        rows.append(("Langevin ULA, " + ("register" if reg else "workspace") + " path", K, d, flops, moved, before,
                     after))
    for d in (2, 10, 32, 100):
        reg = d in (1, 2, 4, 8, 10, 16, 32)
        C = chunk(d, reg)
        chunks = -(-K // C)
        # kernels/diffusion.cuh (DDPM step) + channel_denoiser: per (k, j) the logit (4) and the accumulation
        # w mu + acc (one FFMA, 2); per component the weight terms (~18) and the x coefficient and mean scale (3);
        # per (chunk, j) the rescale (1); the final out / sum + x_part x (3 d); the affine update cx x + cm m + cn z
        # (FMUL and two FFMA, 5 d); normals (~5 d).
        flops = 6 * K * d + 21 * K + chunks * d + 3 * d + 5 * d + 5 * d
        # Workspace path: per (chunk, j) the logit reads x (4 B), the accumulation reads and writes out (8 B);
        # zeroing (4 d), final scaling (out and x read, out written: 12 d), update (x, m read, x written: 12 d).
        moved = 0 if reg else 12 * chunks * d + 28 * d
        # One pass over the means per evaluation plus the logit's: 2 K d floats; constants (log weight and 1 / c, then
        # mean scale and x scale) two reads per component. The constants of a diffusion step stay in global memory.
        before = 2 * K * d + 4 * K
        after = 2 * K * d // vector_width(d, reg) + 2 * K
        rows.append(("Diffusion DDPM, " + ("register" if reg else "workspace") + " path", K, d, flops, moved, before,
                     after))
    # kernels/plan.cuh plan_step_functor: per element read x and the model output, write x (12 bytes); the model
    # conversion ux x + um y (FMUL, FFMA: 3), the affine update (5) and a quarter of a Philox block's normals (~5).
    rows.append(("Plan step (per element; n = 64, d = 12288)", 0, 1, 13, 12, 0, 0))
    # src/particles.cu (its header comment counts the passes): systematic resampling per particle at large N reads
    # the log-weight three times and writes the ancestor (16 bytes; 28 before the tile passes). Its arithmetic is
    # FP64 (fixed_exp, ~30 FLOP in each of the two passes that need q, not counted here as FP32).
    rows.append(("Resampling, systematic (per particle; N = 2^24)", 0, 1, 0, 16, 0, 0))
    return rows


# --- guided SMC: global accesses per particle-step, before and after the coordinate-major layout -----------------
# One thread per particle. A "warp access" is one load or store instruction of the 32 threads of a warp to the same
# coordinate of 32 consecutive particles. Row-major rows of d floats (d >= 8): 32 addresses 4 d bytes apart, one
# 32-byte sector each: 32 sectors, 1,024 bytes moved for 128 used, 32 bytes per particle. Coordinate-major (element
# (i, j) at i + j B N): 128 consecutive bytes, 4 sectors, 4 bytes per particle. Shared memory (per-thread scratch,
# coordinate-major over the block): no global traffic, no bank conflict. Mixture parameters and A are warp-uniform
# (one broadcast request per warp) and not counted per particle.
def guided_accesses(K, d, dy, layout):
    """(global loads, global stores, shared accesses) per particle-step of SMC's weighting + mutation (linear
    potentials, dense A), counted from kernels/guided.cuh and kernels/mixture.cuh mixture_denoiser."""
    # Weighting, guided_weight_functor. Residual at x: dy d loads of x, dy stores of r; q_now: dy loads. Denoiser:
    # fill d; per component the logit (d loads of x) and the accumulation out = out rescale + w m_k (d loads of x,
    # d loads and d stores of out); the 1 / sum scaling (d loads, d stores). Kernel mean c0 m + c1 x: d loads of m,
    # d of x, d stores of mu. Residual at mu: dy d loads, dy stores; q_next: dy + dy^2 loads.
    # Mutation, guided_mutate_functor: the ancestor's mean (d loads), x' (d stores), z_y (dy stores); residual: dy d
    # loads of x, dy of z_y, dy stores of t; per row o of A, (S^-1 t)_o (dy loads) and x += u_o A_o.
    if layout.startswith("row-major"):
        # Before: the denoiser accumulates in mu's row (global), guided_add_row: d loads and d stores of x per row.
        weight_loads = dy * d + dy + 2 * K * d + K * d + d + 2 * d + dy * d + dy + dy * dy
        weight_stores = dy + d + K * d + d + d + dy
        mutate_loads = d + dy * d + dy + dy * dy + dy * d
        mutate_stores = d + dy + dy + dy * d
        shared = 0
    else:
        # After: the denoiser's out in shared memory (fill d, 2 K d, scaling 2 d, read by the kernel mean d);
        # u = sig^2 S^-1 t stored (dy), then guided_add_rows: per coordinate one load and one store of x and dy loads
        # of u, the sum in a register.
        weight_loads = dy * d + dy + 2 * K * d + d + dy * d + dy + dy * dy
        weight_stores = dy + d + dy
        mutate_loads = d + dy * d + dy + dy * dy + d + dy * d
        mutate_stores = d + dy + dy + dy + d
        shared = d + 2 * K * d + 2 * d + d
    return weight_loads + mutate_loads, weight_stores + mutate_stores, shared


def dps_accesses(K, d, dy, layout):
    """(global loads, global stores, shared accesses) per particle-step of the fused DPS / Pi-GDM run (likelihood
    form, dense A), counted from kernels/guided.cuh (guided_baseline_functor, baseline_guidance, baseline_update) and
    kernels/mixture.cuh (mixture_denoiser, mixture_denoiser_jvp)."""
    # Denoiser: 2 K d loads of x (logit, component mean), the accumulator out: fill d, K d loads and stores, scaling
    # d loads and stores. Guidance: residual y - A m (dy d loads of m, dy stores), v = 0 (d stores), per row o the
    # precision row (dy loads of r) and v += u_o A_o (d loads and d stores of v). JVP: x 6 K d loads and v 3 K d
    # loads over its three passes, the accumulator out: fill d, K d loads and stores. Update: m, x, J v loaded, x
    # stored.
    if layout.startswith("row-major"):
        loads = (3 * K * d + d) + (dy * d + dy * dy + dy * d) + (10 * K * d) + 3 * d
        stores = (K * d + 2 * d) + (dy + d + dy * d) + (d + K * d) + d
        shared = 0
    else:
        # m and J v in the shared scratch: their fills, accumulations and reads move there; x, v and r stay global.
        loads = 2 * K * d + (dy * dy + dy * d) + 9 * K * d + d
        stores = (dy + d + dy * d) + d
        shared = (d + 2 * K * d + 2 * d) + dy * d + (d + 2 * K * d) + 2 * d
    return loads, stores, shared


def tmpd_accesses(K, d, dy, layout):
    """(global loads, global stores, shared accesses) per particle-step of TMPD (dense A), counted from
    kernels/guided_tmpd.cuh (tmpd_moments, tmpd_step) and kernels/mixture.cuh (mixture_denoiser, mixture_denoiser_jvp:
    x 6 K d loads, v 3 K d loads, out d + K d stores and K d loads). The FP64 d_y x d_y system (row-major per
    particle in both layouts, about d_y^3 / 3 + 3 d_y^2 + 6 d_y accesses of 8 bytes) is left out: 15 at d_y = 1."""
    if layout.startswith("row-major"):
        # Before: denoiser (x 2 K d, m d + K d + d stored, K d + d loaded); residual (dy d loads of m, dy stores);
        # per row o: the row of A copied into a per-particle vector (d stores, then d loads and d stores), its JVP
        # (x 6 K d, row 3 K d, J a_o d + K d stored, K d loaded); A (J A^T): dy^2 d loads of the products; f from r
        # (dy); g = sum_o f_o J a_o in a vector (d stores, then 2 d loads and d stores per row); the update (m, x, g
        # loaded, x stored).
        loads = 2 * K * d + (K * d + d) + dy * d + dy * (d + 6 * K * d + 3 * K * d + K * d) + dy * dy * d + dy + \
            2 * dy * d + 3 * d
        stores = (2 * d + K * d) + dy + dy * (2 * d + d + K * d) + (d + dy * d) + d
        shared = 0
    else:
        # After: m and one product's accumulator in the shared scratch; the rows of A read in place (broadcasts, not
        # counted); each finished product copied once to its coordinate-major row; g summed in a register from the
        # rows (dy d loads).
        loads = 2 * K * d + dy * 6 * K * d + dy * dy * d + dy + dy * d + d
        stores = dy + dy * d + d
        shared = (2 * K * d + 3 * d) + dy * d + dy * (2 * K * d + d + d) + d
    return loads, stores, shared


def ddrm_accesses(K, d, r, layout):
    """(global loads, global stores, shared accesses) per particle-step of DDRM (rank r), counted from
    kernels/guided_ddrm.cuh (ddrm_transition, ddrm_project, ddrm_lift) and kernels/mixture.cuh channel_denoiser on
    the device (isotropic, chunks of 4: x read once per chunk and once in the final scaling, out read and written
    once per chunk)."""
    chunks = -(-K // 4)
    if layout.startswith("row-major"):
        # Before: denoiser (x chunks d + d, m 2 d + chunks d stored, chunks d + d loaded); the DDIM update (x and m
        # loaded, xi and x stored); three projections accumulating their r values over the coordinates (d loads of v,
        # r zeroed, r d loads and stores each); the spectral update (3 r loads, r stores); the lift (r d loads of c,
        # x read and written); the scaling by a' (d loads, d stores).
        loads = (chunks * d + d) + (chunks * d + d) + 2 * d + 3 * (d + r * d) + 3 * r + (r * d + d) + d
        stores = (2 * d + chunks * d) + 2 * d + 3 * (r + r * d) + r + d + d
        shared = 0
    else:
        # After: m in the shared scratch; each projection value summed in a register (r d loads of v, r stores).
        loads = (chunks * d + d) + d + 2 * r * d + 3 * r + (r * d + d) + d
        stores = 2 * d + 3 * r + r + d + d
        shared = (2 * chunks * d + 3 * d) + d + r * d
    return loads, stores, shared


def dcps_accesses(K, d, dy, layout):
    """(global loads, global stores, shared accesses) per gradient step of a DCPS transition (dense A, cm != 0: one
    denoiser and one JVP, the work of almost every DCPS step), counted from kernels/guided_dcps.cuh
    (dcps_potential_grad, dcps_transition) and kernels/mixture.cuh (mixture_denoiser, mixture_denoiser_jvp)."""
    if layout.startswith("row-major"):
        # Before: the draw q = mu + e^l eps (mu, l loaded; eps, q stored); denoiser (q 2 K d; m d + K d + d stored,
        # K d + d loaded); mu_beta = cx q + cm m (2 d loads, d stores); residual (dy d loads, dy stores); t = P r
        # (dy^2 loads, dy stores); u = A^T t by rows (d stores, then dy + dy d loads and dy d stores); the JVP
        # (q 6 K d, u 3 K d; ju d + K d stored, K d loaded); grad = cx u + cm ju (2 d loads, d stores); the KL
        # gradients (grad twice, mu, x, l, eps: 6 d loads; 2 d stores) and the normalised update (4 d loads,
        # 2 d stores).
        loads = 2 * d + 2 * K * d + (K * d + d) + 2 * d + dy * d + dy * dy + (dy + dy * d) + (9 * K * d + K * d) + \
            2 * d + 6 * d + 4 * d
        stores = 2 * d + (2 * d + K * d) + d + dy + dy + (d + dy * d) + (d + K * d) + d + 2 * d + 2 * d
        shared = 0
    else:
        # After: m and ju in the shared scratch; u = A^T t coordinate by coordinate (u zeroed, then per coordinate
        # one load and one store of u and dy loads of t).
        loads = 2 * d + 2 * K * d + d + dy * d + dy * dy + (d + dy * d) + 9 * K * d + d + 6 * d + 4 * d
        stores = 2 * d + d + dy + dy + (d + d) + d + 2 * d + 2 * d
        shared = (2 * K * d + 3 * d) + d + dy * d + (d + 2 * K * d) + d
    return loads, stores, shared


def guided_rows():
    rows = []
    K, dy = 25, 1
    for d in (10, 100):
        # FLOPs: the device's denoiser 6 K d + 12 K (per pair a subtraction and an FMA for the logit, a mu_k formed
        # again and an FMA for the sum; bench_smc counts the CPU's 5 K d), the residuals 4 dy d, the mutation's
        # 2 dy d + dy^2 and d + dy normals (~5 each).
        flops = 6 * K * d + 12 * K + 4 * dy * d + 2 * dy * d + dy * dy + 5 * (d + dy)
        for layout, per in (("row-major, accumulators in global", 32), ("coordinate-major, accumulators in shared", 4)):
            loads, stores, shared = guided_accesses(K, d, dy, layout)
            rows.append(("SMC weighting + mutation, " + layout, K, d, dy, loads, stores, per, (loads + stores) * per,
                         stores * per, shared, flops))
    for d in (10, 100):
        # FLOPs (approximate): the denoiser 6 K d + 12 K; the JVP's three passes of logits (4 K d + 12 K each), two
        # products delta_k . v (5 K d each) and the accumulation (8 K d); residual and A^T u (4 dy d); the update and
        # d normals (~11 d).
        flops = 6 * K * d + 12 * K + 3 * (4 * K * d + 12 * K) + 10 * K * d + 8 * K * d + 4 * dy * d + 11 * d
        for layout, per in (("row-major, accumulators in global", 32), ("coordinate-major, accumulators in shared", 4)):
            loads, stores, shared = dps_accesses(K, d, dy, layout)
            rows.append(("DPS / Pi-GDM step, " + layout, K, d, dy, loads, stores, per, (loads + stores) * per,
                         stores * per, shared, flops))
    layouts = (("row-major, accumulators in global", 32), ("coordinate-major, accumulators in shared", 4))
    for d in (10, 100):
        # TMPD (approximate): the denoiser 6 K d + 12 K; per row of A one JVP (three passes of logits 4 K d + 12 K,
        # two products 5 K d, accumulation 8 K d); A (J A^T) 2 dy^2 d; the guidance 2 dy d and the update with d
        # normals (~11 d).
        flops = 6 * K * d + 12 * K + dy * (3 * (4 * K * d + 12 * K) + 18 * K * d) + 2 * dy * dy * d + 2 * dy * d + \
            11 * d
        for layout, per in layouts:
            loads, stores, shared = tmpd_accesses(K, d, dy, layout)
            rows.append(("TMPD step, " + layout, K, d, dy, loads, stores, per, (loads + stores) * per,
                         stores * per, shared, flops))
    for d in (10, 100):
        # DDRM (rank r = d_y): the denoiser 6 K d + 21 K + 3 d (channel constants), the DDIM update and d normals
        # (~10 d), three projections and the lift (8 r d), the scaling (d).
        r = dy
        flops = 6 * K * d + 21 * K + 3 * d + 10 * d + 8 * r * d + d
        for layout, per in layouts:
            loads, stores, shared = ddrm_accesses(K, d, r, layout)
            rows.append(("DDRM step (rank {}), ".format(r) + layout, K, d, dy, loads, stores, per,
                         (loads + stores) * per, stores * per, shared, flops))
    for d in (10, 100):
        # DCPS gradient step: the denoiser 6 K d + 12 K, one JVP (30 K d + 36 K), the residual and A^T t (4 dy d),
        # the draw, KL gradients and update (~25 d with d normals and d exp twice).
        flops = 6 * K * d + 12 * K + 30 * K * d + 36 * K + 4 * dy * d + 25 * d
        for layout, per in layouts:
            loads, stores, shared = dcps_accesses(K, d, dy, layout)
            rows.append(("DCPS gradient step, " + layout, K, d, dy, loads, stores, per, (loads + stores) * per,
                         stores * per, shared, flops))
    return rows


def fmt_bound(flops, moved, loads=0):
    by_flops = H100_FP32 / flops if flops else math.inf
    by_bytes = H100_HBM / moved if moved else math.inf
    by_loads = SM90_SMS * SM90_CLOCK * LOADS_PER_SM_CLOCK * 32 / loads if loads else math.inf
    bounds = {"FP32": by_flops, "HBM": by_bytes, "loads": by_loads}
    which = min(bounds, key=lambda k: bounds[k])
    return by_flops, by_bytes, by_loads, bounds[which], which


def find_tool(name):
    """Path of a CUDA binary utility (cuobjdump, nvdisasm): the environment variable of its name in capitals
    (CUOBJDUMP=/path/to/cuobjdump), then PATH, then $CUDA_HOME/bin (default /usr/local/cuda/bin), then the pip
    packages of the nvidia namespace (nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm install
    site-packages/nvidia/cu13/bin/<name>); None when there is none."""
    given = os.environ.get(name.upper())
    if given:
        if not os.access(given, os.X_OK):
            raise RuntimeError("{}={} is not an executable file".format(name.upper(), given))
        return given
    found = shutil.which(name)
    if found:
        return found
    candidates = [os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", name)]
    try:
        import nvidia  # the pip packages' namespace package
        for base in nvidia.__path__:
            candidates += sorted(glob.glob(os.path.join(base, "*", "bin", name)))
    except ImportError:
        pass
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def find_cuobjdump():
    return find_tool("cuobjdump")


def tool_version(tool):
    """The last line of `tool --version` (its release and build)."""
    out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return out[-1] if out else os.path.basename(tool)


SASS_TOOLS = "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm, or set CUOBJDUMP and NVDISASM to their paths"


# The guided samplers' per-particle functors whose SASS the record counts (section "Divisions ...").
GUIDED_FUNCTORS = ("guided_weight_functor", "guided_init_functor", "guided_moment_functor", "guided_baseline_functor",
                   "guided_diffpir_functor", "guided_skrock_functor", "guided_tmpd_functor", "guided_dcps_functor",
                   "guided_ddrm_functor", "moment_stage_functor", "guided_twisted_functor",
                   "twisted_tell_functor")


def sass_counts(objects):
    """{short kernel name: counts} over the guided functors' kernels in the objects under `objects`: SASS
    instructions (NOPs left out), FCHK (one per IEEE float division: MUFU.RCP, Newton step, FCHK, slow-path call),
    MUFU.RCP (float divisions, 64-bit integer divisions and 1 / x), other MUFU (exp2, lg2, rsqrt, sin, cos),
    CALL.REL (slow paths) and local loads and stores (LDL/STL). Static counts over the whole kernel."""
    tool = find_cuobjdump()
    if tool is None:
        raise RuntimeError("no cuobjdump ({})".format(SASS_TOOLS))
    # cuobjdump -sass runs nvdisasm, which it looks for on PATH or in NVDISASM_PATH (a folder).
    env = dict(os.environ)
    nvdisasm = find_tool("nvdisasm")
    if nvdisasm is not None:
        env["NVDISASM_PATH"] = os.path.dirname(os.path.abspath(nvdisasm))
    objs = sorted(glob.glob(os.path.join(objects, "*.cu.o")))
    if not objs:
        raise RuntimeError("no *.cu.o under {} (build the library first, or pass --objects)".format(objects))
    counts = {}
    for obj in objs:
        run = subprocess.run([tool, "-sass", obj], capture_output=True, text=True, env=env)
        if run.returncode != 0:
            raise RuntimeError("{} -sass {} failed ({}): {}".format(tool, obj, SASS_TOOLS,
                                                                    run.stderr.strip() or run.returncode))
        text = run.stdout
        current = None
        for line in text.splitlines():
            m = re.search(r"Function : (\S+)", line)
            if m:
                current = dict(name=m.group(1), object=os.path.basename(obj), ins=0, fchk=0, rcp=0, mufu=0, call=0,
                               local=0)
                counts[m.group(1)] = current
                continue
            m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+([^;]*);", line)
            if current is None or not m:
                continue
            ins = m.group(1).strip()
            if ins.startswith("@"):
                ins = ins.split(None, 1)[1]
            op = ins.split()[0]
            if op == "NOP":
                continue
            current["ins"] += 1
            current["fchk"] += op.startswith("FCHK")
            current["rcp"] += op.startswith("MUFU.RCP")
            current["mufu"] += op.startswith("MUFU.") and not op.startswith("MUFU.RCP")
            current["call"] += op.startswith("CALL")
            current["local"] += op.startswith("LDL") or op.startswith("STL")
    names = list(counts)
    out = {}
    for mangled, name in zip(names, demangle(names)):
        short = shorten(name)
        if any(f in short for f in GUIDED_FUNCTORS):
            out[short] = counts[mangled]
    return out


def write_record(kernels, path, allow_register_stack, sass=None):
    lines = []
    lines.append("# Static performance record (sm_90)")
    lines.append("")
    lines.append("Generated by `scripts/static_record.py` from ptxas's resource report of the normal build")
    lines.append("(`-Xptxas=-v`, kept per object under `build/ptxas/`); regenerate with")
    lines.append("`python3 scripts/static_record.py --ptxas build/ptxas --write bench/static_record.md` after a build")
    lines.append("(the SASS section needs cuobjdump and nvdisasm: `pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`).")
    lines.append("No GPU is needed to produce it and none was used. Occupancy is theoretical (sm_90: 64 warps,")
    lines.append("65,536 registers, 228 KB shared memory per SM), from registers, static shared memory and block size.")
    lines.append("CI (`static_record` test) fails when a kernel spills, a register-path kernel has a stack frame, or a")
    lines.append("dimension of `DIFFSAMPLE_REGISTER_DIMS` has no register-path kernel.")
    lines.append("")
    nvcc = shutil.which("nvcc")
    if nvcc:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
        lines.append("Compiler: " + (version[-1] if version else "nvcc"))
        lines.append("")
    lines.append("## Every kernel")
    lines.append("")
    lines.append("| object | kernel | block | registers | stack (B) | spill st/ld (B) | smem (B) | occupancy | limit |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for k in sorted(kernels, key=lambda k: (k["object"], k["short"])):
        occ, limiter = occupancy(k["registers"], k["smem"], k["block"])
        name = k["short"].replace("|", "\\|")
        if len(name) > 160:
            name = name[:157] + "..."
        lines.append("| {} | `{}` | {} | {} | {} | {}/{} | {} | {} | {} |".format(
            k["object"].replace(".cu.o", ""), name, k["block"] if k["block"] else "CUB policy", k["registers"],
            k["stack"], k["spill_stores"], k["spill_loads"], k["smem"],
            "{:.0%}".format(occ) if occ is not None else "-", limiter))
    lines.append("")
    lines.append("## Register path (chain state in registers)")
    lines.append("")
    lines.append("| kernel | registers | stack (B) | spills (B) |")
    lines.append("| --- | ---: | ---: | ---: |")
    for k in sorted((k for k in kernels if register_path(k["short"])), key=lambda k: k["short"]):
        lines.append("| `{}` | {} | {} | {} |".format(k["short"], k["registers"], k["stack"],
                                                    k["spill_stores"] + k["spill_loads"]))
    lines.append("")
    lines.append("## Main kernels: work per chain-step and the H100 bound it predicts")
    lines.append("")
    lines.append("Counted from the source (comments in `scripts/static_record.py` name the lines), 25 components.")
    lines.append("H100 SXM ceilings: FP32 {:.0f} TFLOP/s, HBM3 {:.2f} TB/s, {} SMs at {:.2f} GHz issuing {} warp-wide".format(
        H100_FP32 / 1e12, H100_HBM / 1e12, SM90_SMS, SM90_CLOCK / 1e9, LOADS_PER_SM_CLOCK))
    lines.append("load per clock. Bytes are those the source moves per chain-step beyond registers, shared memory and the")
    lines.append("mixture's tables (register path: the state is loaded and stored once per call). Parameter loads are the")
    lines.append("load instructions per chain-step that read the mixture (means, per-component constants): before, one")
    lines.append("float per load from global memory through L1; after, from the copy the chain kernel stages in shared")
    lines.append("memory (`kernels/chain_launch.cuh`), 128- or 64-bit loads where the rows are aligned, the four constants")
    lines.append("of a component in one load. The bound is the smallest of the three; predictions, not measurements.")
    lines.append("")
    lines.append("| kernel | K | d | FLOP / step | bytes / step | parameter loads / step (before -> after) | "
                 "bound by FP32 (steps/s) | bound by bytes (steps/s) | bound by loads (steps/s, after) | bound |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, K, d, flops, moved, before, after in main_kernels():
        by_flops, by_bytes, by_loads, bound, which = fmt_bound(flops, moved, after)
        lines.append("| {} | {} | {} | {} | {} | {} | {:.3g} | {} | {} | {} |".format(
            name, K if K else "-", d, flops, moved, "{} -> {}".format(before, after) if before else "-", by_flops,
            "{:.3g}".format(by_bytes) if moved else "-", "{:.3g}".format(by_loads) if after else "-", which))
    lines.append("")
    lines.append("## Guided samplers: global memory per particle-step, before and after the coordinate-major layout")
    lines.append("")
    lines.append("SMC: weighting and mutation of one transition (linear potentials); DPS / Pi-GDM: one step of the fused")
    lines.append("run (likelihood form); TMPD: one transition; DDRM: one transition at rank d_y; DCPS: one gradient step")
    lines.append("of a transition (a denoiser and a JVP, as almost every DCPS step). Dense A, {} components, d_y = 1,".format(
        guided_rows()[0][1]))
    lines.append("counted from the source (`guided_accesses`, `dps_accesses`, `tmpd_accesses`, `ddrm_accesses`,")
    lines.append("`dcps_accesses` in `scripts/static_record.py`). Accesses are 4-byte")
    lines.append("loads and stores of one thread; sectors are per warp access (32 particles, one coordinate); bytes")
    lines.append("are at sector granularity (32 B per particle row-major, 4 B coordinate-major). Loads of x repeat")
    lines.append("per component and are served by L1 when a block's rows fit; stores go to L2 (L1 writes through),")
    lines.append("so the stored bytes are the floor of L2 traffic. The bound divides HBM bandwidth by all bytes")
    lines.append("(pessimistic: it assumes nothing is served by L1/L2) and FP32 peak by the FLOPs. The shared-memory")
    lines.append("scratch needs d floats per thread (DPS, TMPD, DCPS: 2 d, moment potentials: 3 d, twisted: (2 + d_y) d, 3 d at")
    lines.append("d_y = 1 in the table below): 128 threads up to 96 floats,")
    lines.append("fewer down to one warp up to 384 (`shared_scratch_block` in `kernels/launch.cuh`); beyond that it stays in the")
    lines.append("coordinate-major global rows (4 sectors per warp access). One kernel serves both placements, chosen")
    lines.append("at launch, so the SASS reaches the scratch with generic loads and stores (`LD.E`/`ST.E`, no `LDS`/`STS`),")
    lines.append("which the hardware routes to shared memory without global traffic (a shared-only kernel would use")
    lines.append("`LDS`/`STS` at the cost of a second kernel per functor to compile).")
    lines.append("")
    lines.append("| kernel, layout | K | d | d_y | loads | stores | sectors / warp access | bytes / step | stored bytes | shared accesses | FLOP / step | bound by FP32 (steps/s) | bound by bytes (steps/s) |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for layout, K, d, dy, loads, stores, sectors, moved, stored, shared, flops in guided_rows():
        by_flops, by_bytes, _, _, _ = fmt_bound(flops, moved)
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3g} | {:.3g} |".format(
            layout, K, d, dy, loads, stores, sectors, moved, stored, shared, flops, by_flops, by_bytes))
    lines.append("")
    # The scratch kernels' occupancy with their dynamic shared memory (the table above counts static memory only).
    scratch = [k for k in kernels if k["short"].startswith("for_each_index_scratch_kernel<")]
    if scratch:
        lines.append("Occupancy of the shared-scratch kernels with their dynamic shared memory (threads per block as")
        lines.append("`shared_scratch_block` picks them; static occupancy above is at 128 threads without it):")
        lines.append("")
        lines.append("| kernel | d | floats per thread | threads | dynamic smem (B) | occupancy | limit |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for k in sorted(scratch, key=lambda k: k["short"]):
            two = ("guided_baseline_functor", "guided_tmpd_functor", "guided_dcps_functor")
            three = ("guided_moment_functor", "guided_twisted_functor")  # twisted: (2 + d_y) d, at d_y = 1
            per_d = 3 if any(t in k["short"] for t in three) else 2 if any(t in k["short"] for t in two) else 1
            for d in (10, 100, 400):
                width = per_d * d
                threads = min(128, (48 * 1024) // (4 * width) // 32 * 32)
                if threads < 32:
                    occ, limiter = occupancy(k["registers"], k["smem"], 128)
                    lines.append("| `{}` | {} | {} | 128 | 0 (global rows) | {:.0%} | {} |".format(
                        k["short"], d, width, occ, limiter))
                    continue
                dyn = threads * width * 4
                occ, limiter = occupancy(k["registers"], k["smem"] + dyn, threads)
                lines.append("| `{}` | {} | {} | {} | {} | {:.0%} | {} |".format(
                    k["short"], d, width, threads, dyn, occ, limiter))
        lines.append("")
    if sass:
        lines.append("## Divisions and instructions of the guided functors (SASS)")
        lines.append("")
        lines.append("Static counts over each kernel's SASS (`cuobjdump -sass` of the build's objects, `--objects`;")
        lines.append("cuobjdump of {}):".format(sass.get("_tool", "unknown version")))
        lines.append("instructions (NOPs left out); FCHK, one per IEEE float division the code keeps (each is MUFU.RCP,")
        lines.append("a Newton step, FCHK and a call to the slow path); MUFU.RCP, float divisions plus reciprocals and the")
        lines.append("64-bit integer divisions (i / particles); other MUFU (exp2, lg2, rsqrt, sin, cos); calls (slow")
        lines.append("paths); local loads and stores (a stack frame's array, not spills). Counted once per instruction in")
        lines.append("the code, not per execution.")
        lines.append("")
        lines.append("| object | kernel | instructions | FCHK (divisions) | MUFU.RCP | other MUFU | calls | LDL/STL |")
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = {short: c for short, c in sass.items() if not short.startswith("_")}
        for short, c in sorted(rows.items(), key=lambda e: (e[1]["object"], e[0])):
            lines.append("| {} | `{}` | {} | {} | {} | {} | {} | {} |".format(
                c["object"].replace(".cu.o", ""), short.replace("|", "\\|"), c["ins"], c["fchk"], c["rcp"],
                c["mufu"], c["call"], c["local"]))
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptxas", default=os.path.join(ROOT, "build", "ptxas"), help="folder of ptxas reports")
    ap.add_argument("--write", metavar="FILE", help="write the record (markdown) to FILE")
    ap.add_argument("--check", action="store_true", help="fail on spills and register-path stack frames")
    ap.add_argument("--allow-register-stack", action="store_true",
                    help="do not fail on register-path stack frames (spills still fail)")
    ap.add_argument("--objects", metavar="DIR",
                    help="with --write: count the guided functors' SASS in DIR's *.cu.o (needs cuobjdump and "
                         "nvdisasm; default: CMakeFiles/diffsample.dir/src of the build that holds --ptxas)")
    ap.add_argument("--no-sass", action="store_true",
                    help="with --write: leave the SASS section out (without it --write fails when it cannot count)")
    args = ap.parse_args()

    kernels = parse_reports(args.ptxas)
    if not kernels:
        print("static_record: no ptxas reports under {} (build the library first)".format(args.ptxas),
              file=sys.stderr)
        return 2
    bounds = launch_bounds_from_source()
    for k, name in zip(kernels, demangle([k["mangled"] for k in kernels])):
        k["short"] = shorten(name)
        k["block"] = block_size(k["short"], bounds)

    if args.write:
        sass = None
        if not args.no_sass:
            objects = args.objects or os.path.join(os.path.dirname(os.path.abspath(args.ptxas)), "CMakeFiles",
                                                   "diffsample.dir", "src")
            try:
                sass = sass_counts(objects)
            except RuntimeError as e:
                print("static_record: SASS section: {} (--no-sass writes the record without it)".format(e),
                      file=sys.stderr)
                return 2
            sass["_tool"] = tool_version(find_cuobjdump()).replace("Build ", "")
        write_record(kernels, args.write, args.allow_register_stack, sass)
        print("static_record: {} kernels written to {}".format(len(kernels), args.write))

    failures, known, stale = [], [], []
    for k in kernels:
        spills = k["spill_stores"] or k["spill_loads"]
        where = "{} ({})".format(k["short"], k["object"])
        if third_party(k["short"]):
            continue
        if register_path(k["short"]):
            if args.allow_register_stack:
                continue
            if k["stack"]:
                failures.append("register-path stack frame {} bytes: {}".format(k["stack"], where))
            if spills:
                failures.append("spills {}/{} bytes: {}".format(k["spill_stores"], k["spill_loads"], where))
            continue
        cause = known_spill(k["short"])
        if spills and cause:
            known.append("spills {}/{} bytes (known: {}): {}".format(k["spill_stores"], k["spill_loads"], cause, where))
        elif spills:
            failures.append("spills {}/{} bytes: {}".format(k["spill_stores"], k["spill_loads"], where))
        elif cause:
            stale.append("no longer spills, remove it from KNOWN_SPILLS: " + where)
    dims = register_dims()
    failures += missing_register_kernels(kernels, dims)
    if args.check:
        own = [k for k in kernels if not third_party(k["short"])]
        stacked = sum(1 for k in own if register_path(k["short"]) and k["stack"])
        print("static_record: {} kernels ({} of CUB, not checked), {} register-path kernels at D = {} ({} with a "
              "stack frame{}), {} own kernels spilling".format(
                  len(kernels), len(kernels) - len(own), sum(1 for k in own if register_path(k["short"])),
                  ", ".join(str(d) for d in dims), stacked,
                  ", allowed" if args.allow_register_stack else "",
                  sum(1 for k in own if k["spill_stores"] or k["spill_loads"])))
        for line in known:
            print("static_record: KNOWN " + line)
        for line in stale:
            print("static_record: NOTE " + line)
        for line in failures:
            print("static_record: FAIL " + line, file=sys.stderr)
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
