// Argument checks (see core/args.h).
#include "core/args.h"

#include <cuda_runtime_api.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/check.h"
#include "core/context_impl.h"
#include "npid/error.h"
#include "common/limits.h"
#include "validate.h"

namespace npid {

void require_present(const TensorView& v, const char* op, const char* arg) {
  NPID_CHECK_ARG(!v.empty() || v.numel() == 0, op, arg, "expected a tensor, got an empty view");
}

void require_dtype(const TensorView& v, DType dtype, const char* op, const char* arg) {
  NPID_CHECK_ARG(v.dtype == dtype, op, arg,
                 "expected dtype " << to_string(dtype) << ", got " << to_string(v.dtype));
}

void require_bank_dtype(const TensorView& v, const char* op, const char* arg) {
  NPID_CHECK_ARG(v.dtype == DType::kFloat32 || v.dtype == DType::kBFloat16, op, arg,
                 "expected bank storage float32 or bfloat16, got " << to_string(v.dtype));
}

void require_on(const TensorView& v, const Context& ctx, const char* op, const char* arg) {
  NPID_CHECK_ARG(v.device == ctx.device(), op, arg,
                 "expected a tensor on " << ctx.device().str() << " (the context's device), got "
                                         << v.device.str());
}

void require_shape(const TensorView& v, const Shape& shape, const char* op, const char* arg) {
  NPID_CHECK_ARG(v.shape == shape, op, arg,
                 "expected shape " << shape.str() << ", got " << v.shape.str());
}

void require_rank(const TensorView& v, int rank, const char* op, const char* arg) {
  NPID_CHECK_ARG(v.shape.rank() == rank, op, arg,
                 "expected a " << rank << "-d tensor, got shape " << v.shape.str());
}

void require_tensor(const TensorView& v, DType dtype, const Shape& shape, const Context& ctx,
                    const char* op, const char* arg) {
  require_present(v, op, arg);
  require_dtype(v, dtype, op, arg);
  require_on(v, ctx, op, arg);
  require_shape(v, shape, op, arg);
}

void require_no_overlap(const TensorView& out, const TensorView& in, const char* op,
                        const char* out_arg, const char* in_arg) {
  if (out.empty() || in.empty() || out.device != in.device) return;
  const auto o0 = reinterpret_cast<std::uintptr_t>(out.data), o1 = o0 + out.bytes();
  const auto i0 = reinterpret_cast<std::uintptr_t>(in.data), i1 = i0 + in.bytes();
  NPID_CHECK_ARG(o1 <= i0 || i1 <= o0, op, out_arg,
                 "expected memory disjoint from '" << in_arg << "', got an overlapping view");
}

CriterionShapes require_features_and_bank(const Context& ctx, const TensorView& features,
                                          const TensorView& bank, std::int64_t max_batch, const char* op) {
  require_present(features, op, "features");
  require_dtype(features, DType::kFloat32, op, "features");
  require_on(features, ctx, op, "features");
  require_rank(features, 2, op, "features");
  const std::int64_t B = features.shape[0], D = features.shape[1];
  NPID_CHECK_ARG(B >= 1 && B <= max_batch, op, "features",
                 "expected a batch of 1 to " << max_batch << " rows, got shape " << features.shape.str());
  NPID_CHECK_ARG(D >= 1 && D <= kMaxDim, op, "features",
                 "expected an embedding width D in [1, " << kMaxDim << "], got shape " << features.shape.str());
  require_present(bank, op, "bank");
  require_bank_dtype(bank, op, "bank");
  require_on(bank, ctx, op, "bank");
  require_rank(bank, 2, op, "bank");
  const std::int64_t N = bank.shape[0];
  NPID_CHECK_ARG(bank.shape[1] == D, op, "bank",
                 "expected rows D = " << D << " wide (the features' width), got shape " << bank.shape.str());
  NPID_CHECK_ARG(N >= 1 && N <= 2147483647, op, "bank",
                 "expected between 1 and 2^31 - 1 rows, got shape " << bank.shape.str());
  return {B, D, N};
}

namespace {
// Runs a device scan and returns its status (synchronizes).
template <typename Launch>
CheckStatus device_scan(Context& ctx, Launch&& launch) {
  auto* status = static_cast<CheckStatus*>(ctx.impl().check_scratch);
  launch(status);
  CheckStatus host{};
  DeviceGuard guard(ctx.device());
  NPID_CUDA_CHECK(cudaMemcpyAsync(&host, status, sizeof host, cudaMemcpyDeviceToHost, ctx.stream()));
  NPID_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  return host;
}

template <typename T>
T read_element(Context& ctx, const TensorView& v, std::int64_t pos) {
  T value{};
  const auto* src = static_cast<const T*>(v.data) + pos;
  if (v.device.is_cuda()) {
    DeviceGuard guard(ctx.device());
    NPID_CUDA_CHECK(cudaMemcpyAsync(&value, src, sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()));
    NPID_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  } else {
    value = *src;
  }
  return value;
}

// "position 17 (row 2, column 3)" for 2-d tensors, "position 17" otherwise.
std::string describe_position(const TensorView& v, std::int64_t pos) {
  std::string s = "position " + std::to_string(pos);
  if (v.shape.rank() == 2 && v.shape[1] > 0)
    s += " (row " + std::to_string(pos / v.shape[1]) + ", column " + std::to_string(pos % v.shape[1]) + ")";
  return s;
}
}  // namespace

void require_indices_below(Context& ctx, const TensorView& v, std::int64_t upper, const char* op,
                           const char* arg) {
  require_dtype(v, DType::kInt64, op, arg);
  const std::int64_t n = v.numel();
  std::int64_t bad_count = 0, first = -1;
  if (v.device.is_cuda()) {
    const CheckStatus st = device_scan(ctx, [&](CheckStatus* s) {
      launch_check_index_range(ctx, static_cast<const std::int64_t*>(v.data), n, upper, s);
    });
    bad_count = static_cast<std::int64_t>(st.bad_count);
    first = st.first_bad;
  } else {
    const auto* p = static_cast<const std::int64_t*>(v.data);
    for (std::int64_t e = 0; e < n; ++e) {
      if (p[e] < 0 || p[e] >= upper) {
        if (bad_count++ == 0) first = e;
      }
    }
  }
  NPID_CHECK_ARG(bad_count == 0, op, arg,
                 "expected indices in [0, " << upper << "), got "
                     << read_element<std::int64_t>(ctx, v, first) << " at "
                     << describe_position(v, first) << " (" << bad_count << " out of range)");
}

void require_finite(Context& ctx, const TensorView& v, const char* op, const char* arg) {
  require_dtype(v, DType::kFloat32, op, arg);
  const std::int64_t n = v.numel();
  std::int64_t bad_count = 0, first = -1;
  if (v.device.is_cuda()) {
    const CheckStatus st = device_scan(ctx, [&](CheckStatus* s) {
      launch_check_finite(ctx, static_cast<const float*>(v.data), n, s);
    });
    bad_count = static_cast<std::int64_t>(st.bad_count);
    first = st.first_bad;
  } else {
    const auto* p = static_cast<const float*>(v.data);
    for (std::int64_t e = 0; e < n; ++e) {
      if (!std::isfinite(p[e])) {
        if (bad_count++ == 0) first = e;
      }
    }
  }
  NPID_CHECK_ARG(bad_count == 0, op, arg,
                 "expected finite values, got " << read_element<float>(ctx, v, first) << " at "
                                                << describe_position(v, first) << " ("
                                                << bad_count << " non-finite)");
}

}  // namespace npid
