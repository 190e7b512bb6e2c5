// The C ABI's full guided report (ds_guided_sample2, ds_guided_report2) against the C++ guided_report of the same
// run: every field (and the samples), for runs whose automatic settings resolve either way and for explicit ones, on
// the CPU executor. Each case also names the potentials and operator path it must report.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <diffsample/diffsample.h>
#include <diffsample/diffsample.hpp>

using namespace diffsample;

namespace {

struct report_case {
  const char* name;
  ds_guided_sampler sampler;
  ds_guided_potentials potentials;
  int start_correction, multistep_kernel;
  std::int64_t final_moves;
  ds_mixture_path operator_path;
  std::int64_t d_y;
  bool samples;
  ds_guided_potentials ran_potentials;  // what the run must report (so that the cases resolve both ways)
  ds_mixture_path ran_path;
  double ran_threshold;  // the ESS threshold it must report (-1 resolved: 0.2 with automatic twisted, else 0.5)
};

}  // namespace

TEST(CApiGuidedReport, Report2SaysWhatTheCppReportSays) {
  const std::vector<double> w = {0.3, 0.7}, mu = {-1, 0.5, 2, -0.5}, var = {0.4, 0.2};
  const gaussian_mixture prior(2, w, mu, var);
  ds_mixture* m = nullptr;
  ASSERT_EQ(ds_mixture_create(2, 2, w.data(), mu.data(), var.data(), 2, &m), DS_SUCCESS);
  const report_case cases[] = {
      {"automatic, d_y 1", DS_GUIDED_SMC, DS_POTENTIALS_AUTOMATIC, 0, 0, -1, DS_MIXTURE_PATH_AUTOMATIC, 1, true,
       DS_POTENTIALS_TWISTED, DS_MIXTURE_PATH_DIRECT, 0.2},
      {"automatic, no samples", DS_GUIDED_SMC, DS_POTENTIALS_AUTOMATIC, 0, 0, -1, DS_MIXTURE_PATH_AUTOMATIC, 2, false,
       DS_POTENTIALS_TWISTED, DS_MIXTURE_PATH_DIRECT, 0.2},
      {"automatic, d_y 9", DS_GUIDED_SMC, DS_POTENTIALS_AUTOMATIC, 1, 0, -1, DS_MIXTURE_PATH_AUTOMATIC, 9, true,
       DS_POTENTIALS_LINEAR, DS_MIXTURE_PATH_DIRECT, 0.5},
      {"linear, explicit", DS_GUIDED_SMC, DS_POTENTIALS_LINEAR, 1, 1, 3, DS_MIXTURE_PATH_AUTOMATIC, 1, true,
       DS_POTENTIALS_LINEAR, DS_MIXTURE_PATH_DIRECT, 0.5},
      {"moment", DS_GUIDED_SMC, DS_POTENTIALS_MOMENT, 0, 1, -1, DS_MIXTURE_PATH_AUTOMATIC, 2, true,
       DS_POTENTIALS_MOMENT, DS_MIXTURE_PATH_DIRECT, 0.5},
      {"twisted, no moves", DS_GUIDED_SMC, DS_POTENTIALS_TWISTED, 1, 0, 0, DS_MIXTURE_PATH_AUTOMATIC, 1, true,
       DS_POTENTIALS_TWISTED, DS_MIXTURE_PATH_DIRECT, 0.5},
      {"dps, gemm", DS_GUIDED_DPS, DS_POTENTIALS_AUTOMATIC, 0, 0, -1, DS_MIXTURE_PATH_GEMM, 2, true,
       DS_POTENTIALS_LINEAR, DS_MIXTURE_PATH_GEMM, 0.0},
      {"pigdm, direct", DS_GUIDED_PIGDM, DS_POTENTIALS_AUTOMATIC, 0, 0, -1, DS_MIXTURE_PATH_DIRECT, 1, true,
       DS_POTENTIALS_LINEAR, DS_MIXTURE_PATH_DIRECT, 0.0},
      {"tmpd, gemm", DS_GUIDED_TMPD, DS_POTENTIALS_AUTOMATIC, 0, 0, -1, DS_MIXTURE_PATH_GEMM, 2, true,
       DS_POTENTIALS_LINEAR, DS_MIXTURE_PATH_GEMM, 0.0},
  };
  for (const report_case& c : cases) {
    SCOPED_TRACE(c.name);
    constexpr std::int64_t N = 32;
    std::vector<double> A(static_cast<std::size_t>(c.d_y * 2)), y(static_cast<std::size_t>(c.d_y));
    for (std::int64_t i = 0; i < c.d_y; ++i) {
      A[2 * i] = 1.0 / double(1 + i);
      A[2 * i + 1] = (i % 2) ? 0.5 : -0.25;
      y[i] = 0.1 * double(i) - 0.2;
    }
    const double sigma_y = 0.4;
    ds_guided_problems gp;
    ASSERT_EQ(ds_guided_problems_init(&gp, sizeof gp), DS_SUCCESS);
    gp.d_y = c.d_y;
    gp.A = A.data();
    gp.A_count = c.d_y * 2;
    gp.y = y.data();
    gp.sigma_y = &sigma_y;
    gp.sigma_y_count = 1;
    ds_guided_options go;
    ASSERT_EQ(ds_guided_options_init(&go, sizeof go), DS_SUCCESS);
    go.sampler = c.sampler;
    go.potentials = c.potentials;
    go.start_correction = c.start_correction;
    go.multistep_kernel = c.multistep_kernel;
    go.final_moves = c.final_moves;
    go.operator_path = c.operator_path;
    go.particles = N;
    go.steps = 8;
    go.seed = 3;
    std::vector<float> samples(static_cast<std::size_t>(N * 2)), samples_cpp(samples.size());
    ds_guided_outputs out;
    ASSERT_EQ(ds_guided_outputs_init(&out, sizeof out), DS_SUCCESS);
    if (c.samples) out.samples = samples.data();
    ds_guided_report2 r;
    ASSERT_EQ(ds_guided_report2_init(&r, sizeof r), DS_SUCCESS);
    const ds_execution cpu = {DS_EXECUTOR_CPU, nullptr};
    ASSERT_EQ(ds_guided_sample2(m, &gp, &go, &out, cpu, nullptr, 0, &r), DS_SUCCESS) << ds_last_error();

    guided_problems g;
    g.d_y = c.d_y;
    g.A = A;
    g.y = y;
    g.sigma_y = {sigma_y};
    guided_options o;
    o.sampler = static_cast<guided_sampler>(c.sampler);
    o.potentials = static_cast<guided_potentials>(c.potentials);
    o.start_correction = c.start_correction != 0;
    o.multistep_kernel = c.multistep_kernel != 0;
    o.final_moves = c.final_moves;
    o.operator_path = static_cast<mixture_path>(c.operator_path);
    o.particles = N;
    o.steps = 8;
    o.seed = 3;
    guided_outputs outputs;
    if (c.samples) outputs.samples = samples_cpp.data();
    const guided_report cpp = guided_sample(prior, outputs, g, o, execution{executor::cpu});

    EXPECT_EQ(r.struct_size, sizeof r);
    EXPECT_EQ(int(r.ran), int(cpp.ran));
    EXPECT_EQ(r.launches, cpp.launches);
    EXPECT_EQ(int(r.operator_path), int(cpp.operator_path));
    EXPECT_EQ(int(r.potentials), int(cpp.potentials));
    EXPECT_EQ(r.start_correction, cpp.start_correction ? 1 : 0);
    EXPECT_EQ(r.multistep_kernel, cpp.multistep_kernel ? 1 : 0);
    EXPECT_EQ(r.final_moves, cpp.final_moves);
    EXPECT_EQ(r.ess_threshold, cpp.ess_threshold);
    EXPECT_EQ(r.ess_threshold, c.ran_threshold);
    EXPECT_EQ(samples, samples_cpp);
    EXPECT_EQ(int(r.potentials), int(c.ran_potentials));
    EXPECT_EQ(int(r.operator_path), int(c.ran_path));
  }
  ds_mixture_destroy(m);
}

