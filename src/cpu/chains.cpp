// The SIMD chain runners of one dispatch target (DS_SIMD_TARGET, see src/cpu/simd.hpp): the chain bodies of
// kernels/ over packs of `lanes` chains, state in stack arrays for the register dimensions (reg_vec of packs) or in
// pack-major workspace otherwise. Compiled once per target by CMakeLists.txt.
#include "src/cpu/simd.hpp"

#include <algorithm>
#include <vector>

#include "src/cpu/chains.hpp"
#include "src/cpu/pack_cores.hpp"
#include "src/cpu/pool.hpp"

namespace diffsample::cpu::DS_SIMD_NS {
namespace {

using kernels::reg_vec;

/// Chains i0 .. i0 + lanes - 1 of a call, `valid` of them real (the last pack of a call may be partial; its other
/// lanes run throw-away chains and are never stored).
struct pack_lane {
  using value = fpack;
  std::int64_t i0;
  int valid;
  philox_pack rng(std::uint64_t seed, std::uint64_t first_chain, std::uint64_t step) const {
    return {seed, first_chain + static_cast<std::uint64_t>(i0), step};
  }
  struct counter {
    vi c = vi{};
    void add(mpack accepted) { c -= accepted.m; }
    void add_all() { c += 1; }
  };
  void store_count(std::int64_t* out, const counter& c) const {
    for (int l = 0; l < valid; ++l) out[i0 + l] = c.c[l];
  }
  fpack get(const float* rows, int d, int j) const {
    fpack v(0.f);
    for (int l = 0; l < valid; ++l) v.v[l] = rows[(i0 + l) * d + j];
    return v;
  }
  void put(float* rows, int d, int j, fpack v) const {
    for (int l = 0; l < valid; ++l) rows[(i0 + l) * d + j] = v.v[l];
  }
  template <class V>
  void store_row(float* records, std::int64_t r, std::int64_t n, const V& x) const {
    const int d = x.size();
    for (int l = 0; l < valid; ++l) {
      float* out = records + (r * n + i0 + l) * d;
      for (int j = 0; j < d; ++j) out[j] = x[j].v[l];
    }
  }
};

/// A run-time-length vector of packs in workspace.
struct pack_span {
  fpack* p;
  int d;
  fpack& operator[](int j) const { return p[j]; }
  int size() const { return d; }
};

/// Runs f(pack) for every pack of n chains on the executor's pool (one fork and join per call): packs claimed
/// dynamically in chunks of about 1/16 of a thread's share, so that a thread the OS deschedules holds at most one
/// chunk.
template <class F>
void for_each_pack(std::int64_t n, const F& f) {
  const std::int64_t packs = (n + lanes - 1) / lanes;
  const std::int64_t chunk = std::max<std::int64_t>(1, packs / (std::int64_t(max_threads()) * 16));
  parallel_for(
      packs, chunk,
      [](void* c, std::int64_t b, std::int64_t e) {
        for (std::int64_t p = b; p < e; ++p) (*static_cast<const F*>(c))(p);
      },
      const_cast<void*>(static_cast<const void*>(&f)));
}

template <class V>
void load(V& xs, const float* x, std::int64_t i0, int valid, int d) {
  for (int j = 0; j < d; ++j) xs[j] = fpack(0.f);
  for (int l = 0; l < valid; ++l)
    for (int j = 0; j < d; ++j) xs[j].v[l] = x[(i0 + l) * d + j];
}
template <class V>
void store(const V& xs, float* x, std::int64_t i0, int valid, int d) {
  for (int l = 0; l < valid; ++l)
    for (int j = 0; j < d; ++j) x[(i0 + l) * d + j] = xs[j].v[l];
}

template <class Body>
void run(const Body& body, float* x, std::int64_t n, std::int64_t d, float* state) {
  const bool handled = kernels::dispatch_register_dim(d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    for_each_pack(n, [&](std::int64_t p) {
      const std::int64_t i0 = p * lanes;
      const int valid = static_cast<int>(std::min<std::int64_t>(lanes, n - i0));
      reg_vec<fpack, D> xs{}, v1{}, v2{}, v3{};
      if (body.loads_state()) load(xs, x, i0, valid, D);
      body(pack_lane{i0, valid}, xs, v1, v2, v3);
      store(xs, x, i0, valid, D);
    });
  });
  if (handled) return;
  const int di = static_cast<int>(d);
  // Caller workspace is only float-aligned: start at the first pack boundary (state_floats leaves room).
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(state), align = sizeof(fpack);
  fpack* const packs = reinterpret_cast<fpack*>((a + align - 1) / align * align);
  for_each_pack(n, [&](std::int64_t p) {
    const std::int64_t i0 = p * lanes;
    const int valid = static_cast<int>(std::min<std::int64_t>(lanes, n - i0));
    fpack* base = packs + p * 4 * d;
    pack_span xs{base, di}, v1{base + d, di}, v2{base + 2 * d, di}, v3{base + 3 * d, di};
    if (body.loads_state()) load(xs, x, i0, valid, di);
    body(pack_lane{i0, valid}, xs, v1, v2, v3);
    store(xs, x, i0, valid, di);
  });
}

/// Per-thread workspace of `count` packs for run-time dimensions (kept between calls: no allocation per call once
/// a thread has seen the dimension).
fpack* thread_packs(std::int64_t count) {
  static thread_local std::vector<fpack> buffer;
  if (static_cast<std::int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

}  // namespace

// The channel functions on a pack in packs, with the pack in registers for the register dimensions and the caller's
// packs otherwise; not inlined, so that run_evaluate and the fused stepwise runs execute the same code on a pack.
__attribute__((noinline)) void evaluate_packs(const kernels::channel_view& c, int what, const fpack* xs, fpack* os,
                                              fpack* log_p, int d) {
  const auto eval = [&](const auto& x, auto& o) {
    const fpack lp = what == 2 ? kernels::channel_denoiser<fpack>(c, x, o) : kernels::channel_score<fpack>(c, x, o);
    if (what == 0) *log_p = lp;
  };
  const bool handled = kernels::dispatch_register_dim(d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    reg_vec<fpack, D> xr, orr{};
    for (int j = 0; j < D; ++j) xr[j] = xs[j];
    eval(xr, orr);
    if (what != 0)
      for (int j = 0; j < D; ++j) os[j] = orr[j];
  });
  if (handled) return;
  const pack_span x{const_cast<fpack*>(xs), d};
  pack_span o{os, d};
  eval(x, o);
}

// One pack's evaluation: its rows into packs (on the stack for the register dimensions, in per-thread workspace
// otherwise), evaluate_packs, the packs back into rows.
__attribute__((noinline)) void evaluate_rows(const kernels::channel_view& c, int what, const float* x, float* out,
                                             std::int64_t i0, int valid, std::int64_t d) {
  const auto run = [&](auto& xv, auto& ov, int di) {
    fpack log_p;
    load(xv, x, i0, valid, di);
    evaluate_packs(c, what, &xv[0], &ov[0], &log_p, di);
    if (what == 0) {
      for (int l = 0; l < valid; ++l) out[i0 + l] = log_p.v[l];
    } else {
      store(ov, out, i0, valid, di);
    }
  };
  const bool handled = kernels::dispatch_register_dim(d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    reg_vec<fpack, D> xs, os;
    run(xs, os, D);
  });
  if (handled) return;
  const int di = static_cast<int>(d);
  fpack* xs = thread_packs(2 * d);
  pack_span xv{xs, di}, ov{xs + d, di};
  run(xv, ov, di);
}

