/// @file diffsample.hpp
/// @brief Umbrella header of the C++ API.
#pragma once

#include <diffsample/binary.hpp>
#include <diffsample/diffusion.hpp>
#include <diffsample/error.hpp>
#include <diffsample/guided.hpp>
#include <diffsample/execution.hpp>
#include <diffsample/langevin.hpp>
#include <diffsample/limits.hpp>
#include <diffsample/metrics.hpp>
#include <diffsample/mixture.hpp>
#include <diffsample/observation.hpp>
#include <diffsample/particles.hpp>
#include <diffsample/plan.hpp>
#include <diffsample/posterior.hpp>
#include <diffsample/schedule.hpp>

namespace diffsample {
/// Library version string, "major.minor.patch".
DIFFSAMPLE_API const char* version() noexcept;
}  // namespace diffsample
