// Built against an installed prefix through find_package(diffsample): plain C++, no nvcc.
#include <cstdio>
#include <vector>

#include <diffsample/diffsample.hpp>

int main() {
  const auto mix = diffsample::grid_mixture(2, 5, 2.0, 0.25);
  std::vector<float> x(1000 * 2);
  mix.sample(x.data(), 1000, {}, 1, nullptr, 0, {diffsample::executor::cpu});
  diffsample::langevin_options o;
  o.steps = 10;
  const auto report = diffsample::langevin(mix, x.data(), {}, 1000, o, {diffsample::executor::cpu});
  std::printf("consumer: diffsample %s ran %s\n", diffsample::version(), diffsample::to_string(report.ran));
  return report.ran == diffsample::executor::cpu ? 0 : 1;
}