void run_evaluate(const kernels::channel_view& c, int what, const float* x, std::int64_t n, std::int64_t d,
                  float* out) {
  for_each_pack(n, [&](std::int64_t p) {
    const std::int64_t i0 = p * lanes;
    evaluate_rows(c, what, x, out, i0, static_cast<int>(std::min<std::int64_t>(lanes, n - i0)), d);
  });
}

// The plan's step and initial draw (kernels/plan.cuh) over packs of rows, with the operations of diffusion_chain
// on this target (the functors' own per-element arithmetic, but in the fused samplers' order and rounding:
// m = ux x + um model, x <- cn z + (cm m + cx x)), so that a plan fed the denoiser reproduces the fused run.
void run_plan_step(const kernels::plan_step_functor& f, std::int64_t n) {
  const std::int64_t k = f.final_jump ? f.steps : f.state->step;
  if (k > f.steps || (!f.final_jump && k == f.steps)) return;
  const kernels::diffusion_step st = f.table[k];
  const fpack ux(f.convert[2 * k]), um(f.convert[2 * k + 1]), cx(st.cx), cm(st.cm), cn(st.cn);
  const int d = f.d;
  const std::uint64_t chain_base = f.state->chain_base;
  for_each_pack(n, [&](std::int64_t p) {
    const std::int64_t i0 = p * lanes;
    const pack_lane lane{i0, static_cast<int>(std::min<std::int64_t>(lanes, n - i0))};
    if (f.final_jump) {
      for (int j = 0; j < d; ++j) lane.put(f.x, d, j, ds_fma(ux, lane.get(f.x, d, j), um * lane.get(f.model, d, j)));
      return;
    }
    if (st.cn != 0.f) {
      auto rng = lane.rng(f.seed, chain_base, static_cast<std::uint64_t>(k) + 1);
      rng.normals(d, [&](int j, fpack z) {
        const fpack xj = lane.get(f.x, d, j), m = ds_fma(ux, xj, um * lane.get(f.model, d, j));
        lane.put(f.x, d, j, ds_fma(cn, z, ds_fma(cm, m, cx * xj)));
      });
    } else {
      for (int j = 0; j < d; ++j) {
        const fpack xj = lane.get(f.x, d, j), m = ds_fma(ux, xj, um * lane.get(f.model, d, j));
        lane.put(f.x, d, j, ds_fma(cm, m, cx * xj));
      }
    }
  });
}

