// The exact score of an empirical distribution: the 1,797 handwritten 8 x 8 digits of examples/digits_points.npy as
// a mixture of 1,797 equal-weight components N(point_i, v I) with a tiny v (gaussian_mixture::empirical). Its
// denoiser at every noise level is the optimal denoiser a diffusion model trained to zero loss would learn, and the
// closed form predicts that sampling with it reproduces training points: DDPM and the probability-flow ODE are run
// with it (a diffusion_plan fed evaluate()'s denoiser on the gemm path, forced here: at d = 64 the automatic choice
// would take the direct path, which is as fast at this size), and each
// sample's distance to its nearest training digit is printed beside the typical distance between two training
// digits. An SVG shows samples above their nearest training digits.
//
// Usage: empirical_digits [examples/digits_points.npy] [chains=64] [steps=200] [out.svg]
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <diffsample/diffsample.hpp>

namespace ds = diffsample;

namespace {

// A 2-D little-endian float32 or float64 .npy array in C order, as rows x cols doubles.
std::vector<double> read_npy(const std::string& path, std::int64_t& rows, std::int64_t& cols) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not a .npy file");
  std::uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (std::uint32_t(b[3]) << 24);
  }
  std::string header(header_len, ' ');
  in.read(&header[0], header_len);
  const bool f4 = header.find("'<f4'") != std::string::npos, f8 = header.find("'<f8'") != std::string::npos;
  if ((!f4 && !f8) || header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": expected a C-order <f4 or <f8 array");
  const auto open = header.find('(', header.find("'shape'"));
  if (std::sscanf(header.c_str() + open, "(%ld, %ld)", &rows, &cols) != 2)
    throw std::runtime_error(path + ": expected a 2-D array");
  std::vector<double> v(std::size_t(rows * cols));
  if (f8) {
    in.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 8));
  } else {
    std::vector<float> f(v.size());
    in.read(reinterpret_cast<char*>(f.data()), std::streamsize(f.size() * 4));
    std::copy(f.begin(), f.end(), v.begin());
  }
  if (!in) throw std::runtime_error(path + ": truncated");
  return v;
}

struct neighbour {
  std::int64_t index;
  double distance;
};

