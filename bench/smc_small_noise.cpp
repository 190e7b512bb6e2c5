// guided SMC at small sigma_y (README, "Accuracy at small sigma_y"): log Z-hat and the samples' posterior moments
// against the exact posterior of a 2-component mixture prior under a full-rank 2 x 2 operator, on the CPU executor.
// usage: smc_small_noise [particles=1024] [steps=100] [potentials=automatic|linear|moment|twisted] [final_moves=-1]
// build: g++ -O2 -std=c++17 -Iinclude bench/smc_small_noise.cpp -Lbuild -ldiffsample -Wl,-rpath,$PWD/build
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <diffsample/guided.hpp>
#include <diffsample/posterior.hpp>

namespace ds = diffsample;

int main(int argc, char** argv) {
  const std::int64_t N = argc > 1 ? std::atoll(argv[1]) : 1024, K = argc > 2 ? std::atoll(argv[2]) : 100;
  const std::string pot = argc > 3 ? argv[3] : "automatic";
  const std::int64_t moves = argc > 4 ? std::atoll(argv[4]) : -1;
  const std::int64_t d = 2, dy = 2, B = 4;
  ds::gaussian_mixture prior(d, {0.3, 0.7}, {-2.0, -1.7, 2.0, 1.8}, {1.0, 1.0, 1.0, 1.0});
  const std::vector<double> A = {1.0, 0.3, -0.4, 0.9};
  const double x0[2] = {2.1, 1.7};
  std::printf("N %lld, steps %lld, potentials %s, final_moves %lld; mean over %lld problems\n", (long long)N,
              (long long)K, pot.c_str(), (long long)moves, (long long)B);
  std::printf("%8s %10s %10s %9s %9s %10s %10s %10s\n", "sigma_y", "log p(y)", "log Z-hat", "error", "last ESS",
              "mean err", "post sd", "sd ratio");
  for (double sy : {1e-1, 1e-2, 1e-3, 1e-4, 1e-5}) {
    ds::linear_observation ob{dy, d, A, sy, {A[0] * x0[0] + A[1] * x0[1], A[2] * x0[0] + A[3] * x0[1]}};
    const ds::mixture_posterior post(prior, ob);
    const std::vector<double> pm = post.mean(), pc = post.covariance();
    ds::guided_problems pr;
    pr.problems = B;
    pr.d_y = dy;
    pr.A = A;
    for (std::int64_t b = 0; b < B; ++b) pr.y.insert(pr.y.end(), ob.y.begin(), ob.y.end());
    pr.sigma_y = {sy};
    ds::guided_options o;
    o.sampler = ds::guided_sampler::smc;
    o.particles = N;
    o.steps = K;
    o.seed = 7;
    o.final_moves = moves;
    if (pot == "linear") o.potentials = ds::guided_potentials::linear;
    if (pot == "moment") o.potentials = ds::guided_potentials::moment;
    if (pot == "twisted") o.potentials = ds::guided_potentials::twisted;
    std::vector<float> samples(B * N * d), ess(B * (K + 1));
    std::vector<double> lz(B);
    ds::guided_outputs out;
    out.samples = samples.data();
    out.log_normaliser = lz.data();
    out.ess_trace = ess.data();
    ds::guided_sample(prior, out, pr, o, {ds::executor::cpu, nullptr});
    double lzm = 0, mean_err = 0, ratio = 0, last_ess = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      lzm += lz[b] / B;
      last_ess += ess[b * (K + 1) + K] / B;
      for (int j = 0; j < d; ++j) {
        double m = 0, v = 0;
        for (std::int64_t i = 0; i < N; ++i) m += samples[(b * N + i) * d + j];
        m /= N;
        for (std::int64_t i = 0; i < N; ++i) v += std::pow(samples[(b * N + i) * d + j] - m, 2);
        v /= (N - 1);
        mean_err = std::fmax(mean_err, std::fabs(m - pm[j]));
        ratio += std::sqrt(v / pc[j * d + j]) / (B * d);
      }
    }
    std::printf("%8.0e %10.3f %10.3f %9.3g %9.1f %10.2e %10.2e %10.3f\n", sy, post.log_evidence(), lzm,
                lzm - post.log_evidence(), last_ess, mean_err, std::sqrt(pc[0]), ratio);
  }
  return 0;
}