// A caller of ds_guided_report2's first layout (up to final_moves) gets its fields and nothing beyond them: the
// bytes after its struct_size stay as they were.
TEST(CApiGuidedReport, Report2OfTheFirstLayoutIsWrittenUpToItsSize) {
  const std::vector<double> w = {1.0}, mu = {0.5, -0.5}, var = {0.7};
  ds_mixture* m = nullptr;
  ASSERT_EQ(ds_mixture_create(2, 1, w.data(), mu.data(), var.data(), 1, &m), DS_SUCCESS);
  const double A[2] = {1.0, 0.5}, y = 0.3, sigma_y = 0.4;
  ds_guided_problems gp;
  ASSERT_EQ(ds_guided_problems_init(&gp, sizeof gp), DS_SUCCESS);
  gp.d_y = 1;
  gp.A = A;
  gp.A_count = 2;
  gp.y = &y;
  gp.sigma_y = &sigma_y;
  gp.sigma_y_count = 1;
  ds_guided_options go;
  ASSERT_EQ(ds_guided_options_init(&go, sizeof go), DS_SUCCESS);
  go.particles = 16;
  go.steps = 4;
  ds_guided_outputs out;
  ASSERT_EQ(ds_guided_outputs_init(&out, sizeof out), DS_SUCCESS);
  std::vector<float> particles(32);
  out.particles = particles.data();
  const std::size_t first = offsetof(ds_guided_report2, ess_threshold);
  ds_guided_report2 r;
  r.ess_threshold = 7.0;
  ASSERT_EQ(ds_guided_report2_init(&r, first), DS_SUCCESS) << ds_last_error();
  r.final_moves = -5;
  const ds_execution cpu = {DS_EXECUTOR_CPU, nullptr};
  ASSERT_EQ(ds_guided_sample2(m, &gp, &go, &out, cpu, nullptr, 0, &r), DS_SUCCESS) << ds_last_error();
  EXPECT_EQ(r.struct_size, first);
  EXPECT_EQ(int(r.potentials), int(DS_POTENTIALS_TWISTED));
  EXPECT_EQ(r.final_moves, 0);  // written (no samples asked for: no moves)
  EXPECT_EQ(r.ess_threshold, 7.0);
  ds_guided_report2 full;
  ASSERT_EQ(ds_guided_report2_init(&full, sizeof full), DS_SUCCESS);
  ASSERT_EQ(ds_guided_sample2(m, &gp, &go, &out, cpu, nullptr, 0, &full), DS_SUCCESS) << ds_last_error();
  EXPECT_EQ(full.ess_threshold, 0.2);
  ds_mixture_destroy(m);
}
