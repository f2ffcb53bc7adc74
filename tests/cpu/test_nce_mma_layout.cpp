// The tensor-core NCE gather's data layout (kernels/common/mma_layout.h),
// replayed on the CPU: one warp step -- the cp.async copies into a stage, the
// ldmatrix reads, mma.sync m16n8k16 for the scores and the gradient, the lane
// shuffles -- through a model of each instruction's documented lane mapping
// (PTX ISA), with the kernel's own index functions. The scores and gradient
// must equal V f and V^T c computed directly. This checks the layout
// arithmetic without a GPU; the GPU tests check the kernel itself.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "common/bf16.h"
#include "common/mma_layout.h"

using namespace npid;
namespace ml = npid::mma_layout;

namespace {

float widen(std::uint16_t b) { return bf16_to_float(bf16{b}); }
std::uint16_t round_bf16(float x) { return float_to_bf16(x).bits; }

// A register of two bf16: elements (lo, hi).
using Pair = std::array<float, 2>;
using Regs4 = std::array<Pair, 4>;

// ldmatrix .x4 on a stage: lane 8m + rr gives the byte address of row rr of
// matrix m; lane 4g + t receives, in register m, row g's elements 2t, 2t + 1
// (.trans: column g's elements of rows 2t, 2t + 1).
std::array<Regs4, 32> ldmatrix_x4(const std::vector<std::uint16_t>& stage, const std::array<int, 32>& addr,
                                  bool trans) {
  std::array<Regs4, 32> out{};
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int m = 0; m < 4; ++m) {
      auto at = [&](int row, int col) { return widen(stage[static_cast<std::size_t>(addr[8 * m + row] / 2 + col)]); };
      out[lane][m] = trans ? Pair{at(2 * t, g), at(2 * t + 1, g)} : Pair{at(g, 2 * t), at(g, 2 * t + 1)};
    }
  }
  return out;
}

// mma.sync m16n8k16: rebuild A (16 x 16), B (16 x 8) and C from the lanes'
// fragments, D = A B + C, and hand D back in C's layout.
void mma(std::array<std::array<double, 4>, 32>& c, const std::array<Regs4, 32>& a,
         const std::array<std::array<Pair, 2>, 32>& b) {
  double A[16][16] = {}, B[16][8] = {}, C[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 2; ++e) {
      A[g][2 * t + e] = a[lane][0][e];
      A[g + 8][2 * t + e] = a[lane][1][e];
      A[g][2 * t + 8 + e] = a[lane][2][e];
      A[g + 8][2 * t + 8 + e] = a[lane][3][e];
      B[2 * t + e][g] = b[lane][0][e];
      B[2 * t + 8 + e][g] = b[lane][1][e];
      C[g][2 * t + e] = c[lane][e];
      C[g + 8][2 * t + e] = c[lane][2 + e];
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
      double d = C[row][col];
      for (int k = 0; k < 16; ++k) d += A[row][k] * B[k][col];
      c[lane][e] = d;
    }
  }
}

// Part `part` of the kernel's three-way bf16 split of x (0 past part 2).
float split_part(float x, int part) {
  const float hi = widen(round_bf16(x));
  const float mid = widen(round_bf16(x - hi));
  const float lo = widen(round_bf16(x - hi - mid));
  return part == 0 ? hi : part == 1 ? mid : part == 2 ? lo : 0.f;
}

}  // namespace

TEST_CASE("tensor-core NCE layout: copies fill every chunk once, swizzled conflict-free", "[nce]") {
  std::set<int> written;
  for (int lane = 0; lane < 32; ++lane) {
    for (int q = 0; q < ml::kCopies; ++q) {
      const int row = ml::copy_row(lane, q), sub = lane & 7;
      // The kernel's shortcut: q's destination from the even/odd base.
      CHECK(ml::copy_dst(lane, q) == ml::copy_dst(lane, q & 1) + (q & ~1) * 4 * ml::kRowBytes);
      CHECK(ml::copy_dst(lane, q) + 128 == ml::chunk_offset(row, 8 + sub));
      for (int half = 0; half < 2; ++half) CHECK(written.insert(ml::chunk_offset(row, 8 * half + sub)).second);
    }
  }
  CHECK(written.size() == static_cast<std::size_t>(ml::kStepRows * 16));
  CHECK(*written.rbegin() == ml::kStageBytes - 16);
  // Each ldmatrix matrix (8 lanes) reads eight 16-byte chunks in eight
  // different groups of four banks; ks / mt >= 4 is the ks - 4 address + 128.
  for (int k = 0; k < ml::kKSteps; ++k) {
    for (int m = 0; m < 4; ++m) {
      std::set<int> score_groups, grad_groups;
      for (int rr = 0; rr < 8; ++rr) {
        const int lane = 8 * m + rr;
        score_groups.insert((ml::score_addr(lane, k) / 16) % 8);
        grad_groups.insert((ml::grad_addr(lane, k) / 16) % 8);
        CHECK(ml::score_addr(lane, k) == ml::score_addr(lane, k & 3) + (k >= 4 ? 128 : 0));
        CHECK(ml::grad_addr(lane, k) == ml::grad_addr(lane, k & 3) + (k >= 4 ? 128 : 0));
      }
      CHECK(score_groups.size() == 8);
      CHECK(grad_groups.size() == 8);
    }
  }
  // Rows and their owning lanes.
  for (int lane = 0; lane < 32; ++lane) {
    const int row = ml::row_of_lane(lane);
    if ((lane & 3) < 2) {
      CHECK(ml::owner_of_row(row) == lane);
    } else {
      CHECK(row == -1);
    }
  }
}

