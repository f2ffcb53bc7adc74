// common/mma_layout.h -- where the tensor-core NCE gather (kernels/nce.cu,
// nce_negatives_mma_kernel) puts and finds things, shared verbatim by the
// kernel and by a CPU test that replays one warp step through a model of
// cp.async, ldmatrix and mma.sync m16n8k16 (tests/cpu/test_nce_mma_layout.cpp).
//
// A warp step is 16 bank rows of 128 bf16 (256 bytes each) in a 4 KB stage of
// shared memory. Chunk c (16 bytes, elements 8c..8c+7) of step row r sits at
// byte r * 256 + (c ^ (r & 7)) * 16: the XOR swizzle puts the eight rows an
// ldmatrix matrix reads in eight different bank groups.
//
// mma.sync m16n8k16 fragments (PTX ISA), lane = 4 g + t:
//   A (16 x 16, row):  a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B (16 x 8, col):   b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C (16 x 8):        c0, c1 = C[g][2t], C[g][2t+1];  c2, c3 = C[g+8][2t], C[g+8][2t+1]
// ldmatrix .x4: lane 8m + rr addresses row rr of matrix m, which lands in
// register m; lane 4g + t receives row g, elements 2t, 2t+1 (.trans: rows 2t,
// 2t+1 of column g).
#pragma once

#include "common/hostdevice.h"

namespace npid {
namespace mma_layout {

constexpr int kDim = 128;                   // elements per row
constexpr int kRowBytes = kDim * 2;         // bf16
constexpr int kStepRows = 16;               // rows per warp step (one m16 tile)
constexpr int kStageBytes = kStepRows * kRowBytes;
constexpr int kKSteps = kDim / 16;          // m16n8k16 per product over D
constexpr int kCopies = kStepRows / 4;      // copy instructions per step per lane (x2 halves)

// Byte offset within a stage of chunk `chunk` of step row `row`.
NPID_HD int chunk_offset(int row, int chunk) { return row * kRowBytes + ((chunk ^ (row & 7)) * 16); }

// Copies: in copy q (< kCopies), lane (rgrp = lane / 8, sub = lane % 8)
// copies chunks sub and 8 + sub of step row 4q + rgrp -- eight lanes per
// 128 contiguous bytes of a row. Its destination for the first chunk; the
// second is 128 bytes on (the swizzle keeps bit 3 of the chunk index).
NPID_HD int copy_row(int lane, int q) { return 4 * q + (lane >> 3); }
NPID_HD int copy_dst(int lane, int q) { return chunk_offset(copy_row(lane, q), lane & 7); }
// copy_dst(lane, q) = copy_dst(lane, q & 1) + (q & ~1) * 4 * kRowBytes: rows
// 4q + rgrp and 4(q & 1) + rgrp agree in their low three bits.

// ldmatrix for the scores, A = the step's rows (16 rows x 16 elements of
// k-step ks): matrix m = lane / 8 is rows 8 (m & 1) .. + 7, chunk 2 ks + (m >> 1).
NPID_HD int score_addr(int lane, int ks) {
  const int m = lane >> 3, rr = lane & 7;
  return chunk_offset(8 * (m & 1) + rr, 2 * ks + (m >> 1));
}
// ldmatrix .trans for the gradient, A = the rows transposed (16 elements of
// m-tile mt x 16 rows): matrix m is rows 8 (m >> 1) .. + 7, chunk 2 mt + (m & 1).
NPID_HD int grad_addr(int lane, int mt) {
  const int m = lane >> 3, rr = lane & 7;
  return chunk_offset(8 * (m >> 1) + rr, 2 * mt + (m & 1));
}
// For ks >= 4 both are the ks - 4 address + 128 bytes (chunk bit 3 survives
// the swizzle), so a lane keeps four addresses per product.

// The per-row math: after summing the score columns across the lane pair
// (4g, 4g + 1), lane 4g + t (t < 2) owns step row g + 8t; lanes t >= 2 own none.
NPID_HD int row_of_lane(int lane) { return (lane & 3) < 2 ? (lane >> 2) + 8 * (lane & 1) : -1; }
NPID_HD int owner_of_row(int row) { return 4 * (row & 7) + (row >> 3); }

}  // namespace mma_layout
}  // namespace npid
