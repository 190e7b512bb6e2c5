// Options a method does not read (README: "Options a method does not read"): for every method (diffusion sampler,
// guided sampler, resampling scheme, evaluation path, plan) and every field of its options struct that it does not
// read, a non-default value is refused before anything is written, with a message naming the field and the method;
// the defaults pass, and a method that reads the field takes the same value. Table-driven: each field lists the
// methods that read it, every other method must refuse it.
#include <gtest/gtest.h>

#include <diffsample/diffsample.h>
#include <diffsample/diffsample.hpp>

#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "src/option_readers.hpp"

using namespace diffsample;

namespace {

const execution cpu{executor::cpu};

/// f() must throw invalid_argument naming @p field and "not read by" @p method; returns the message.
std::string expect_unread(const std::function<void()>& f, const std::string& field, const std::string& method) {
  try {
    f();
  } catch (const invalid_argument& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind(field + ": not read by " + method, 0), 0u) << "message: " << m;
    return m;
  }
  ADD_FAILURE() << field << " not refused by " << method;
  return {};
}

/// f() must not refuse the field as unread (it may refuse it for another reason, such as a schedule the sampler
/// cannot run).
void expect_read(const std::function<void()>& f, const std::string& field, const std::string& method) {
  try {
    f();
  } catch (const invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).find("not read by"), std::string::npos) << field << " / " << method << ": " << e.what();
  }
}

gaussian_mixture prior() { return gaussian_mixture(2, {1, 2}, {-1, 0, 1, 0.5}, {0.3, 0.5}); }

guided_problems problems() {
  guided_problems p;
  p.d_y = 1;
  p.A = {1.0, 0.5};
  p.y = {0.3};
  p.sigma_y = {0.5};
  return p;
}

template <class O>
struct field_row {
  std::string field;                 // the field the message names
  std::function<void(O&)> set;       // sets a non-default value
  std::set<std::string> readers;     // the methods that read it
};

const std::vector<guided_sampler> guided_samplers = {
    guided_sampler::smc,    guided_sampler::dps,  guided_sampler::pigdm, guided_sampler::diffpir,
    guided_sampler::skrock, guided_sampler::tmpd, guided_sampler::ddrm,  guided_sampler::dcps};

guided_options guided_base(guided_sampler s) {
  guided_options o;
  o.sampler = s;
  o.particles = 8;
  o.steps = 4;
  o.seed = 5;
  return o;
}

