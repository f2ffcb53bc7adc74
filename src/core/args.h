// core/args.h -- argument checks shared by the checked entry points.
//
// Each throws npid::Error (kInvalidArgument) whose message names the op, the
// argument, what was expected and what came. The value checks
// (require_indices_below, require_finite) read the data: on CUDA they launch a
// scan and synchronize the stream once.
#pragma once

#include <cstdint>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

void require_present(const TensorView& v, const char* op, const char* arg);
void require_dtype(const TensorView& v, DType dtype, const char* op, const char* arg);
// A memory bank's storage: float32 or bfloat16.
void require_bank_dtype(const TensorView& v, const char* op, const char* arg);
void require_on(const TensorView& v, const Context& ctx, const char* op, const char* arg);
void require_shape(const TensorView& v, const Shape& shape, const char* op, const char* arg);
void require_rank(const TensorView& v, int rank, const char* op, const char* arg);
// present + dtype + device + exact shape, in that order.
void require_tensor(const TensorView& v, DType dtype, const Shape& shape, const Context& ctx,
                    const char* op, const char* arg);
// Outputs must not overlap inputs.
void require_no_overlap(const TensorView& out, const TensorView& in, const char* op,
                        const char* out_arg, const char* in_arg);

// A criterion's features (B, D) float32 and bank (N, D) float32/bf16 on ctx's
// device, with 1 <= B <= max_batch, 1 <= D <= kMaxDim, 1 <= N < 2^31.
struct CriterionShapes {
  std::int64_t batch, dim, bank_size;
};
CriterionShapes require_features_and_bank(const Context& ctx, const TensorView& features,
                                          const TensorView& bank, std::int64_t max_batch, const char* op);

// Every value in [0, upper).
void require_indices_below(Context& ctx, const TensorView& v, std::int64_t upper, const char* op,
                           const char* arg);
// Every value finite (float32).
void require_finite(Context& ctx, const TensorView& v, const char* op, const char* arg);

}  // namespace npid
