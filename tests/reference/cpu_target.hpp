// Forcing the CPU executor's SIMD target in a test (DIFFSAMPLE_CPU_TARGET), shared by the tests that compare targets.
#pragma once

#include <cstdlib>
#include <string>

namespace diffsample::testing {

/// Runs f with the CPU executor's target forced to `target` (DIFFSAMPLE_CPU_TARGET), or with the variable unset
/// (the widest target the CPU has) when `target` is null; the caller's setting is restored afterwards, so a suite
/// run under DIFFSAMPLE_CPU_TARGET keeps it for the tests that follow.
template <class F>
void with_target(const char* target, F f) {
  const char* outer = std::getenv("DIFFSAMPLE_CPU_TARGET");
  const std::string saved = outer != nullptr ? outer : "";
  if (target != nullptr)
    setenv("DIFFSAMPLE_CPU_TARGET", target, 1);
  else
    unsetenv("DIFFSAMPLE_CPU_TARGET");
  f();
  if (outer != nullptr)
    setenv("DIFFSAMPLE_CPU_TARGET", saved.c_str(), 1);
  else
    unsetenv("DIFFSAMPLE_CPU_TARGET");
}

}  // namespace diffsample::testing