std::vector<field_row<guided_options>> guided_rows() {
  const std::set<std::string> all_but_skrock = {"smc", "dps", "pigdm", "diffpir", "tmpd", "ddrm", "dcps"};
  const std::set<std::string> kernel = {"smc", "dps", "pigdm", "tmpd", "dcps"};
  const std::set<std::string> guided = {"dps", "pigdm", "tmpd"};
  using o_t = guided_options&;
  return {
      {"options.schedule.beta_min", [](o_t o) { o.schedule = noise_schedule::vp_linear(0.2, 20.0); }, all_but_skrock},
      {"options.grid", [](o_t o) { o.grid = guided_grid::sqrt_alpha_bar; }, all_but_skrock},
      // ddim with a DDIM eta; eta alone is DDIM's stochasticity, which the DDPM kernel (ddim false) does not read.
      {"options.ddim", [](o_t o) { o.ddim = true, o.eta = 0.5; }, kernel},
      {"options.eta", [](o_t o) { o.eta = 0.5; }, {}},
      {"options.potential_spread", [](o_t o) { o.potential_spread = 2.0; }, {"smc"}},
      // linear, which guided_report names for the other samplers, passes: moment and twisted do not.
      {"options.potentials", [](o_t o) { o.potentials = guided_potentials::twisted; }, {"smc"}},
      {"options.resampling.scheme", [](o_t o) { o.resampling.scheme = resampling_scheme::stratified; }, {"smc"}},
      {"options.resampling.ess_threshold", [](o_t o) { o.resampling.ess_threshold = 0.7; }, {"smc"}},
      {"options.resampling.metropolis_steps", [](o_t o) { o.resampling.metropolis_steps = 9; }, {}},
      {"options.resampling.seed", [](o_t o) { o.resampling.seed = 3; }, {}},
      {"options.resampling.step", [](o_t o) { o.resampling.step = 2; }, {}},
      {"options.start_correction", [](o_t o) { o.start_correction = true; }, {"smc"}},
      {"options.multistep_kernel", [](o_t o) { o.multistep_kernel = true; }, {"smc"}},
      {"options.final_resample", [](o_t o) { o.final_resample = false; }, {"smc"}},
      {"options.final_moves", [](o_t o) { o.final_moves = 2; }, {"smc"}},  // 0 (none) passes
      {"options.final_move_step", [](o_t o) { o.final_move_step = 0.5; }, {"smc"}},
      {"options.final_move_curvature", [](o_t o) { o.final_move_curvature = 2.0; }, {"smc"}},
      {"options.guidance_scale", [](o_t o) { o.guidance_scale = 0.5; }, guided},
      {"options.operator_path", [](o_t o) { o.operator_path = mixture_path::direct; }, guided},
      {"options.dps_step", [](o_t o) { o.dps_step = dps_step_form::normalised; }, {"dps"}},
      {"options.diffpir_zeta", [](o_t o) { o.diffpir_zeta = 0.2; }, {"diffpir"}},
      {"options.diffpir_lambda", [](o_t o) { o.diffpir_lambda = 6.0; }, {"diffpir"}},
      {"options.skrock_stages", [](o_t o) { o.skrock_stages = 5; }, {"skrock"}},
      {"options.skrock_eta", [](o_t o) { o.skrock_eta = 0.1; }, {"skrock"}},
      {"options.skrock_step_fraction", [](o_t o) { o.skrock_step_fraction = 0.01; }, {"skrock"}},
      {"options.skrock_lipschitz", [](o_t o) { o.skrock_lipschitz = 3.0; }, {"skrock"}},
      {"options.ddrm_eta", [](o_t o) { o.ddrm_eta = 0.5; }, {"ddrm"}},
      {"options.ddrm_eta_b", [](o_t o) { o.ddrm_eta_b = 0.5; }, {"ddrm"}},
      {"options.dcps_blocks", [](o_t o) { o.dcps_blocks = 2; }, {"dcps"}},
      {"options.dcps_langevin_steps", [](o_t o) { o.dcps_langevin_steps = 3; }, {"dcps"}},
      {"options.dcps_langevin_step", [](o_t o) { o.dcps_langevin_step = 2e-3; }, {"dcps"}},
      {"options.dcps_gradient_steps", [](o_t o) { o.dcps_gradient_steps = 1; }, {"dcps"}},
      {"options.dcps_learning_rate", [](o_t o) { o.dcps_learning_rate = 0.2; }, {"dcps"}},
      {"options.dcps_bridge_variance", [](o_t o) { o.dcps_bridge_variance = true; }, {"dcps"}},
      {"options.dcps_absolute_step", [](o_t o) { o.dcps_absolute_step = true; }, {"dcps"}},
  };
}

}  // namespace

// Every guided sampler against every field of guided_options it does not read: refused by guided_sample() (outputs
// untouched), guided_workspace_bytes(), guided_times() and the sampler's ask/tell plan; the defaults run; the samplers
// that read the field take the value.
TEST(UnreadOptions, GuidedSamplersRefuseTheFieldsTheyDoNotRead) {
  const gaussian_mixture m = prior();
  const guided_problems pr = problems();
  std::vector<float> samples(8 * 2, -7.f);
  guided_outputs out;
  out.samples = samples.data();
  for (const guided_sampler s : guided_samplers) {
    const std::string name = to_string(s);
    guided_options base = guided_base(s);
    if (s == guided_sampler::skrock) base.skrock_lipschitz = 4.0;  // a SKRock plan needs one
    // The defaults pass, run and plan.
    EXPECT_NO_THROW(guided_sample(m, out, pr, base, cpu)) << name;
    EXPECT_NO_THROW(sampling_plan::guided(2, pr, base,
                                          s == guided_sampler::skrock ? model_output::score : model_output::denoiser,
                                          cpu))
        << name;
    for (const auto& row : guided_rows()) {
      guided_options o = guided_base(s);
      row.set(o);
      if (row.readers.count(name) != 0) {
        expect_read([&] { (void)guided_workspace_bytes(m, pr, o); }, row.field, name);
        continue;
      }
      // The DDPM kernel's eta names that kernel; every other refusal names the sampler.
      const bool kernel_eta = row.field == "options.eta" && guided_rows()[2].readers.count(name) != 0;
      const std::string method = kernel_eta ? "sampler " + name + "'s DDPM kernel"
                                 : row.field == "options.resampling.metropolis_steps" && s == guided_sampler::smc
                                     ? "resampling scheme systematic"
                                     : "sampler " + name;
      std::fill(samples.begin(), samples.end(), -7.f);
      expect_unread([&] { guided_sample(m, out, pr, o, cpu); }, row.field, method);
      for (float v : samples) ASSERT_EQ(v, -7.f) << row.field << " / " << name << ": an output was written";
      expect_unread([&] { (void)guided_workspace_bytes(m, pr, o); }, row.field, method);
      expect_unread([&] { (void)guided_times(m, pr, o); }, row.field, method);
      expect_unread([&] { (void)sampling_plan::guided(2, pr, o, model_output::denoiser, cpu); }, row.field, method);
    }
  }
}

