// kernels/validate.h -- device-side input checks (internal). Each scans a
// device array and leaves a summary in `status` (device memory); the caller
// copies it back (one synchronization) and turns it into an npid::Error.
#pragma once

#include <cstdint>

#include "npid/context.h"

namespace npid {

struct CheckStatus {
  unsigned long long bad_count;
  long long first_bad;  // position of the first offending element, or INT64_MAX
};

void launch_check_index_range(Context& ctx, const std::int64_t* values, std::int64_t count,
                              std::int64_t upper, CheckStatus* status);
void launch_check_finite(Context& ctx, const float* values, std::int64_t count,
                         CheckStatus* status);

}  // namespace npid
