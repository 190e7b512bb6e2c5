// DCPS against the exact posterior as sigma_y shrinks (README "DCPS", "At small sigma_y"): on small random problems
// (a mixture of K diagonal Gaussian components in d = 4 .. 10, means 2 z, variances uniform in [0.3, 2], weights
// uniform in [0.2, 1]; A with N(0, 1) entries, full rank or with its last row the sum of the first two; y = A x0 +
// sigma_y z, x0 drawn from the prior) it prints, for the potentials without and with dcps_bridge_variance, the error
// of the samples' mean (Euclidean) and covariance (Frobenius) against the exact posterior's, the misfit E|y - A x|^2
// beside the exact posterior's, and the largest component-weight error (ds::component_weight_error; -1 where the
// posterior is too narrow for its densities). CPU executor, guided_options' DCPS defaults unless given.
// Usage: bench_dcps_noise [particles=2048] [components=3] [sigmas=1,0.1,0.01,0.001,0.0001] [gradient_steps=G]
//        [learning_rate=R] [langevin_steps=M] [langevin_step=GAMMA] [blocks=L] [steps=K] [seed=S]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <diffsample/guided.hpp>
#include <diffsample/metrics.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/observation.hpp>
#include <diffsample/posterior.hpp>

namespace ds = diffsample;

namespace {

struct instance {
  ds::gaussian_mixture prior;
  ds::linear_observation obs;
};

// rank_deficient: the last row of A is the sum of the first two (d_y >= 3).
instance make(int d, int dy, int K, bool rank_deficient, unsigned seed, double sigma_y) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> z;
  std::uniform_real_distribution<double> var_u(0.3, 2.0), weight_u(0.2, 1.0);
  std::vector<double> w(K), mu(K * d), var(K * d);
  for (auto& v : w) v = weight_u(gen);
  for (auto& v : mu) v = 2 * z(gen);
  for (auto& v : var) v = var_u(gen);
  ds::gaussian_mixture prior(d, w, mu, var);
  ds::linear_observation o;
  o.d_y = dy;
  o.d_x = d;
  o.A.resize(dy * d);
  for (auto& a : o.A) a = z(gen);
  if (rank_deficient)
    for (int j = 0; j < d; ++j) o.A[(dy - 1) * d + j] = o.A[j] + o.A[d + j];
  o.sigma_y = sigma_y;
  std::discrete_distribution<int> pick(w.begin(), w.end());
  const int k = pick(gen);
  std::vector<double> x0(d);
  for (int j = 0; j < d; ++j) x0[j] = mu[k * d + j] + std::sqrt(var[k * d + j]) * z(gen);
  o.y.assign(dy, 0.0);
  for (int i = 0; i < dy; ++i) {
    for (int j = 0; j < d; ++j) o.y[i] += o.A[i * d + j] * x0[j];
    o.y[i] += sigma_y * z(gen);
  }
  return {std::move(prior), o};
}

double misfit(const ds::linear_observation& o, const std::vector<float>& x, std::int64_t n) {
  const std::int64_t d = o.d_x;
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t r = 0; r < o.d_y; ++r) {
      double e = o.y[r];
      for (std::int64_t j = 0; j < d; ++j) e -= o.A[r * d + j] * x[i * d + j];
      sum += e * e;
    }
  return sum / double(n);
}

std::string arg(int argc, char** argv, const std::string& key, const std::string& fallback) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind(key + "=", 0) == 0) return a.substr(key.size() + 1);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t N = std::atoll(arg(argc, argv, "particles", "2048").c_str());
  const int K = std::atoi(arg(argc, argv, "components", "3").c_str());
  std::vector<double> sigmas;
  {
    const std::string v = arg(argc, argv, "sigmas", "1,0.1,0.01,0.001,0.0001");
    for (std::size_t p = 0; p < v.size();) {
      std::size_t q = v.find(',', p);
      if (q == std::string::npos) q = v.size();
      sigmas.push_back(std::atof(v.substr(p, q - p).c_str()));
      p = q + 1;
    }
  }
  ds::guided_options base;
  base.sampler = ds::guided_sampler::dcps;
  base.potentials = ds::guided_potentials::linear;
  base.particles = N;
  base.seed = std::strtoull(arg(argc, argv, "seed", "11").c_str(), nullptr, 10);
  base.steps = std::atoll(arg(argc, argv, "steps", "100").c_str());
  base.dcps_gradient_steps = std::atoll(arg(argc, argv, "gradient_steps", "2").c_str());
  base.dcps_learning_rate = std::atof(arg(argc, argv, "learning_rate", "0.1").c_str());
  base.dcps_langevin_steps = std::atoll(arg(argc, argv, "langevin_steps", "50").c_str());
  base.dcps_langevin_step = std::atof(arg(argc, argv, "langevin_step", "0.001").c_str());
  base.dcps_blocks = std::atoll(arg(argc, argv, "blocks", "4").c_str());
  struct shape {
    int d, dy;
    bool rank_deficient;
    unsigned seed;
  };
  const shape shapes[] = {{4, 2, false, 1}, {4, 2, false, 2}, {6, 3, false, 3}, {10, 3, false, 4},
                          {4, 3, true, 5},  {8, 3, true, 6},  {10, 4, true, 7}};
  std::printf("instance            sigma_y | exact misfit | bridge variance off: mean cov misfit dw | on: mean cov "
              "misfit dw\n");
  for (const shape& sh : shapes) {
    for (double sy : sigmas) {
      const instance in = make(sh.d, sh.dy, K, sh.rank_deficient, sh.seed, sy);
      const ds::mixture_posterior post(in.prior, in.obs);
      const std::vector<double> em = post.mean(), ec = post.covariance();
      const int d = sh.d;
      std::vector<float> exact(N * d);
      post.sample(exact.data(), N, 99);
      std::printf("%s %2d x %-2d seed %u  %7.0e | %12.2e |", sh.rank_deficient ? "rank-def." : "full rank", sh.dy, d,
                  sh.seed, sy, misfit(in.obs, exact, N));
      for (const bool bridge : {false, true}) {
        ds::guided_options o = base;
        o.dcps_bridge_variance = bridge;
        std::vector<float> x(N * d);
        ds::guided_problems g;
        g.problems = 1;
        g.d_y = sh.dy;
        g.A = in.obs.A;
        g.sigma_y = {sy};
        g.y = in.obs.y;
        ds::guided_outputs out;
        out.samples = x.data();
        ds::guided_sample(in.prior, out, g, o, {ds::executor::cpu, nullptr});
        std::vector<double> m(d, 0.0), C(d * d, 0.0);
        for (std::int64_t i = 0; i < N; ++i)
          for (int j = 0; j < d; ++j) m[j] += x[i * d + j] / double(N);
        for (std::int64_t i = 0; i < N; ++i)
          for (int j = 0; j < d; ++j)
            for (int k = 0; k < d; ++k) C[j * d + k] += (x[i * d + j] - m[j]) * (x[i * d + k] - m[k]) / double(N - 1);
        double me = 0, ce = 0;
        for (int j = 0; j < d; ++j) me += (m[j] - em[j]) * (m[j] - em[j]);
        for (int j = 0; j < d * d; ++j) ce += (C[j] - ec[j]) * (C[j] - ec[j]);
        double dw = -1;
        try {
          dw = ds::component_weight_error(post, N, x.data());
        } catch (const std::exception&) {
        }
        std::printf(" %6.3f %6.3f %8.2e %6.3f |", std::sqrt(me), std::sqrt(ce), misfit(in.obs, x, N), dw);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  return 0;
}
