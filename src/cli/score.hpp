// Scoring of the program's samples against exact references, and the fields the JSON reports share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <diffsample/mixture.hpp>

#include "cli/args.hpp"
#include "cli/output.hpp"
#include "cli/problem.hpp"

namespace diffsample::cli {

using json = nlohmann::ordered_json;

/// Component shares: the library's recovered component weights (component_weights, the average posterior
/// responsibility of each component over the samples); the error of component k is |share_k - w_k| in standard
/// errors sqrt(w_k (1 - w_k) / m), which bounds the standard error of an average responsibility.
struct share_result {
  double max_z = 0;        ///< the largest error, in standard errors
  std::int64_t worst = 0;  ///< its component
  std::vector<double> shares;
};

/// The component shares of m samples @p x of the mixture @p p.
share_result component_shares(const gaussian_mixture& p, const float* x, std::int64_t m);

/// The values of @p x that are NaN or infinite.
std::int64_t count_non_finite(const std::vector<float>& x);

/// Samples of a run that are scored against exact references: the first min(n, 2^15).
std::int64_t scored_samples(std::int64_t n);

/// Projections of the program's sliced W1 figures.
constexpr int sliced_directions = 64;

/// Sliced W1 of a run's samples to a set of exact draws, beside the floor: a second exact set to the first.
struct sliced_score {
  std::int64_t non_finite = 0;  ///< NaN or infinite values among all the samples
  double w1 = 0;                ///< the first m samples to the reference set; NaN when non_finite > 0 (not computed)
  double floor = 0;             ///< the second reference set to the first
};

/// The sliced score of @p samples (rows of d; all counted for non_finite, the first m compared) against
/// @p reference and @p second (m rows each), sliced_directions projections drawn with the key @p seed + 4000 (the
/// run's @p seed keys its chains' streams, whose first draws the directions would otherwise repeat).
sliced_score score_sliced(const std::vector<float>& samples, const std::vector<float>& reference,
                          const std::vector<float>& second, std::int64_t m, std::int64_t d, std::uint64_t seed);

/// Whether the channel (a, s) is the data's own, a = 1 and s = 0: samples there are compared with the prior or the
/// posterior itself, elsewhere with their law noised to the channel (x_t = a x0 + s z).
inline bool at_data(channel ch) { return ch.a == 1.0 && ch.s == 0.0; }

/// The mixture @p m noised to the channel (a, s): weights w_k, means a mu_k, variances a^2 v_k + s^2 (the law of
/// a x0 + s z for x0 ~ m), isotropic when m is.
gaussian_mixture noised_mixture(const gaussian_mixture& m, channel ch);

/// @p x (exact draws of x0, rows of d) moved to the channel (a, s): a x + s z, z ~ N(0, I). Row i's normals are those
/// of the library's Philox stream (seed, i, 0), drawn as its samplers draw them (four per block; src/cli/noise.cpp),
/// so the reference is the same under every C++ standard library.
void noise_to(std::vector<float>& x, std::int64_t d, channel ch, std::uint64_t seed);

/// Sums over @p measurements independent measurements of @p x (rows of d values in {-1, 1}), each coordinate flipped
/// with probability @p flip: the binary walk-jump's exact reference. Measurement r of row i takes its uniforms (53
/// bits from two outputs, one per coordinate) from the library's Philox stream (seed, i, r).
std::vector<float> flipped_sums(const std::vector<float>& x, std::int64_t d, double flip, std::int64_t measurements,
                                std::uint64_t seed);

/// "t = 0.3 (a = 0.9, s = 0.4)": a channel in the program's words (t omitted when NaN).
std::string channel_text(double t, channel ch);

/// The report's "prior" object: source, description, dim, components, isotropic.
json prior_json(const prior_spec& p, const std::string& source);

/// A report's first fields: "command", then the fields of @p first in order, "version" and "date".
json report_head(const std::string& command, const json& first = json::object());

/// Stages report @p j for --report, with "samples_file" naming the samples when --out wrote them.
void stage_report(output_set& out, const options& o, json& j);

}  // namespace diffsample::cli
