// Scoring of the program's samples against exact references, and the reports' shared fields (score.hpp).
#include "cli/score.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <diffsample/diffsample.hpp>
#include <diffsample/metrics.hpp>

#include "cli/io.hpp"

namespace diffsample::cli {

share_result component_shares(const gaussian_mixture& p, const float* x, std::int64_t m) {
  const std::int64_t K = p.components();
  const auto& w = p.weights();
  share_result r;
  r.shares = component_weights(p, m, x);
  for (std::int64_t k = 0; k < K; ++k) {
    const double se = std::sqrt(std::max(w[k] * (1 - w[k]), 1e-300) / double(m));
    const double z = std::fabs(r.shares[k] - w[k]) / se;
    if (k == 0 || z > r.max_z) r.max_z = z, r.worst = k;
  }
  return r;
}

std::int64_t count_non_finite(const std::vector<float>& x) {
  std::int64_t bad = 0;
  for (float v : x) bad += !std::isfinite(v);
  return bad;
}

std::int64_t scored_samples(std::int64_t n) { return std::min<std::int64_t>(n, std::int64_t(1) << 15); }

sliced_score score_sliced(const std::vector<float>& samples, const std::vector<float>& reference,
                          const std::vector<float>& second, std::int64_t m, std::int64_t d, std::uint64_t seed) {
  sliced_score s;
  s.non_finite = count_non_finite(samples);
  // The directions' own key: direction c is drawn from the stream (key, c, 0), which under the run's seed is chain
  // (or particle) c's first draw; the directions were those chains' initial noise, normalised, and samples that
  // keep their initial noise scored too high against the floor (14% at d = 50 over 256 samples).
  const std::uint64_t key = seed + 4000;
  s.w1 = s.non_finite == 0
             ? sliced_wasserstein(m, m, d, samples.data(), reference.data(), sliced_directions, key)
             : NAN;
  s.floor = sliced_wasserstein(m, m, d, second.data(), reference.data(), sliced_directions, key);
  return s;
}

gaussian_mixture noised_mixture(const gaussian_mixture& m, channel ch) {
  std::vector<double> means = m.means(), variances = m.variances();
  for (double& mu : means) mu *= ch.a;
  for (double& v : variances) v = ch.a * ch.a * v + ch.s * ch.s;
  return gaussian_mixture(m.dim(), m.weights(), std::move(means), std::move(variances));
}

std::string channel_text(double t, channel ch) {
  char text[160];
  if (std::isnan(t))
    std::snprintf(text, sizeof text, "a = %.4g, s = %.4g", ch.a, ch.s);
  else
    std::snprintf(text, sizeof text, "t = %g (a = %.4g, s = %.4g)", t, ch.a, ch.s);
  return text;
}

json prior_json(const prior_spec& p, const std::string& source) {
  json j;
  j["source"] = source;
  j["description"] = p.description;
  j["dim"] = p.dim;
  j["components"] = p.weights.size();
  j["isotropic"] = p.variances.size() == p.weights.size();
  return j;
}

json report_head(const std::string& command, const json& first) {
  json j;
  j["command"] = command;
  for (const auto& field : first.items()) j[field.key()] = field.value();
  j["version"] = version();
  j["date"] = utc_now();
  return j;
}

void stage_report(output_set& out, const options& o, json& j) {
  if (o.has("--out")) j["samples_file"] = o.get("--out");
  stage_text(out, "--report", j.dump(2) + "\n");
}

}  // namespace diffsample::cli
