// The CPU executor's packs of particles (guided SMC with linear and moment-projected potentials, DiffPIR, DDRM,
// SKRock, DPS, Pi-GDM, TMPD, DCPS; the mixture's denoiser Jacobian-vector product alone) and of directions (sliced Wasserstein) against the scalar
// paths they replace, in one process, rounds interleaved (DIFFSAMPLE_CPU_TARGET=scalar selects the scalar path of
// the same build), the ratio taken within each round and its median printed last.
//
// Guided SMC (bench_smc's problem: 25-component grid mixture, spacing 8, unit variances, d_y = 1, one problem,
// N particles, `steps` transitions). FLOP per particle-step, as bench_smc counts them: the denoiser, 5 K d + 12 K
// (25 x d centred differences, squares and weighted sums; per component the weight), the residuals A x and A mu
// (4 d_y d), the kernel mean (2 d), and the mutation's update (5 (d + d_y) + 1): 1,666 at d = 10, 13,906 at
// d = 100 (exp, log, Box-Muller and the Philox rounds not counted). Bytes through memory per particle-step: x read
// and written by the mutation and read by the weighting (12 d), mu read (the ancestor's) and written (8 d), the
// log-weight 16: 216 at d = 10, all of it in cache at the default N = 4096.
//
// DiffPIR on the same problems: the denoiser, A m and A^T P r (4 d_y d) and the re-noising (8 d) per particle-step.
//
// Sliced Wasserstein (n_a = n_b = n points, `dirs` directions): per (point, direction) the projection is d FP64
// multiplies and d adds (2 d FLOP); the sort of a direction's 2 n keys (radix on the packed path, std::sort on the
// scalar one) is not counted.
//
// Usage: bench_cpu_packs [rounds] [particles] [steps] [points] [directions] [rows]
// rows: run only the rows whose name contains one of these comma-separated words (e.g. "tmpd,dcps,smc-mom").
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <diffsample/diffsample.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/metrics.hpp>
#include <diffsample/posterior.hpp>

#include "bench_common.hpp"

namespace ds = diffsample;