// A plan without final moves (-1, automatic, resolves to none there) reads neither setting of the moves, while
// guided_sample() reads both; a plan with moves reads both, whatever its model answers. A DPS or Pi-GDM plan reads operator_path as guided_sample() does (it runs the path
// guided_sample() resolves: SamplingPlan.GuidedPlansRunTheOperatorPathGuidedSampleRuns).
TEST(UnreadOptions, GuidedPlansRefuseTheFieldsOnlyTheFusedRunReads) {
  const gaussian_mixture m = prior();
  const guided_problems pr = problems();
  struct plan_row {
    std::string field;
    std::function<void(guided_options&)> set;
  };
  const std::vector<plan_row> rows = {
      {"options.final_move_step", [](guided_options& o) { o.final_move_step = 0.5; }},
      {"options.final_move_curvature", [](guided_options& o) { o.final_move_curvature = 2.0; }},
  };
  for (const plan_row& r : rows)
    for (const std::int64_t moves : {std::int64_t(-1), std::int64_t(0)}) {
      guided_options o = guided_base(guided_sampler::smc);
      o.final_moves = moves;
      r.set(o);
      expect_unread([&] { (void)sampling_plan::guided(2, pr, o, model_output::score, cpu); }, r.field,
                    "a guided plan (sampler smc) without final moves");
      if (moves < 0) expect_read([&] { (void)guided_workspace_bytes(m, pr, o); }, r.field, "smc");
    }
  // A count below -1 is named as such, with or without a move setting beside it (with one it was named as that
  // setting left unread "without final moves (options.final_moves -2)").
  for (const plan_row& r : rows) {
    guided_options o = guided_base(guided_sampler::smc);
    o.final_moves = -2;
    r.set(o);
    try {
      (void)sampling_plan::guided(2, pr, o, model_output::score, cpu);
      ADD_FAILURE() << "final_moves = -2 accepted with " << r.field;
    } catch (const invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).rfind("options.final_moves: must be -1 (automatic) or >= 0, got -2", 0), 0u)
          << e.what();
    }
  }
  guided_options moved = guided_base(guided_sampler::smc);
  moved.final_moves = 3;
  moved.final_move_step = 0.5;
  moved.final_move_curvature = 2.0;
  for (const model_output out : {model_output::score, model_output::denoiser, model_output::eps})
    EXPECT_NO_THROW((void)sampling_plan::guided(2, pr, moved, out, cpu)) << to_string(out);
  // The values a run reports for a field it does not read pass: a plan's final_moves = 0, another sampler's linear
  // potentials and final_moves = 0.
  guided_options none = guided_base(guided_sampler::smc);
  none.final_moves = 0;
  EXPECT_NO_THROW((void)sampling_plan::guided(2, pr, none, model_output::denoiser, cpu));
  for (const guided_sampler s : guided_samplers) {
    guided_options g = guided_base(s);
    g.potentials = guided_potentials::linear;
    g.final_moves = 0;
    EXPECT_NO_THROW((void)guided_workspace_bytes(m, pr, g)) << to_string(s);
  }
  // final_move_step with the final moves off (final_moves = 0): the run reads no step.
  guided_options o = guided_base(guided_sampler::smc);
  o.final_moves = 0;
  o.final_move_step = 0.5;
  expect_unread([&] { (void)guided_workspace_bytes(m, pr, o); }, "options.final_move_step", "sampler smc with");
  // The C ABI: the same refusal, DS_INVALID_ARGUMENT with the message.
  ds_mixture* cm = nullptr;
  const double w[2] = {1, 2}, mu[4] = {-1, 0, 1, 0.5}, v[2] = {0.3, 0.5};
  ASSERT_EQ(ds_mixture_create(2, 2, w, mu, v, 2, &cm), DS_SUCCESS);
  ds_guided_problems cp;
  ASSERT_EQ(ds_guided_problems_init(&cp, sizeof cp), DS_SUCCESS);
  const double A[2] = {1.0, 0.5}, y[1] = {0.3}, sy[1] = {0.5};
  cp.d_y = 1;
  cp.A = A;
  cp.A_count = 2;
  cp.y = y;
  cp.sigma_y = sy;
  cp.sigma_y_count = 1;
  ds_guided_options co;
  ASSERT_EQ(ds_guided_options_init(&co, sizeof co), DS_SUCCESS);
  co.sampler = DS_GUIDED_DPS;
  co.particles = 8;
  co.steps = 4;
  co.diffpir_zeta = 0.3;
  std::vector<float> samples(16, -7.f);
  ds_guided_outputs cout_;
  ASSERT_EQ(ds_guided_outputs_init(&cout_, sizeof cout_), DS_SUCCESS);
  cout_.samples = samples.data();
  const ds_execution ccpu{DS_EXECUTOR_CPU, nullptr};
  EXPECT_EQ(ds_guided_sample(cm, &cp, &co, &cout_, ccpu, nullptr, 0, nullptr), DS_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ds_last_error()).rfind("options.diffpir_zeta: not read by sampler dps", 0), 0u)
      << ds_last_error();
  for (float s : samples) ASSERT_EQ(s, -7.f);
  co.diffpir_zeta = 0.1;
  EXPECT_EQ(ds_guided_sample(cm, &cp, &co, &cout_, ccpu, nullptr, 0, nullptr), DS_SUCCESS) << ds_last_error();
  ds_mixture_destroy(cm);
}

