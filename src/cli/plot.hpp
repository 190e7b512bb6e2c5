// SVG plots of the diffsample program: samples over exact reference samples with the components' 1- and
// 2-standard-deviation ellipses (sample, solve), and the SMC effective sample size along a run (solve --ess-plot).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <diffsample/mixture.hpp>
#include <diffsample/posterior.hpp>

namespace diffsample::cli {

/// A component's 2-D marginal in the plotted coordinates: mean and covariance [[xx, xy], [xy, yy]].
struct component_2d {
  double x, y, xx, xy, yy;
};

/// The 2-D marginals of a mixture's components (coordinates 0 and 1, or 0 and 0 in one dimension).
std::vector<component_2d> marginals(const gaussian_mixture& m);
/// The 2-D marginals of the posterior components whose weight is at least 1e-3.
std::vector<component_2d> marginals(const mixture_posterior& p);
/// The same noised to the channel (a, s): means a m'_k, covariances a^2 S'_k + s^2 I.
std::vector<component_2d> marginals(const mixture_posterior& p, channel ch);

/// An SVG scatter plot of the first two coordinates of n x d samples @p x (blue) over n_ref reference points
/// @p ref (grey; none when null), with the 1- and 2-standard-deviation ellipses of @p components (red), in a
/// square frame that follows the reference.
std::string svg_plot(const std::string& title, const float* ref, std::int64_t n_ref, const float* x, std::int64_t n,
                     std::int64_t d, const std::vector<component_2d>& components, const char* x_label,
                     const char* ref_label);

/// An SVG line plot of SMC effective sample sizes: ESS / N against the step, one polyline per problem (the first 8
/// of a B x (steps + 1) trace), with the resampling threshold dashed. A resampling shows as a jump back up to 1.
/// Traces longer than twice the plot's width keep the lowest and highest value of each pixel column.
std::string svg_ess_plot(const std::string& title, const std::vector<float>& trace, std::int64_t problems,
                         std::int64_t steps, std::int64_t particles, double threshold);

}  // namespace diffsample::cli
