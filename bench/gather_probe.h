// gather_probe.h -- a benchmark-only kernel that measures the ceiling the
// fused NCE kernel's gather works against: read `rows` pseudo-random rows of
// a (bank_size, 128) bank (fp32: 512-byte rows, bf16: 256-byte rows) with the
// least arithmetic that keeps the loads alive, many rows in flight per warp.
// Comparing the NCE kernel's time with this one at the same N and row count
// separates the memory system's limit from the kernel's own overhead.
#pragma once

#include <cstdint>

#include "npid/context.h"

namespace npid::bench {

// Enqueues the probe on `stream`; `sink` receives one float per warp
// (gather_probe_sink_floats of them) so that the loads are not optimized away.
void launch_gather_probe(const void* bank, bool bf16, std::int64_t bank_size, std::int64_t rows,
                         float* sink, StreamHandle stream);
std::int64_t gather_probe_sink_floats(std::int64_t rows);

}  // namespace npid::bench