namespace {

const std::vector<diffusion_sampler> diffusion_samplers = {
    diffusion_sampler::ddpm,     diffusion_sampler::ddim,     diffusion_sampler::reverse_sde,
    diffusion_sampler::ode_euler, diffusion_sampler::ode_heun, diffusion_sampler::stochastic_localization,
    diffusion_sampler::walk_jump, diffusion_sampler::sequential_measurements};

diffusion_options diffusion_base(diffusion_sampler s) {
  diffusion_options o;
  o.sampler = s;
  o.steps = 4;
  if (s == diffusion_sampler::stochastic_localization) o.schedule = noise_schedule::stochastic_localization();
  return o;
}

}  // namespace

// Every diffusion sampler against every field of diffusion_options it does not read: refused by diffusion() (x
// untouched), diffusion_workspace_bytes(), diffusion_plan and sampling_plan::diffusion; the defaults run.
TEST(UnreadOptions, DiffusionSamplersRefuseTheFieldsTheyDoNotRead) {
  const gaussian_mixture m = prior();
  const std::set<std::string> schedule = {"ddpm", "ddim", "reverse_sde", "ode_euler", "ode_heun",
                                          "stochastic_localization"};
  const std::set<std::string> langevin = {"walk_jump", "sequential_measurements"};
  using o_t = diffusion_options&;
  const std::vector<field_row<diffusion_options>> rows = {
      {"options.schedule.kind", [](o_t o) { o.schedule = noise_schedule::vp_cosine(); }, schedule},
      {"options.schedule.t_start", [](o_t o) { o.schedule.t_start = 0.9; }, schedule},
      {"options.eta", [](o_t o) { o.eta = 0.5; }, {"ddim"}},
      {"options.sigma", [](o_t o) { o.sigma = 0.8; }, langevin},
      {"options.step_size", [](o_t o) { o.step_size = 0.05; }, langevin},
      {"options.measurements", [](o_t o) { o.measurements = 2; }, {"sequential_measurements"}},
  };
  std::vector<float> x(3 * 2, -7.f);
  for (const diffusion_sampler s : diffusion_samplers) {
    const std::string name = to_string(s);
    const bool plannable = s != diffusion_sampler::ode_heun && s != diffusion_sampler::sequential_measurements;
    diffusion_options base = diffusion_base(s);
    EXPECT_NO_THROW(diffusion(m, x.data(), {}, 3, base, cpu)) << name;
    if (plannable) {
      EXPECT_NO_THROW(diffusion_plan(3, 2, base, model_output::denoiser, cpu)) << name;
    }
    // final_denoise = true is what stochastic_localization, walk_jump and SMS do anyway: every sampler takes it.
    base.final_denoise = true;
    EXPECT_NO_THROW(diffusion(m, x.data(), {}, 3, base, cpu)) << name;
    for (const auto& row : rows) {
      diffusion_options o = diffusion_base(s);
      row.set(o);
      if (row.readers.count(name) != 0) {
        expect_read([&] { (void)diffusion_workspace_bytes(m, 3, o); }, row.field, name);
        continue;
      }
      const std::string method = "sampler " + name;
      std::fill(x.begin(), x.end(), -7.f);
      expect_unread([&] { diffusion(m, x.data(), {}, 3, o, cpu); }, row.field, method);
      for (float v : x) ASSERT_EQ(v, -7.f) << row.field << " / " << name << ": x was written";
      expect_unread([&] { (void)diffusion_workspace_bytes(m, 3, o); }, row.field, method);
      expect_unread([&] { (void)sampling_plan::diffusion(3, 2, o, model_output::denoiser, cpu); }, row.field, method);
      if (plannable)
        expect_unread([&] { diffusion_plan(3, 2, o, model_output::denoiser, cpu); }, row.field, method);
    }
  }
  // The C ABI: DS_INVALID_ARGUMENT with the message.
  ds_mixture* cm = nullptr;
  const double w[2] = {1, 2}, mu[4] = {-1, 0, 1, 0.5}, v[2] = {0.3, 0.5};
  ASSERT_EQ(ds_mixture_create(2, 2, w, mu, v, 2, &cm), DS_SUCCESS);
  ds_diffusion_options co;
  ASSERT_EQ(ds_diffusion_options_init(&co, sizeof co), DS_SUCCESS);
  co.steps = 4;
  co.measurements = 2;
  std::fill(x.begin(), x.end(), -7.f);
  EXPECT_EQ(ds_diffusion(cm, x.data(), 3, &co, nullptr, {DS_EXECUTOR_CPU, nullptr}, nullptr, 0, nullptr),
            DS_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ds_last_error()).rfind("options.measurements: not read by sampler ddpm", 0), 0u)
      << ds_last_error();
  for (float s : x) ASSERT_EQ(s, -7.f);
  ds_mixture_destroy(cm);
}

