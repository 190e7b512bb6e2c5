/// @file export.hpp
/// @brief Symbol visibility for the shared library (everything not marked DIFFSAMPLE_API is hidden).
#pragma once

#if defined(DIFFSAMPLE_BUILDING)
#define DIFFSAMPLE_API __attribute__((visibility("default")))
#else
#define DIFFSAMPLE_API
#endif
