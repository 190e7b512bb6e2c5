// SVG plots of the diffsample program (plot.hpp).
#include "cli/plot.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "cli/args.hpp"

namespace diffsample::cli {
namespace {

/// Round tick values in [lo, hi]: multiples of 1, 2 or 5 times a power of ten, 4 to 10 of them. The ticks are
/// counted, not stepped to: where lo and hi are a few ulps apart far from 0 (every plotted point at one value, such
/// as 3e9, leaves a frame 1.1e-6 wide) the step lies below the ulp, and `t += step` left t unchanged, so the loop
/// never ended. Values that round to the one before are left out.
std::vector<double> round_ticks(double lo, double hi) {
  std::vector<double> ticks;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return ticks;
  const double raw = (hi - lo) / 5, power = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / power < 1.5 ? power : raw / power < 3.5 ? 2 * power : raw / power < 7.5 ? 5 * power
                                                                                                     : 10 * power;
  const double start = std::ceil(lo / step) * step, count = std::floor((hi - start) / step + 1e-9);
  for (int i = 0; i <= count && i <= 10; ++i) {  // count is at most 7 but for rounding (a NaN count gives none)
    const double t = start + i * step;
    if (t > hi + 1e-9 * step) break;
    const double tick = std::fabs(t) < 1e-9 * step ? 0.0 : t;
    if (ticks.empty() || tick > ticks.back()) ticks.push_back(tick);
  }
  return ticks;
}

}  // namespace

std::vector<component_2d> marginals(const gaussian_mixture& m) {
  const std::int64_t d = m.dim(), cy = d >= 2 ? 1 : 0;
  const auto& mu = m.means();
  const auto& v = m.variances();
  std::vector<component_2d> c;
  for (std::int64_t k = 0; k < m.components(); ++k) {
    const double v0 = m.isotropic() ? v[k] : v[k * d], v1 = m.isotropic() ? v[k] : v[k * d + cy];
    c.push_back({mu[k * d], mu[k * d + cy], v0, d >= 2 ? 0.0 : v0, v1});
  }
  return c;
}

std::vector<component_2d> marginals(const mixture_posterior& p) { return marginals(p, channel{}); }

std::vector<component_2d> marginals(const mixture_posterior& p, channel ch) {
  const std::int64_t d = p.dim(), cy = d >= 2 ? 1 : 0;
  const double a = ch.a, a2 = ch.a * ch.a, s2 = ch.s * ch.s;
  std::vector<component_2d> c;
  for (std::int64_t k = 0; k < p.components(); ++k) {
    if (p.weights()[k] < 1e-3) continue;
    const double* S = p.covariances().data() + k * d * d;
    const double* m = p.means().data() + k * d;
    c.push_back({a * m[0], a * m[cy], a2 * S[0] + s2, a2 * S[cy] + (d >= 2 ? 0.0 : s2), a2 * S[cy * d + cy] + s2});
  }
  return c;
}

std::string svg_plot(const std::string& title, const float* ref, std::int64_t n_ref, const float* x, std::int64_t n,
                     std::int64_t d, const std::vector<component_2d>& components, const char* x_label,
                     const char* ref_label) {
  const int size = 640, pad = 64;
  const std::int64_t shown = 3000;
  const int cy = d >= 2 ? 1 : 0;
  double lo0 = INFINITY, hi0 = -INFINITY, lo1 = INFINITY, hi1 = -INFINITY;
  auto extend = [&](const float* p, std::int64_t count) {
    for (std::int64_t i = 0; i < std::min(count, shown); ++i) {
      const double a = p[i * d], b = p[i * d + cy];
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      lo0 = std::min(lo0, a), hi0 = std::max(hi0, a), lo1 = std::min(lo1, b), hi1 = std::max(hi1, b);
    }
  };
  extend(ref ? ref : x, ref ? n_ref : n);  // the frame follows the reference so that outliers do not shrink it
  if (!std::isfinite(lo0)) lo0 = lo1 = -1, hi0 = hi1 = 1;
  const double c0 = 0.5 * (lo0 + hi0), c1 = 0.5 * (lo1 + hi1);
  const double half = 0.55 * std::max({hi0 - lo0, hi1 - lo1, 1e-6});
  const double scale = (size - 2 * pad) / (2 * half);
  auto px = [&](double a) { return pad + (a - (c0 - half)) * scale; };
  auto py = [&](double b) { return size - pad - (b - (c1 - half)) * scale; };
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << size << "\" height=\"" << size + 24
    << "\" viewBox=\"0 0 " << size << ' ' << size + 24 << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << size / 2 << "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">" << title << "</text>\n"
    << "<rect x=\"" << pad << "\" y=\"" << pad << "\" width=\"" << size - 2 * pad << "\" height=\"" << size - 2 * pad
    << "\" fill=\"none\" stroke=\"black\"/>\n"
    << "<clipPath id=\"frame\"><rect x=\"" << pad << "\" y=\"" << pad << "\" width=\"" << size - 2 * pad
    << "\" height=\"" << size - 2 * pad << "\"/></clipPath>\n<g clip-path=\"url(#frame)\">\n";
  auto dots = [&](const float* p, std::int64_t count, const char* colour) {
    s << "<g fill=\"" << colour << "\" fill-opacity=\"0.45\">\n";
    for (std::int64_t i = 0; i < std::min(count, shown); ++i) {
      const double a = p[i * d], b = p[i * d + cy];
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      s << "<circle cx=\"" << px(a) << "\" cy=\"" << py(b) << "\" r=\"1.6\"/>\n";
    }
    s << "</g>\n";
  };
  if (ref) dots(ref, n_ref, "#9a9a9a");
  dots(x, n, "#1f5fbf");
  if (!components.empty()) {
    // The 1- and 2-standard-deviation ellipses of each component's 2-D marginal (principal axes of its covariance;
    // the angle is negated because the SVG y axis points down).
    s << "<g fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1\">\n";
    for (std::size_t k = 0; k < std::min<std::size_t>(components.size(), 400); ++k) {
      const component_2d& c = components[k];
      const double mid = 0.5 * (c.xx + c.yy), half_diff = 0.5 * (c.xx - c.yy);
      const double root = std::sqrt(half_diff * half_diff + c.xy * c.xy);
      const double l1 = std::max(mid + root, 0.0), l2 = std::max(mid - root, 0.0);
      const double angle = -0.5 * std::atan2(2 * c.xy, c.xx - c.yy) * 180.0 / M_PI;
      for (int r = 1; r <= 2; ++r)
        s << "<ellipse cx=\"" << px(c.x) << "\" cy=\"" << py(c.y) << "\" rx=\"" << r * std::sqrt(l1) * scale
          << "\" ry=\"" << r * std::sqrt(l2) * scale << "\" transform=\"rotate(" << angle << ' ' << px(c.x) << ' '
          << py(c.y) << ")\"/>\n";
    }
    s << "</g>\n";
  }
  s << "</g>\n";
  s.precision(3);
  // Axis ticks at round values (1, 2 or 5 times a power of ten) inside the frame.
  s.precision(1);
  for (double t : round_ticks(c0 - half, c0 + half))
    s << "<line x1=\"" << px(t) << "\" y1=\"" << size - pad << "\" x2=\"" << px(t) << "\" y2=\"" << size - pad + 5
      << "\" stroke=\"black\"/><text x=\"" << px(t) << "\" y=\"" << size - pad + 18 << "\" text-anchor=\"middle\">"
      << fmt(t, 4) << "</text>\n";
  for (double t : round_ticks(c1 - half, c1 + half))
    s << "<line x1=\"" << pad - 5 << "\" y1=\"" << py(t) << "\" x2=\"" << pad << "\" y2=\"" << py(t)
      << "\" stroke=\"black\"/><text x=\"" << pad - 8 << "\" y=\"" << py(t) + 4 << "\" text-anchor=\"end\">"
      << fmt(t, 4) << "</text>\n";
  s << "<text x=\"" << size / 2 << "\" y=\"" << size - 12 << "\" text-anchor=\"middle\">x[0]</text>\n"
    << "<text x=\"14\" y=\"" << size / 2 << "\" transform=\"rotate(-90 14 " << size / 2
    << ")\" text-anchor=\"middle\">x[" << cy << "]</text>\n";
  // Legend.
  int ly = size + 10;
  s << "<circle cx=\"" << pad << "\" cy=\"" << ly - 4 << "\" r=\"4\" fill=\"#1f5fbf\"/><text x=\"" << pad + 8
    << "\" y=\"" << ly << "\">" << x_label << "</text>\n";
  if (ref)
    s << "<circle cx=\"" << pad + 220 << "\" cy=\"" << ly - 4 << "\" r=\"4\" fill=\"#9a9a9a\"/><text x=\"" << pad + 228
      << "\" y=\"" << ly << "\">" << ref_label << "</text>\n";
  if (!components.empty())
    s << "<ellipse cx=\"" << pad + 400 << "\" cy=\"" << ly - 4
      << "\" rx=\"6\" ry=\"4\" fill=\"none\" stroke=\"#c0392b\"/>"
      << "<text x=\"" << pad + 410 << "\" y=\"" << ly << "\">components: 1 and 2 sd</text>\n";
  s << "</svg>\n";
  return s.str();
}

std::string svg_ess_plot(const std::string& title, const std::vector<float>& trace, std::int64_t problems,
                         std::int64_t steps, std::int64_t particles, double threshold) {
  const int width = 640, height = 400, left = 64, right = 24, top = 40, bottom = 72;
  const int plot_w = width - left - right, plot_h = height - top - bottom;
  const std::int64_t shown = std::min<std::int64_t>(problems, 8);
  const char* colours[8] = {"#1f5fbf", "#c0392b", "#27ae60", "#8e44ad", "#d68910", "#17a589", "#7f8c8d", "#2c3e50"};
  auto px = [&](double step) { return left + (steps > 0 ? step / double(steps) : 0.0) * plot_w; };
  auto py = [&](double r) { return top + (1 - std::clamp(r, 0.0, 1.0)) * plot_h; };
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height << "\" viewBox=\"0 0 "
    << width << ' ' << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << title << "</text>\n";
  // Grid and ticks: ESS / N at 0, 0.25, ..., 1; steps at fifths of the run.
  s << "<g stroke=\"#e3e3e3\">\n";
  for (int i = 0; i <= 4; ++i)
    s << "<line x1=\"" << left << "\" y1=\"" << py(i / 4.0) << "\" x2=\"" << left + plot_w << "\" y2=\"" << py(i / 4.0)
      << "\"/>\n";
  s << "</g>\n";
  for (int i = 0; i <= 4; ++i)
    s << "<text x=\"" << left - 6 << "\" y=\"" << py(i / 4.0) + 4 << "\" text-anchor=\"end\">" << fmt(i / 4.0, 3)
      << "</text>\n";
  for (int i = 0; i <= 5; ++i) {
    const std::int64_t step = steps * i / 5;
    s << "<line x1=\"" << px(double(step)) << "\" y1=\"" << top + plot_h << "\" x2=\"" << px(double(step)) << "\" y2=\""
      << top + plot_h + 5 << "\" stroke=\"black\"/>\n"
      << "<text x=\"" << px(double(step)) << "\" y=\"" << top + plot_h + 18 << "\" text-anchor=\"middle\">" << step
      << "</text>\n";
  }
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
    << "\" fill=\"none\" stroke=\"black\"/>\n"
    << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << top + plot_h + 36 << "\" text-anchor=\"middle\">step</text>\n"
    << "<text x=\"16\" y=\"" << top + plot_h / 2 << "\" transform=\"rotate(-90 16 " << top + plot_h / 2
    << ")\" text-anchor=\"middle\">ESS / N (N = " << particles << ")</text>\n";
  // The resampling threshold.
  if (threshold > 0 && threshold <= 1)
    s << "<line x1=\"" << left << "\" y1=\"" << py(threshold) << "\" x2=\"" << left + plot_w << "\" y2=\""
      << py(threshold) << "\" stroke=\"black\" stroke-width=\"1\" stroke-dasharray=\"6 4\"/>\n";
  // One polyline per problem.
  const std::int64_t points = steps + 1;
  for (std::int64_t b = 0; b < shown; ++b) {
    const float* e = trace.data() + b * points;
    s << "<polyline fill=\"none\" stroke=\"" << colours[b] << "\" stroke-width=\"1.5\" stroke-linejoin=\"round\" "
      << "points=\"";
    auto point = [&](std::int64_t k) { s << px(double(k)) << ',' << py(double(e[k]) / double(particles)) << ' '; };
    if (points <= 2 * plot_w) {
      for (std::int64_t k = 0; k < points; ++k) point(k);
    } else {
      for (int c = 0; c < plot_w; ++c) {
        const std::int64_t lo = points * c / plot_w, hi = points * (c + 1) / plot_w;
        std::int64_t kmin = lo, kmax = lo;
        for (std::int64_t k = lo; k < hi; ++k) {
          if (e[k] < e[kmin]) kmin = k;
          if (e[k] > e[kmax]) kmax = k;
        }
        point(std::min(kmin, kmax));
        if (kmin != kmax) point(std::max(kmin, kmax));
      }
    }
    s << "\"/>\n";
  }
  // Legend, below the axis label.
  const int ly = height - 14;
  int lx = left;
  for (std::int64_t b = 0; b < shown; ++b) {
    const std::string name = problems == 1 ? "ESS / N" : "problem " + std::to_string(b + 1);
    s << "<line x1=\"" << lx << "\" y1=\"" << ly - 4 << "\" x2=\"" << lx + 18 << "\" y2=\"" << ly - 4 << "\" stroke=\""
      << colours[b] << "\" stroke-width=\"2\"/><text x=\"" << lx + 22 << "\" y=\"" << ly << "\">" << name
      << "</text>\n";
    lx += 40 + 7 * int(name.size());
  }
  if (problems > shown) {
    s << "<text x=\"" << lx << "\" y=\"" << ly << "\">(first " << shown << " of " << problems << ")</text>\n";
    lx += 110;
  }
  if (threshold > 0 && threshold <= 1)
    s << "<line x1=\"" << lx << "\" y1=\"" << ly - 4 << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly - 4
      << "\" stroke=\"black\" stroke-dasharray=\"6 4\"/><text x=\"" << lx + 28 << "\" y=\"" << ly
      << "\">resampling threshold " << fmt(threshold, 3) << " (below it the particles are resampled)</text>\n";
  s << "</svg>\n";
  return s.str();
}

}  // namespace diffsample::cli