// Langevin: every method reads every field of langevin_options, so none is refused as unread.
TEST(UnreadOptions, LangevinMethodsReadEveryField) {
  const gaussian_mixture m = prior();
  for (const langevin_method method : {langevin_method::ula, langevin_method::mala, langevin_method::tamed_ula}) {
    langevin_options o;
    o.method = method;
    o.steps = 3;
    o.step_size = 0.02;
    o.target = {0.9, 0.1};
    o.seed = 4;
    o.first_chain = 2;
    o.first_step = 5;
    std::vector<float> x(3 * 2, 0.f);
    EXPECT_NO_THROW(langevin(m, x.data(), {}, 3, o, cpu)) << to_string(method);
  }
}

// resample(): metropolis_steps is read by the metropolis scheme only.
TEST(UnreadOptions, ResampleRefusesMetropolisStepsWithAnotherScheme) {
  std::vector<float> lw = {0.f, -1.f, -2.f, 0.5f};
  for (int k = 0; k <= static_cast<int>(resampling_scheme::rejection); ++k) {
    const auto scheme = static_cast<resampling_scheme>(k);
    resampling_options o;
    o.scheme = scheme;
    std::vector<std::int32_t> ancestors(4, -9);
    particle_outputs out;
    out.ancestors = ancestors.data();
    EXPECT_NO_THROW(resample(out, 1, 4, lw.data(), o, cpu)) << to_string(scheme);
    o.metropolis_steps = 9;
    std::fill(ancestors.begin(), ancestors.end(), -9);
    if (scheme == resampling_scheme::metropolis) {
      EXPECT_NO_THROW(resample(out, 1, 4, lw.data(), o, cpu));
      continue;
    }
    expect_unread([&] { resample(out, 1, 4, lw.data(), o, cpu); }, "options.metropolis_steps",
                  std::string("scheme ") + to_string(scheme));
    for (std::int32_t a : ancestors) ASSERT_EQ(a, -9);
  }
  ds_resampling_options co;
  ASSERT_EQ(ds_resampling_options_init(&co, sizeof co), DS_SUCCESS);
  co.metropolis_steps = 9;
  std::vector<std::int32_t> ancestors(4, -9);
  EXPECT_EQ(ds_resample(lw.data(), 1, 4, &co, ancestors.data(), nullptr, nullptr, {DS_EXECUTOR_CPU, nullptr}, nullptr,
                        0, nullptr),
            DS_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ds_last_error()).rfind("options.metropolis_steps: not read by scheme systematic", 0), 0u)
      << ds_last_error();
}