TEST_CASE("tensor-core NCE layout: a replayed warp step gives V f and V^T c", "[nce]") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  const int n = 40, D = ml::kDim;
  std::vector<std::uint16_t> bank(static_cast<std::size_t>(n) * D);
  for (auto& b : bank) b = round_bf16(normal(rng) * 0.1f);
  std::vector<float> f(D);
  for (auto& x : f) x = normal(rng) * 0.1f;
  std::array<int, 32> tile{};  // the tile's bank rows, one per column
  for (auto& r : tile) r = static_cast<int>(rng() % n);

  for (int half = 0; half < 2; ++half) {  // the tile's two steps
    INFO("step " << half);
    // Copies (cp.async): 16-byte chunks into the swizzled stage.
    std::vector<std::uint16_t> stage(ml::kStageBytes / 2, 0x7fc0);  // NaN: a chunk never copied shows
    for (int lane = 0; lane < 32; ++lane) {
      for (int q = 0; q < ml::kCopies; ++q) {
        const int bank_row = tile[static_cast<std::size_t>(half * ml::kStepRows + ml::copy_row(lane, q))];
        for (int h = 0; h < 2; ++h) {
          const int dst = (ml::copy_dst(lane, q) + 128 * h) / 2;
          const int src = bank_row * D + 64 * h + 8 * (lane & 7);
          for (int e = 0; e < 8; ++e) stage[static_cast<std::size_t>(dst + e)] = bank[static_cast<std::size_t>(src + e)];
        }
      }
    }
    // Scores: B = f's three parts in columns 0..2, two accumulator chains.
    std::array<std::array<double, 4>, 32> acc0{}, acc1{};
    for (int ks = 0; ks < ml::kKSteps; ++ks) {
      std::array<int, 32> addr{};
      std::array<std::array<Pair, 2>, 32> fb{};
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        addr[lane] = ml::score_addr(lane, ks);
        for (int e = 0; e < 2; ++e) {
          fb[lane][0][e] = split_part(f[static_cast<std::size_t>(16 * ks + 2 * t + e)], g);
          fb[lane][1][e] = split_part(f[static_cast<std::size_t>(16 * ks + 2 * t + 8 + e)], g);
        }
      }
      mma(ks % 2 == 0 ? acc0 : acc1, ldmatrix_x4(stage, addr, false), fb);
    }
    std::array<double, 32> p0{}, p1{};
    for (int lane = 0; lane < 32; ++lane) {
      p0[lane] = (acc0[lane][0] + acc1[lane][0]) + (acc0[lane][1] + acc1[lane][1]);
      p1[lane] = (acc0[lane][2] + acc1[lane][2]) + (acc0[lane][3] + acc1[lane][3]);
    }
    std::array<float, 32> coef{};
    std::vector<double> coef_of_row(ml::kStepRows, -1.0);
    for (int lane = 0; lane < 32; ++lane) {
      const int row = ml::row_of_lane(lane);
      if (row < 0) continue;
      const double score = (lane & 1) == 0 ? p0[lane] + p0[lane ^ 1] : p1[lane] + p1[lane ^ 1];
      const int bank_row = tile[static_cast<std::size_t>(half * ml::kStepRows + row)];
      double want = 0;
      for (int d = 0; d < D; ++d)
        want += double(widen(bank[static_cast<std::size_t>(bank_row * D + d)])) * f[static_cast<std::size_t>(d)];
      INFO("lane " << lane << " row " << row);
      CHECK(std::fabs(score - want) <= 1e-7 * (1 + std::fabs(want)));
      coef[lane] = unit(rng);
      coef_of_row[static_cast<std::size_t>(row)] = coef[lane];
    }
    for (double c : coef_of_row) CHECK(c >= 0);  // every row has an owner
    // Gradient: B = the coefficients' three parts, gathered from the owners.
    std::array<std::array<Pair, 2>, 32> cb{};
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane >> 2, t = lane & 3;
      for (int e = 0; e < 2; ++e) {
        cb[lane][0][e] = split_part(coef[static_cast<std::size_t>(ml::owner_of_row(2 * t + e))], g);
        cb[lane][1][e] = split_part(coef[static_cast<std::size_t>(ml::owner_of_row(2 * t + 8 + e))], g);
      }
    }
    std::vector<double> grad(D);
    for (int mt = 0; mt < ml::kKSteps; ++mt) {
      std::array<int, 32> addr{};
      for (int lane = 0; lane < 32; ++lane) addr[lane] = ml::grad_addr(lane, mt);
      std::array<std::array<double, 4>, 32> acc{};
      mma(acc, ldmatrix_x4(stage, addr, true), cb);
      for (int lane = 0; lane < 32; lane += 4) {  // t = 0: the pair (4g, 4g + 1)
        const int g = lane >> 2;
        grad[static_cast<std::size_t>(16 * mt + g)] = acc[lane][0] + acc[lane][1] + acc[lane + 1][0] + acc[lane + 1][1];
        grad[static_cast<std::size_t>(16 * mt + g + 8)] =
            acc[lane][2] + acc[lane][3] + acc[lane + 1][2] + acc[lane + 1][3];
      }
    }
    for (int d = 0; d < D; ++d) {
      double want = 0;
      for (int r = 0; r < ml::kStepRows; ++r) {
        const int bank_row = tile[static_cast<std::size_t>(half * ml::kStepRows + r)];
        want += coef_of_row[static_cast<std::size_t>(r)] * widen(bank[static_cast<std::size_t>(bank_row * D + d)]);
      }
      INFO("element " << d);
      CHECK(std::fabs(grad[static_cast<std::size_t>(d)] - want) <= 1e-7 * (1 + std::fabs(want)));
    }
  }
}