void run_plan_initial(const kernels::plan_initial_functor& f, std::int64_t n) {
  const std::uint64_t chain_base = f.state->chain_base;
  const fpack scale(f.scale);
  for_each_pack(n, [&](std::int64_t p) {
    const std::int64_t i0 = p * lanes;
    const pack_lane lane{i0, static_cast<int>(std::min<std::int64_t>(lanes, n - i0))};
    auto rng = lane.rng(f.seed, chain_base, 0);
    rng.normals(f.d, [&](int j, fpack z) { lane.put(f.x, f.d, j, scale * z); });  // as diffusion_chain's draw
  });
}

// The tell of a sampling_plan (kernels/plan.cuh, plan_tell_functor) over packs of rows, with the shared step
// operations of kernels/diffusion.cuh and kernels/langevin.cuh on this target's packs, in the fused chains' order
// and with their random streams, so that a plan answered with the mixture's own outputs reproduces the fused run.
void run_plan_tell(const kernels::plan_tell_functor& f, std::int64_t n) {
  const kernels::plan_entry& e = f.e;
  const kernels::plan_buffers& b = f.b;
  const int d = b.d;
  const std::uint64_t chain_base = f.state->chain_base;
  const fpack ux(e.ux), um(e.um), gamma(e.gamma), noise(e.noise);
  for_each_pack(n, [&](std::int64_t p) {
    const std::int64_t i0 = p * lanes;
    const pack_lane lane{i0, static_cast<int>(std::min<std::int64_t>(lanes, n - i0))};
    auto quantity = [&](int j) {
      const fpack q = lane.get(e.at_point ? b.point : b.x, d, j);
      return ds_fma(ux, q, um * lane.get(b.answer, d, j));
    };
    auto rng = lane.rng(f.seed, chain_base, e.rng_step);
    switch (e.op) {
      case kernels::plan_op_step:
        if (e.st.cn != 0.f) {
          rng.normals(d, [&](int j, fpack z) {
            lane.put(b.x, d, j, kernels::diffusion_update(e.st, lane.get(b.x, d, j), quantity(j), z));
          });
        } else {
          for (int j = 0; j < d; ++j)
            lane.put(b.x, d, j, kernels::diffusion_update(e.st, lane.get(b.x, d, j), quantity(j)));
        }
        if (e.st.flags & kernels::step_accumulate) {
          rng.normals(d, [&](int j, fpack z) {
            fpack x = lane.get(b.x, d, j), sum = lane.get(b.sum, d, j);
            kernels::diffusion_accumulate(e.st, x, sum, z);
            lane.put(b.x, d, j, x);
            lane.put(b.sum, d, j, sum);
          });
        }
        break;
      case kernels::plan_op_heun_predict:
        for (int j = 0; j < d; ++j) {
          const fpack r = quantity(j);
          lane.put(b.m, d, j, r);
          lane.put(b.point, d, j, kernels::heun_predictor(e.st, lane.get(b.x, d, j), r));
        }
        break;
      case kernels::plan_op_heun_correct:
        for (int j = 0; j < d; ++j)
          lane.put(b.x, d, j,
                   kernels::heun_corrector(e.st, lane.get(b.x, d, j), lane.get(b.m, d, j), lane.get(b.point, d, j),
                                           quantity(j)));
        break;
      case kernels::plan_op_jump:
        for (int j = 0; j < d; ++j) lane.put(b.x, d, j, quantity(j));
        break;
      case kernels::plan_op_ula:
        rng.normals(d, [&](int j, fpack z) {
          lane.put(b.x, d, j, kernels::langevin_update(lane.get(b.x, d, j), gamma, quantity(j), noise, z));
        });
        break;
      case kernels::plan_op_tamed: {
        fpack norm2(0.f);
        for (int j = 0; j < d; ++j) {
          const fpack g = quantity(j);
          norm2 = norm2 + g * g;
        }
        const fpack drift = kernels::tamed_drift<fpack>(e.gamma, norm2);
        rng.normals(d, [&](int j, fpack z) {
          lane.put(b.x, d, j, kernels::langevin_update(lane.get(b.x, d, j), drift, quantity(j), noise, z));
        });
        break;
      }
      case kernels::plan_op_mala_start:
      case kernels::plan_op_mala_accept: {
        // kernels::mala_tell on a pack of rows: langevin_chain's MALA operations lane by lane, its accept as a
        // select (per-row values through get/put with d = 1).
        if (e.op == kernels::plan_op_mala_start) {
          for (int j = 0; j < d; ++j) lane.put(b.m, d, j, quantity(j));
          lane.put(b.log_p, 1, 0, lane.get(b.log_density, 1, 0));
          for (int l = 0; l < lane.valid; ++l) b.accepted[i0 + l] = 0;
        } else {
          fpack backward(0.f);
          for (int j = 0; j < d; ++j) {
            const fpack r = kernels::mala_residual<fpack>(lane.get(b.x, d, j), lane.get(b.point, d, j), e.gamma,
                                                          quantity(j));
            backward = backward + r * r;
          }
          const fpack logp_new = lane.get(b.log_density, 1, 0), logp = lane.get(b.log_p, 1, 0);
          const fpack log_alpha = kernels::mala_log_alpha<fpack>(logp_new, logp, backward,
                                                                 lane.get(b.forward, 1, 0), e.gamma);
          const mpack accept = ds_log(lane.get(b.uniform, 1, 0)) < log_alpha;
          for (int j = 0; j < d; ++j) {
            lane.put(b.m, d, j, ds_select(accept, quantity(j), lane.get(b.m, d, j)));
            lane.put(b.x, d, j, ds_select(accept, lane.get(b.point, d, j), lane.get(b.x, d, j)));
          }
          lane.put(b.log_p, 1, 0, ds_select(accept, logp_new, logp));
          for (int l = 0; l < lane.valid; ++l) b.accepted[i0 + l] -= accept.m[l];
        }
        if (e.next_point) {
          fpack forward(0.f);
          rng.normals(d, [&](int j, fpack z) {
            lane.put(b.point, d, j,
                     kernels::langevin_update(lane.get(b.x, d, j), gamma, lane.get(b.m, d, j), noise, z));
            forward = forward + z * z;
          });
          lane.put(b.forward, 1, 0, forward);
          lane.put(b.uniform, 1, 0, rng.uniform());
        }
        return;
      }
      default: break;
    }
    if (e.next_point)
      for (int j = 0; j < d; ++j)
        lane.put(b.point, d, j, kernels::diffusion_point(e.next, lane.get(b.x, d, j), lane.get(b.sum, d, j)));
  });
  f.state->step = f.next_index;
}

void run_langevin(const kernels::langevin_params& p, float* x, std::int64_t d, float* state) {
  run(kernels::langevin_chain_body{p}, x, p.n, d, state);
}

void run_diffusion(const kernels::diffusion_params& p, float* x, std::int64_t d, float* state) {
  run(kernels::diffusion_chain_body{p}, x, p.n, d, state);
}

}  // namespace diffsample::cpu::DS_SIMD_NS
