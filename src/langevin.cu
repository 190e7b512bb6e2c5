// Langevin launchers: validation, then one fused launch running every step of every chain (register path for a
// short compile-time list of dimensions, workspace path otherwise).
#include "kernels/langevin.cuh"
#include "src/cuda_check.hpp"
#include "src/launch.hpp"
#include "src/mixture_storage.hpp"
#include "src/validate.hpp"
#include <diffsample/error.hpp>
#include <diffsample/langevin.hpp>

namespace diffsample {

const char* to_string(langevin_method m) noexcept {
  switch (m) {
    case langevin_method::ula: return "ula";
    case langevin_method::mala: return "mala";
    case langevin_method::tamed_ula: return "tamed_ula";
  }
  return "unknown";
}

langevin_method parse_langevin_method(const std::string& name) {
  if (name == "ula") return langevin_method::ula;
  if (name == "mala") return langevin_method::mala;
  if (name == "tamed_ula" || name == "tamed") return langevin_method::tamed_ula;
  throw invalid_argument("method: unknown Langevin method '" + name + "' (expected ula, mala or tamed_ula)");
}

namespace {

// The dimensions whose chains keep their state in registers. Short on purpose: each entry is two kernels
// (CUDA and CPU) to compile.
constexpr int register_dims[] = {1, 2, 4, 8, 10, 16, 32};

bool is_register_dim(std::int64_t d) {
  for (int r : register_dims)
    if (r == d) return true;
  return false;
}

template <int D>
void launch_register(executor where, const kernels::langevin_params& p, float* x, cudaStream_t stream) {
  // Register-heavy chains: smaller blocks leave the compiler room and keep occupancy up.
  using functor = kernels::register_chain_functor<D, kernels::langevin_chain_body>;
  kernels::for_each_index<128>(where, p.n, functor{{p}, x}, stream);
}

void dispatch_register(std::int64_t d, executor where, const kernels::langevin_params& p, float* x,
                       cudaStream_t stream) {
  switch (d) {
    case 1: return launch_register<1>(where, p, x, stream);
    case 2: return launch_register<2>(where, p, x, stream);
    case 4: return launch_register<4>(where, p, x, stream);
    case 8: return launch_register<8>(where, p, x, stream);
    case 10: return launch_register<10>(where, p, x, stream);
    case 16: return launch_register<16>(where, p, x, stream);
    case 32: return launch_register<32>(where, p, x, stream);
    default: DIFFSAMPLE_EXPECTS(false, "internal: dimension " << d << " is not in the register-path list");
  }
}

void validate(const gaussian_mixture& mixture, std::int64_t n, const langevin_options& o) {
  detail::check_count("n", n, mixture.dim());
  detail::check_positive("options.step_size", o.step_size);
  DIFFSAMPLE_EXPECTS(o.steps >= 0, "options.steps: must be >= 0, got " << o.steps);
  DIFFSAMPLE_EXPECTS(o.method == langevin_method::ula || o.method == langevin_method::mala ||
                         o.method == langevin_method::tamed_ula,
                     "options.method: invalid value " << static_cast<int>(o.method));
  detail::check_channel("options.target", o.target);
  DIFFSAMPLE_EXPECTS(o.record_every >= 0, "options.record_every: must be >= 0, got " << o.record_every);
  DIFFSAMPLE_EXPECTS(o.first_step + static_cast<std::uint64_t>(o.steps) <= kernels::philox_max_step,
                     "options.first_step: first_step + steps = " << o.first_step + o.steps
                                                                 << " exceeds the random stream's 2^30 steps");
  DIFFSAMPLE_EXPECTS(o.first_chain <= (std::uint64_t(1) << 62),
                     "options.first_chain: must be < 2^62, got " << o.first_chain);
}

}  // namespace

std::size_t langevin_workspace_bytes(const gaussian_mixture& mixture, std::int64_t n, const langevin_options& options) {
  validate(mixture, n, options);
  if (is_register_dim(mixture.dim())) return 0;
  return 4 * static_cast<std::size_t>(n) * static_cast<std::size_t>(mixture.dim()) * sizeof(float);
}

langevin_report langevin(const gaussian_mixture& mixture, float* x, std::int64_t n, const langevin_options& o,
                         langevin_outputs outputs, execution exec, void* workspace, std::size_t workspace_bytes) {
  validate(mixture, n, o);
  const std::int64_t d = mixture.dim();
  const executor where = detail::resolve_executor(exec.kind, x);
  detail::check_buffer("x", x, n * d, sizeof(float), where);
  const std::int64_t records = o.record_every > 0 ? o.steps / o.record_every : 0;
  if (outputs.trajectory != nullptr) {
    DIFFSAMPLE_EXPECTS(o.record_every > 0, "outputs.trajectory: given but options.record_every is 0");
    detail::check_count("trajectory records x n", records * n, d);
    detail::check_buffer("outputs.trajectory", outputs.trajectory, records * n * d, sizeof(float), where);
  }
  if (outputs.accepted != nullptr)
    detail::check_buffer("outputs.accepted", outputs.accepted, n, sizeof(std::int64_t), where);

  langevin_report report{where, is_register_dim(d)};
  if (n == 0) return report;
  kernels::langevin_params p{mixture.storage().view(where),
                             float(o.target.a),
                             float(o.target.s),
                             float(o.step_size),
                             static_cast<int>(o.method),
                             o.steps,
                             o.seed,
                             o.first_chain,
                             o.first_step,
                             n,
                             o.record_every > 0 ? o.record_every : 1,
                             outputs.trajectory,
                             outputs.accepted};
  if (report.register_path) {
    dispatch_register(d, where, p, x, exec.stream);
    return report;
  }
  const std::size_t need = langevin_workspace_bytes(mixture, n, o);
  float* ws = static_cast<float*>(workspace);
  std::unique_ptr<detail::scratch> owned;
  if (workspace != nullptr) {
    DIFFSAMPLE_EXPECTS(workspace_bytes >= need,
                       "workspace_bytes: " << workspace_bytes << " given, " << need << " needed");
    detail::check_buffer("workspace", workspace, need / sizeof(float), sizeof(float), where);
  } else {
    owned = std::make_unique<detail::scratch>(need, where, exec.stream);
    ws = static_cast<float*>(owned->data());
  }
  kernels::for_each_index(where, n, kernels::workspace_chain_functor<kernels::langevin_chain_body>{
                              {p}, x, ws, n, int(d), where == executor::cuda},
                          exec.stream);
  return report;
}

}  // namespace diffsample