namespace {

/// Seconds of the best of `reps` calls of f after one warm-up call, on the target named (nullptr: the default).
double seconds_on(const char* target, int reps, const std::function<void()>& f) {
  if (target != nullptr)
    setenv("DIFFSAMPLE_CPU_TARGET", target, 1);
  else
    unsetenv("DIFFSAMPLE_CPU_TARGET");
  f();
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  unsetenv("DIFFSAMPLE_CPU_TARGET");
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct row {
  std::string name;
  double work;  // particle-steps, or (point, direction) projections
  double flop;  // per unit of work
  std::function<void()> run;
  std::vector<double> scalar, packed;  // seconds per round
};

}  // namespace

int main(int argc, char** argv) {
  const int rounds = int(bench::count_arg(argc, argv, 1, "rounds", 3));
  const std::int64_t N = bench::count_arg(argc, argv, 2, "particles", 4096);
  const std::int64_t steps = bench::count_arg(argc, argv, 3, "steps", 20);
  const std::int64_t n = bench::count_arg(argc, argv, 4, "points", 4000);
  const int dirs = int(bench::count_arg(argc, argv, 5, "directions", 64));
  const std::string only = argc > 6 ? argv[6] : "";
  const ds::execution cpu{ds::executor::cpu, nullptr};
  std::vector<row> rows;

  // Problems and buffers, built once.
  std::vector<ds::gaussian_mixture> priors;
  std::vector<ds::guided_problems> problems;
  std::vector<std::vector<double>> log_z;
  std::vector<std::vector<float>> sa, sb, samples, jvp_v, jvp_out;
  for (const std::int64_t d : {10, 100}) {
    priors.push_back(ds::grid_mixture(d, 5, 8.0, 1.0));
    std::mt19937_64 gen(1);
    std::normal_distribution<double> z;
    ds::guided_problems pr;
    pr.A.resize(d);
    for (auto& a : pr.A) a = z(gen);
    pr.y = {3.0};
    pr.sigma_y = {1.0};
    problems.push_back(pr);
    log_z.emplace_back(1);
    samples.emplace_back(N * d, 0.5f);
    jvp_v.emplace_back(N * d, 1.0f);
    jvp_out.emplace_back(N * d);
    std::vector<float> a(n * d), b(n * d);
    std::normal_distribution<float> zf;
    for (auto& v : a) v = zf(gen);
    for (auto& v : b) v = 0.5f + zf(gen);
    sa.push_back(a);
    sb.push_back(b);
  }
  for (std::size_t c = 0; c < 2; ++c) {
    const std::int64_t d = priors[c].dim();
    const double K = 25;
    row r;
    r.name = "smc d=" + std::to_string(d);
    r.work = double(N) * steps;
    r.flop = 5 * K * d + 12 * K + 4.0 * d + 2.0 * d + 1 + 5.0 * (d + 1);
    r.run = [&, c, d] {
      ds::guided_options o;
      o.potentials = ds::guided_potentials::linear;  // the packed passes timed here (the default is automatic)
      o.steps = steps;
      o.particles = N;
      o.final_resample = false;
      ds::guided_outputs out;
      out.log_normaliser = log_z[c].data();
      ds::guided_sample(priors[c], out, problems[c], o, cpu);
    };
    rows.push_back(r);
    row q;  // DiffPIR, as bench_smc counts it: the denoiser, A m and A^T P r (4 d_y d), the update (8 d)
    q.name = "diffpir d=" + std::to_string(d);
    q.work = double(N) * steps;
    q.flop = 5 * K * d + 12 * K + 4.0 * d + 3.0 * d + 5.0 * d;
    q.run = [&, c, d] {
      ds::guided_options o;
      o.sampler = ds::guided_sampler::diffpir;
      o.steps = steps;
      o.particles = N;
      ds::guided_outputs out;
      out.particles = samples[c].data();
      ds::guided_sample(priors[c], out, problems[c], o, cpu);
    };
    rows.push_back(q);
    row e;  // DDRM: the denoiser and the update, counted as DiffPIR's (r = d_y = 1: its projections are 6 d)
    e.name = "ddrm d=" + std::to_string(d);
    e.work = double(N) * steps;
    e.flop = q.flop;
    e.run = [&, c] {
      ds::guided_options o;
      o.sampler = ds::guided_sampler::ddrm;
      o.steps = steps;
      o.particles = N;
      ds::guided_outputs out;
      out.particles = samples[c].data();
      ds::guided_sample(priors[c], out, problems[c], o, cpu);
    };
    rows.push_back(e);
    row k;  // SKRock, as bench_smc counts an iteration: 10 stages of the score and the likelihood term, the update
    k.name = "skrock d=" + std::to_string(d);
    k.work = double(N) * steps;
    k.flop = 10 * (6 * K * d + 12 * K + 4.0 * d + 5.0 * d) + 5.0 * d;
    k.run = [&, c] {
      ds::guided_options o;
      o.sampler = ds::guided_sampler::skrock;
      o.steps = steps;
      o.particles = N;
      ds::guided_outputs out;
      out.particles = samples[c].data();
      ds::guided_sample(priors[c], out, problems[c], o, cpu);
    };
    rows.push_back(k);
    // The samplers with the denoiser's Jacobian (src/cpu/denoiser_jvp.hpp). One product J v (d_y = 1) as the packed
    // path computes it, an FMA counted as 2: per (component, coordinate) pass 1 the logit (3), delta (2) and the score
    // sum (2), pass 2 delta (2), its centring (1), e . v (2) and the sum (2): 14 K d + 12 K.
    const double den = 5 * K * d + 12 * K, jvp = 14 * K * d + 12 * K;
    row jv;  // The mixture's public denoiser_jvp at channel (0.3, 0.95) on N points: the product alone
    jv.name = "jvp d=" + std::to_string(d);
    jv.work = double(N) * steps;
    jv.flop = jvp;
    jv.run = [&, c, d] {
      for (std::int64_t k = 0; k < steps; ++k)
        priors[c].denoiser_jvp(jvp_out[c].data(), N, samples[c].data(), jvp_v[c].data(), {0.3, 0.95}, cpu);
    };
    rows.push_back(jv);
    for (const bool pigdm : {false, true}) {
      row b;  // DPS / Pi-GDM, step by step around evaluate and denoiser_jvp: the denoiser, one product, A m and
              // A^T P r (4 d), the update (8 d)
      b.name = std::string(pigdm ? "pigdm" : "dps") + " d=" + std::to_string(d);
      b.work = double(N) * steps;
      b.flop = den + jvp + 4.0 * d + 8.0 * d;
      b.run = [&, c, pigdm] {
        ds::guided_options o;
        o.sampler = pigdm ? ds::guided_sampler::pigdm : ds::guided_sampler::dps;
        o.steps = steps;
        o.particles = N;
        ds::guided_outputs out;
        out.particles = samples[c].data();
        ds::guided_sample(priors[c], out, problems[c], o, cpu);
      };
      rows.push_back(b);
    }
    row t;  // TMPD: the denoiser, one product, A m and A C A^T (4 d), the update (8 d)
    t.name = "tmpd d=" + std::to_string(d);
    t.work = double(N) * steps;
    t.flop = den + jvp + 4.0 * d + 8.0 * d;
    t.run = [&, c] {
      ds::guided_options o;
      o.sampler = ds::guided_sampler::tmpd;
      o.steps = steps;
      o.particles = N;
      ds::guided_outputs out;
      out.particles = samples[c].data();
      ds::guided_sample(priors[c], out, problems[c], o, cpu);
    };
    rows.push_back(t);
    row g;  // DCPS, 4 blocks of 5 tamed Langevin steps, 2 gradient steps per transition: per transition the kernel's
            // denoiser, 2 gradients (denoiser, product, A and A^T: 4 d, the KL step 16 d) and 20 / steps Langevin steps
    g.name = "dcps d=" + std::to_string(d);
    g.work = double(N) * steps;
    g.flop = den + (2.0 + 20.0 / double(steps)) * (den + jvp + 4.0 * d + 16.0 * d);
    g.run = [&, c] {
      ds::guided_options o;
      o.sampler = ds::guided_sampler::dcps;
      o.steps = steps;
      o.particles = N;
      o.dcps_langevin_steps = 5;
      ds::guided_outputs out;
      out.particles = samples[c].data();
      ds::guided_sample(priors[c], out, problems[c], o, cpu);
    };
    rows.push_back(g);
    row m;  // SMC with moment-projected potentials: smc's count with the weighting's product added
    m.name = "smc-mom d=" + std::to_string(d);
    m.work = double(N) * steps;
    m.flop = r.flop + jvp + 2.0 * d;
    m.run = [&, c] {
      ds::guided_options o;
      o.steps = steps;
      o.particles = N;
      o.final_resample = false;
      o.potentials = ds::guided_potentials::moment;
      ds::guided_outputs out;
      out.log_normaliser = log_z[c].data();
      ds::guided_sample(priors[c], out, problems[c], o, cpu);
    };
    rows.push_back(m);
  }
  // The exact posterior sampler (mixture_posterior::sample, float output) of bench_smc's prior and observation,
  // 100 n / d samples per call: per sample the component's search and d / 2 FP64 Box-Muller pairs (not counted) and
  // the transform m'_k + L_k z, d (d + 1) FLOP; its factor L_k read (4 d (d + 1) bytes, 25 components of 40 KB at
  // d = 100: from L2 / L3), the output written (4 d).
  std::vector<ds::mixture_posterior> posteriors;
  std::vector<std::vector<float>> post_out;
  for (std::size_t c = 0; c < 2; ++c) {
    const std::int64_t d = priors[c].dim();
    ds::linear_observation obs;
    obs.d_y = 1;
    obs.d_x = d;
    obs.A = problems[c].A;
    obs.y = problems[c].y;
    obs.sigma_y = problems[c].sigma_y[0];
    posteriors.emplace_back(priors[c], obs);
    post_out.emplace_back(n * 100);
  }
  for (std::size_t c = 0; c < 2; ++c) {
    const std::int64_t d = priors[c].dim();
    row r;
    r.name = "posterior d=" + std::to_string(d);
    r.work = double(n * 100 / d);
    r.flop = double(d) * (d + 1);
    r.run = [&, c, d] { posteriors[c].sample(post_out[c].data(), n * 100 / d, 3); };
    rows.push_back(r);
  }
  for (std::size_t c = 0; c < 2; ++c) {
    const std::int64_t d = priors[c].dim();
    for (const bool executor : {false, true}) {
      row r;
      r.name = std::string(executor ? "sw exec" : "sw host") + " d=" + std::to_string(d);
      r.work = 2.0 * double(n) * dirs;
      r.flop = 2.0 * d;
      r.run = [&, c, d, executor] {
        volatile double v = executor ? ds::sliced_wasserstein(n, n, d, sa[c].data(), sb[c].data(), dirs, 3, 2, cpu)
                                     : ds::sliced_wasserstein(n, n, d, sa[c].data(), sb[c].data(), dirs, 3, 2);
        (void)v;
      };
      rows.push_back(r);
    }
  }

  if (!only.empty()) {
    std::vector<row> kept;
    for (const row& r : rows) {
      bool match = false;
      for (std::size_t at = 0; at <= only.size();) {
        const std::size_t comma = std::min(only.find(',', at), only.size());
        const std::string word = only.substr(at, comma - at);
        match = match || (!word.empty() && r.name.find(word) != std::string::npos);
        at = comma + 1;
      }
      if (match) kept.push_back(r);
    }
    rows = kept;
  }
  std::printf("# bench_cpu_packs: %d rounds; smc N = %lld, %lld steps; sliced Wasserstein n_a = n_b = %lld, %d "
              "directions; default target %s\n",
              rounds, static_cast<long long>(N), static_cast<long long>(steps), static_cast<long long>(n), dirs,
              std::getenv("DIFFSAMPLE_CPU_TARGET") ? std::getenv("DIFFSAMPLE_CPU_TARGET") : "(widest)");
  for (int round = 0; round < rounds; ++round) {
    for (row& r : rows) {
      // Alternate which path goes first, so that a load change within a round favours neither.
      const bool scalar_first = round % 2 == 0;
      const double first = seconds_on(scalar_first ? "scalar" : nullptr, 2, r.run);
      const double second = seconds_on(scalar_first ? nullptr : "scalar", 2, r.run);
      r.scalar.push_back(scalar_first ? first : second);
      r.packed.push_back(scalar_first ? second : first);
      std::printf("round %d %-14s scalar %9.4f s  packs %9.4f s  ratio %6.2f\n", round, r.name.c_str(),
                  r.scalar.back(), r.packed.back(), r.scalar.back() / r.packed.back());
    }
  }
  std::printf("%-14s %14s %14s %10s %12s %12s\n", "what", "scalar /s", "packs /s", "ratio", "GFLOP/s", "FLOP/unit");
  for (const row& r : rows) {
    std::vector<double> ratio;
    for (int k = 0; k < rounds; ++k) ratio.push_back(r.scalar[k] / r.packed[k]);
    const double ps = r.work / median(r.scalar), pp = r.work / median(r.packed);
    std::printf("%-14s %14.3e %14.3e %10.2f %12.2f %12.0f\n", r.name.c_str(), ps, pp, median(ratio),
                pp * r.flop / 1e9, r.flop);
  }
  std::printf("# units: smc, smc-mom, diffpir, ddrm, dps, pigdm, tmpd and dcps particle-steps, jvp products, posterior samples, skrock iterations, sw (point, direction) projections (sorts included in the time)\n");
  return 0;
}