// evaluate() and denoiser_jvp() on the direct path read none of the gemm path's settings; a negative chunk or block
// is refused on every path (it passed on the direct path).
TEST(UnreadOptions, DirectPathRefusesTheGemmSettings) {
  const gaussian_mixture m(2, {1, 2}, {-1, 0, 1, 0.5}, {0.3, 0.5});
  std::vector<float> x = {0.1f, 0.2f, -0.3f, 0.4f}, out(4, -7.f);
  using o_t = evaluate_options&;
  const std::vector<std::pair<std::string, std::function<void(o_t)>>> rows = {
      {"options.allow_tf32", [](o_t o) { o.allow_tf32 = true; }},
      {"options.component_chunk", [](o_t o) { o.component_chunk = 64; }},
      {"options.point_block", [](o_t o) { o.point_block = 32; }},
  };
  for (const auto& [field, set] : rows) {
    evaluate_options o;
    o.path = mixture_path::direct;
    set(o);
    expect_unread([&] { m.evaluate(out.data(), 2, x.data(), {1, 0.5}, quantity::score, o, cpu); }, field,
                  "path direct");
    expect_unread([&] { m.denoiser_jvp(out.data(), 2, x.data(), x.data(), {1, 0.5}, o, cpu); }, field, "path direct");
    expect_unread([&] { (void)m.evaluate_workspace_bytes(2, quantity::score, o, cpu); }, field, "path direct");
    for (float v : out) ASSERT_EQ(v, -7.f);
    o.path = mixture_path::automatic;  // the gemm path may run: the settings are read
    EXPECT_NO_THROW(m.evaluate(out.data(), 2, x.data(), {1, 0.5}, quantity::score, o, cpu)) << field;
    std::fill(out.begin(), out.end(), -7.f);
  }
  evaluate_options o;
  o.path = mixture_path::direct;
  EXPECT_NO_THROW(m.evaluate(out.data(), 2, x.data(), {1, 0.5}, quantity::score, o, cpu));
  std::fill(out.begin(), out.end(), -7.f);
  for (const mixture_path path : {mixture_path::direct, mixture_path::automatic}) {
    o.path = path;
    o.component_chunk = -1;
    try {
      m.evaluate(out.data(), 2, x.data(), {1, 0.5}, quantity::score, o, cpu);
      ADD_FAILURE() << "component_chunk = -1 passed on path " << to_string(path);
    } catch (const invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("options.component_chunk = -1"), std::string::npos) << e.what();
    }
    for (float v : out) ASSERT_EQ(v, -7.f);
  }
  ds_mixture* cm = nullptr;
  const double w[2] = {1, 2}, mu[4] = {-1, 0, 1, 0.5}, v[2] = {0.3, 0.5};
  ASSERT_EQ(ds_mixture_create(2, 2, w, mu, v, 2, &cm), DS_SUCCESS);
  ds_evaluate_options co;
  ASSERT_EQ(ds_evaluate_options_init(&co, sizeof co), DS_SUCCESS);
  co.path = DS_MIXTURE_PATH_DIRECT;
  co.point_block = 32;
  EXPECT_EQ(ds_mixture_evaluate_with(cm, out.data(), 2, x.data(), {1, 0.5}, DS_SCORE, &co,
                                     {DS_EXECUTOR_CPU, nullptr}, nullptr, 0, nullptr, nullptr),
            DS_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ds_last_error()).rfind("options.point_block: not read by path direct", 0), 0u)
      << ds_last_error();
  ds_mixture_destroy(cm);
}