neighbour nearest(const float* x, const std::vector<double>& data, std::int64_t n, std::int64_t d,
                  std::int64_t skip = -1) {
  neighbour best{-1, INFINITY};
  for (std::int64_t i = 0; i < n; ++i) {
    if (i == skip) continue;
    double q = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      const double e = x[j] - data[i * d + j];
      q += e * e;
    }
    if (q < best.distance) best = {i, q};
  }
  best.distance = std::sqrt(best.distance);
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Samples (top row) above their nearest training digits (bottom row), 8 x 8 grey squares each. Throws if the file
// cannot be opened, written or closed (a full disk, /dev/full: the stream fails at its last flush), so that the
// program never reports a picture it did not write.
void write_svg(const std::string& path, const std::vector<std::vector<float>>& rows, int count) {
  errno = 0;
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno ? errno : EIO));
  const int cell = 4, gap = 6, size = 8 * cell;
  const int width = count * (size + gap) + gap, height = int(rows.size()) * (size + gap) + gap;
  out << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' shape-rendering='crispEdges'>\n<rect width='100%' height='100%' fill='white'/>\n";
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (int s = 0; s < count; ++s)
      for (int p = 0; p < 64; ++p) {
        const double v = std::clamp(double(rows[r][std::size_t(s) * 64 + p]), 0.0, 1.0);
        const int grey = int(std::lround(255 * (1 - v)));
        out << "<rect x='" << gap + s * (size + gap) + (p % 8) * cell << "' y='"
            << gap + int(r) * (size + gap) + (p / 8) * cell << "' width='" << cell << "' height='" << cell
            << "' fill='rgb(" << grey << "," << grey << "," << grey << ")'/>\n";
      }
  out << "</svg>\n";
  errno = 0;
  out.close();  // flushes: a write error shows here at the latest
  if (!out) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno ? errno : EIO));
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string path = argc > 1 ? argv[1] : "examples/digits_points.npy";
  const std::int64_t chains = argc > 2 ? std::atoll(argv[2]) : 64;
  const std::int64_t steps = argc > 3 ? std::atoll(argv[3]) : 200;
  const std::string svg = argc > 4 ? argv[4] : "";
  std::int64_t n = 0, d = 0;
  const std::vector<double> data = read_npy(path, n, d);
  const double variance = 1e-6;  // pixel noise of 0.001 on [0, 1] pixels: an empirical distribution in all but name
  const ds::gaussian_mixture prior = ds::gaussian_mixture::empirical(n, d, data.data(), variance);

  // Typical distance between two different training digits (each digit to its nearest other one).
  std::vector<double> train_nn;
  for (std::int64_t i = 0; i < n; i += 7) {
    std::vector<float> xi(data.begin() + i * d, data.begin() + (i + 1) * d);
    train_nn.push_back(nearest(xi.data(), data, n, d, i).distance);
  }
  ds::evaluate_options gemm;
  gemm.path = ds::mixture_path::gemm;
  std::printf("empirical prior: %ld digits x %ld pixels, variance %g (CPU BLAS: %s)\n", long(n), long(d), variance,
              ds::cpu_blas_name().c_str());
  std::printf("training digits: median distance to the nearest other training digit %.3f (min %.3f)\n",
              median(train_nn), *std::min_element(train_nn.begin(), train_nn.end()));

  std::vector<std::vector<float>> picture;
  int shown = 0;
  for (ds::diffusion_sampler sampler : {ds::diffusion_sampler::ddpm, ds::diffusion_sampler::ode_euler}) {
    ds::diffusion_options o;
    o.sampler = sampler;
    o.steps = steps;
    o.schedule = ds::noise_schedule::vp_linear().with_grid(ds::time_grid::uniform, 1.0, 1e-3);
    o.final_denoise = true;
    o.seed = 2026;
    ds::diffusion_plan plan(chains, d, o, ds::model_output::denoiser, {ds::executor::cpu});
    std::vector<float> x(std::size_t(chains * d)), model(x.size());
    ds::mixture_path used = ds::mixture_path::automatic;
    plan.reset(x.data());
    for (std::int64_t k = 0; k < plan.steps(); ++k) {
      used = prior.evaluate(model.data(), chains, x.data(), plan.step_channel(k), ds::quantity::denoiser, gemm,
                            {ds::executor::cpu}).path;
      plan.step(x.data(), model.data());
    }
    if (plan.needs_final_jump()) {
      prior.evaluate(model.data(), chains, x.data(), plan.step_channel(plan.steps()), ds::quantity::denoiser, gemm,
                     {ds::executor::cpu});
      plan.finish(x.data(), model.data());
    }
    std::vector<double> dist;
    std::vector<std::int64_t> index;
    for (std::int64_t c = 0; c < chains; ++c) {
      const neighbour nb = nearest(x.data() + c * d, data, n, d);
      dist.push_back(nb.distance);
      index.push_back(nb.index);
    }
    std::vector<std::int64_t> distinct(index);
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    const auto copies = std::count_if(dist.begin(), dist.end(), [](double v) { return v < 0.05; });
    std::printf("%-10s %ld chains, %ld steps (%s path): nearest-training-digit distance median %.2g, max %.2g; "
                "%ld of %ld samples within 0.05 of a training digit (%zu distinct digits)\n",
                ds::to_string(sampler), long(chains), long(steps), ds::to_string(used), median(dist),
                *std::max_element(dist.begin(), dist.end()), long(copies), long(chains), distinct.size());
    if (!svg.empty()) {
      shown = int(std::min<std::int64_t>(chains, 16));
      std::vector<float> samples(x.begin(), x.begin() + shown * d), neighbours(std::size_t(shown * d));
      for (int c = 0; c < shown; ++c)
        for (std::int64_t j = 0; j < d; ++j) neighbours[c * d + j] = float(data[index[c] * d + j]);
      picture.push_back(samples);
      picture.push_back(neighbours);
    }
  }
  if (!svg.empty()) {
    write_svg(svg, picture, shown);
    std::printf("wrote %s: rows DDPM samples, their nearest training digits, ODE samples, theirs\n", svg.c_str());
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "empirical_digits: %s\n", e.what());
  return 1;
}
