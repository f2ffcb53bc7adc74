// kernels/nce.h -- the NCE op family's internal interface: the problem as raw
// pointers, the CUDA launcher (nce.cu) and the CPU reference (nce_cpu.cpp).
// Both implement the contract documented in include/npid/nce.h; the checked
// entry point (src/nce.cpp) validates arguments and picks one.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/bf16.h"
#include "common/limits.h"
#include "npid/context.h"
#include "npid/nce.h"

namespace npid {

// eps in a = K * Pn + eps (docs/math.md s.3).
constexpr double kNceEps = 1e-7;

struct NceProblem {
  const float* features = nullptr;     // (B, D)
  const std::int64_t* targets = nullptr;  // (B)
  const void* bank = nullptr;          // (N, D), float32 or bf16 per bank_dtype
  DType bank_dtype = DType::kFloat32;
  const std::int64_t* negatives = nullptr;  // (B, K) or null: draw in-kernel
  std::int64_t batch = 0, dim = 0, bank_size = 0, num_negatives = 0;
  float temperature = 0.07f;
  float lambda = 0.f;
  float z_decay = 0.99f;
  bool exclude_positive = false;
  std::uint64_t seed = 0, step = 0;
  // CUDA: when set, the sampling step is read from this device word at run
  // time instead of `step` (a captured CUDA graph replays with new steps).
  const std::uint64_t* step_device = nullptr;
  float* z = nullptr;             // (1) in/out
  float* loss = nullptr;          // (1)
  float* grad = nullptr;          // (B, D)
  float* probs = nullptr;         // (B, K+1) or null
  std::int64_t* indices = nullptr;  // (B, K+1) or null
};

// ---- CUDA (kernels/nce.cu) --------------------------------------------------
std::size_t nce_cuda_workspace_bytes(std::int64_t batch, std::int64_t dim, std::int64_t negatives);
// The gather grid is (splits, B): B is a grid y-dimension.
constexpr std::int64_t kNceMaxBatch = 65535;
// Every fp32 quantity built from exp(s / tau), |s| <= 1, must stay finite:
// exp(1/tau) itself (1/tau < 88.7), a lane's sum of up to 2^20 such terms
// (1/tau < 74.8) and Z = N mean exp(s / tau) for N < 2^31 (1/tau < 67.2).
constexpr float kNceMinTemperature = 0.015f;
void launch_nce_forward_backward(Context& ctx, const NceProblem& p, ZUpdate z_update);
// Tuning hook for bench_nce_kernel and the GPU tests: the D <= 128 gather
// kernel's lanes per row, its row ring, and pipeline stages. kRegisters: the
// ring of raw row buffers in registers, one tile per warp, 2-4 stages
// (instantiated: 8 x {2,3,4}, 16 x {2,3,4}); kAsync: cp.async into a ring in
// shared memory, running on across a warp's tiles (4 x 4, 8 x {4,8},
// 16 x {4,8}; where rows are 16-byte aligned); kTensorCore: the async ring
// feeding mma.sync, a warp per 16-row step (lanes = 32, 2 or 4 stages; bf16
// banks with D = 128 and 16-byte aligned rows). Where a variant's conditions
// do not hold, or its shared-memory ring (up to 128 KB) exceeds what a block
// of the device may opt into (99 KB on sm_86 / sm_89), the default runs.
// lanes = 0 restores the default (fp32: 16 lanes x 2 stages, registers;
// bf16: 8 x 4, async, where aligned).
enum class NceRing { kRegisters, kAsync, kTensorCore };
void nce_set_layout_override(int lanes, int stages, NceRing ring = NceRing::kRegisters);
// The override in force, as the code below (0: the default layout).
int nce_layout_override();
// The D <= 128-style code of the gather kernel the last CUDA call launched:
// ring (1000 for kAsync, 2000 for kTensorCore) + lanes * 10 + stages (e.g.
// 162 = the fp32 default, 1084 the bf16 default, 2324 the 4-stage tensor core).
int nce_last_layout();
// Tuning hook for bench_nce_kernel: column splits per sample (blocks per
// sample in the gather grid), clamped to [1, min(ceil(K / 32), the cap)];
// 0 restores the automatic choice. nce_last_splits: what the last call used.
void nce_set_splits_override(int splits);
int nce_last_splits();

// ---- CPU reference (kernels/nce_cpu.cpp) ------------------------------------
void nce_forward_backward_cpu(const NceProblem& p, ZUpdate z_update, int threads);

// The math itself, templated on the real type so tests can run it in double
// (finite differences), and on the bank's storage type (Real, or bf16 with
// Real = float). Accumulates in double whatever Real is. Z is given.
template <typename Real, typename BankT = Real>
struct NceReferenceArgs {
  const Real* features = nullptr;
  const std::int64_t* targets = nullptr;
  const BankT* bank = nullptr;
  const std::int64_t* negatives = nullptr;
  std::int64_t batch = 0, dim = 0, bank_size = 0, num_negatives = 0;
  Real temperature = Real(0.07), lambda = Real(0), z = Real(1);
  bool exclude_positive = false;
  std::uint64_t seed = 0, step = 0;
  Real* grad = nullptr;           // optional
  Real* probs = nullptr;          // optional
  std::int64_t* indices = nullptr;  // optional
};

template <typename Real>
struct NceReferenceResult {
  Real loss = 0;
  // sum over all B*(K+1) entries of exp(s_ij / tau), for Z estimation.
  Real sum_exp = 0;
};

template <typename Real, typename BankT>
NceReferenceResult<Real> nce_reference(const NceReferenceArgs<Real, BankT>& args, int threads);

}  // namespace npid