namespace {

// The number of fields of an aggregate: the most initializers T{...} takes, each a value that converts to any type.
struct any_field {
  template <class T>
  operator T() const;  // only named in unevaluated contexts
};

template <class T, class... A>
auto braces(int) -> decltype(T{std::declval<A>()...}, std::true_type{});
template <class T, class... A>
std::false_type braces(...);

template <class T, std::size_t... I>
constexpr bool takes(std::index_sequence<I...>) {
  return decltype(braces<T, decltype((void)I, any_field{})...>(0))::value;
}

template <class T, std::size_t N = 0>
constexpr std::size_t field_count() {
  if constexpr (takes<T>(std::make_index_sequence<N + 1>{}))
    return field_count<T, N + 1>();
  else
    return N;
}

}  // namespace

// Every field of each options struct has one row in the table of which method reads it (src/option_readers.hpp), so
// that a field added to a struct cannot miss the rule unnoticed: the rows (a nested struct's fields by their
// member's name, resampling.scheme) are counted against the struct's fields, and no field has two. Every row that
// some method does not read also has a row in this file's own table (guided_rows()), so that the refusals of a new
// row are tested. Seen failing with DIFFSAMPLE_GUIDED_OPTION_READERS's row X(dcps_absolute_step, ...) removed.
TEST(UnreadOptions, EveryFieldHasOneRow) {
  static_assert(field_count<resampling_options>() == 5 && field_count<evaluate_options>() >= 4,
                "the field count itself works");
  std::vector<std::string> guided, diffusion, evaluate, resampling;
  std::vector<detail::method_set> guided_readers;
#define GUIDED_ROW(F, R, W, V)                                  \
  guided.push_back(#F);                                         \
  guided_readers.push_back(detail::read_when::W == detail::read_when::always ? detail::guided_readers::R : 0u);
#define DIFFUSION_ROW(F, R, W, V) diffusion.push_back(#F);
#define EVALUATE_ROW(F, R, W, V) evaluate.push_back(#F);
#define RESAMPLING_ROW(F, R, W, V) resampling.push_back(#F);
  DIFFSAMPLE_GUIDED_OPTION_READERS(GUIDED_ROW)
  DIFFSAMPLE_DIFFUSION_OPTION_READERS(DIFFUSION_ROW)
  DIFFSAMPLE_EVALUATE_OPTION_READERS(EVALUATE_ROW)
  DIFFSAMPLE_RESAMPLING_OPTION_READERS(RESAMPLING_ROW)
  const auto distinct = [](const std::vector<std::string>& rows, const std::string& table) {
    std::set<std::string> seen;
    for (const std::string& r : rows) EXPECT_TRUE(seen.insert(r).second) << table << ": two rows for " << r;
  };
  distinct(guided, "guided_options");
  distinct(diffusion, "diffusion_options");
  distinct(evaluate, "evaluate_options");
  distinct(resampling, "resampling_options");
  std::set<std::string> top;
  std::size_t nested = 0;
  for (const std::string& r : guided) {
    top.insert(r.substr(0, r.find('.')));
    nested += r.rfind("resampling.", 0) == 0;
  }
  EXPECT_EQ(top.size(), field_count<guided_options>()) << "a field of guided_options without a row";
  EXPECT_EQ(nested, field_count<resampling_options>()) << "a field of guided_options::resampling without a row";
  EXPECT_EQ(diffusion.size(), field_count<diffusion_options>()) << "a field of diffusion_options without a row";
  EXPECT_EQ(evaluate.size(), field_count<evaluate_options>()) << "a field of evaluate_options without a row";
  EXPECT_EQ(resampling.size(), field_count<resampling_options>()) << "a field of resampling_options without a row";
  // This file's rows test every field that a guided sampler does not read (the schedule by one of its fields).
  std::set<std::string> tested;
  for (const auto& row : guided_rows()) {
    const std::string f = row.field.substr(std::string("options.").size());
    tested.insert(f.rfind("schedule.", 0) == 0 ? "schedule" : f);
  }
  for (std::size_t i = 0; i < guided.size(); ++i) {
    if (guided_readers[i] != ~detail::method_set{0}) {
      EXPECT_EQ(tested.count(guided[i]), 1u) << "options." << guided[i] << ": no row in guided_rows()";
    }
  }
}
