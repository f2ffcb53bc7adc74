// Checked entry points of the kNN search and classifier.
#include "npid/knn.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/limits.h"
#include "core/args.h"
#include "knn.h"
#include "npid/error.h"

namespace npid {
namespace {

KnnTopkProblem check_topk(Context& ctx, const TensorView& queries, const TensorView& keys, std::int64_t k,
                          const TensorView& values, const TensorView& indices, bool tf32, const char* op) {
  require_present(queries, op, "queries");
  require_rank(queries, 2, op, "queries");
  const std::int64_t Q = queries.shape[0], D = queries.shape[1];
  NPID_CHECK_ARG(Q >= 1 && D >= 1 && D <= kMaxDim, op, "queries",
                 "expected (Q, D) with Q >= 1 and 1 <= D <= " << kMaxDim << ", got " << queries.shape.str());
  require_tensor(queries, DType::kFloat32, queries.shape, ctx, op, "queries");
  require_present(keys, op, "keys");
  require_rank(keys, 2, op, "keys");
  require_bank_dtype(keys, op, "keys");
  const std::int64_t N = keys.shape[0];
  NPID_CHECK_ARG(keys.shape[1] == D && N >= 1 && N < (std::int64_t(1) << 31), op, "keys",
                 "expected (N, " << D << ") with 1 <= N < 2^31, got " << keys.shape.str());
  require_on(keys, ctx, op, "keys");
  NPID_CHECK_ARG(k >= 1 && k <= std::min(N, kMaxKnnK), op, "k",
                 "expected 1 <= k <= min(N = " << N << ", " << kMaxKnnK << "), got " << k);
  require_tensor(values, DType::kFloat32, {Q, k}, ctx, op, "values");
  require_tensor(indices, DType::kInt64, {Q, k}, ctx, op, "indices");
  for (const TensorView* in : {&queries, &keys}) {
    require_no_overlap(values, *in, op, "values", in == &queries ? "queries" : "keys");
    require_no_overlap(indices, *in, op, "indices", in == &queries ? "queries" : "keys");
  }
  require_no_overlap(values, indices, op, "values", "indices");
  KnnTopkProblem p;
  p.queries = static_cast<const float*>(queries.data);
  p.keys = keys.data;
  p.key_dtype = keys.dtype;
  p.num_queries = Q;
  p.num_keys = N;
  p.dim = D;
  p.k = k;
  p.tf32 = tf32;
  p.values = static_cast<float*>(values.data);
  p.indices = static_cast<std::int64_t*>(indices.data);
  return p;
}

void run_topk(Context& ctx, const KnnTopkProblem& p) {
  if (ctx.is_cuda()) {
    launch_knn_topk(ctx, p);
  } else {
    knn_topk_cpu(p, ctx.cpu_threads());
  }
}

}  // namespace

void knn_topk(Context& ctx, const TensorView& queries, const TensorView& keys, std::int64_t k,
              const TensorView& values, const TensorView& indices, bool tf32) {
  run_topk(ctx, check_topk(ctx, queries, keys, k, values, indices, tf32, "knn_topk"));
}

KnnResult knn_classify(Context& ctx, const KnnConfig& config, const TensorView& queries,
                       const TensorView& query_labels, const TensorView& keys, const TensorView& key_labels) {
  constexpr const char* op = "knn_classify";
  NPID_CHECK_ARG(config.sigma > 0.0f && std::isfinite(config.sigma), op, "config.sigma",
                 "expected a finite sigma > 0, got " << config.sigma);
  NPID_CHECK_ARG(config.query_block >= 1, op, "config.query_block",
                 "expected >= 1, got " << config.query_block);
  require_present(queries, op, "queries");
  require_rank(queries, 2, op, "queries");
  require_present(keys, op, "keys");
  require_rank(keys, 2, op, "keys");
  const std::int64_t Q = queries.shape[0], N = keys.shape[0];
  require_tensor(query_labels, DType::kInt64, {Q}, ctx, op, "query_labels");
  require_tensor(key_labels, DType::kInt64, {N}, ctx, op, "key_labels");
  std::int64_t C = config.num_classes;
  if (C == 0) {
    std::vector<std::int64_t> host(static_cast<std::size_t>(N));
    copy(ctx, view(host.data(), {N}), key_labels);
    C = 1 + *std::max_element(host.begin(), host.end());
    NPID_CHECK_ARG(C >= 1, op, "key_labels", "expected labels >= 0, got a largest label of " << C - 1);
  }
  NPID_CHECK_ARG(C >= 1 && C <= kMaxKnnClasses, op, "config.num_classes",
                 "expected 1.." << kMaxKnnClasses << ", got " << C);
  require_indices_below(ctx, key_labels, C, op, "key_labels");
  require_indices_below(ctx, query_labels, C, op, "query_labels");

  const std::int64_t k = config.k, QB = std::min(Q, config.query_block);
  Tensor values({QB, std::max<std::int64_t>(k, 1)}, DType::kFloat32, ctx.device());
  Tensor indices({QB, std::max<std::int64_t>(k, 1)}, DType::kInt64, ctx.device());
  Tensor preds({QB}, DType::kInt64, ctx.device()), top5({QB}, DType::kInt64, ctx.device());
  std::vector<std::int64_t> labels_host(static_cast<std::size_t>(Q));
  copy(ctx, view(labels_host.data(), {Q}), query_labels);

  KnnResult result;
  result.queries = Q;
  result.predictions.resize(static_cast<std::size_t>(Q));
  std::vector<std::int64_t> top5_host(static_cast<std::size_t>(Q));
  for (std::int64_t q0 = 0; q0 < Q; q0 += QB) {
    const std::int64_t qb = std::min(QB, Q - q0);
    const std::size_t row_bytes = static_cast<std::size_t>(queries.shape[1]) * dtype_size(queries.dtype);
    const TensorView qv(static_cast<char*>(queries.data) + q0 * row_bytes, queries.dtype, {qb, queries.shape[1]},
                        queries.device);
    const TensorView vv(values.data(), DType::kFloat32, {qb, k}, ctx.device());
    const TensorView iv(indices.data(), DType::kInt64, {qb, k}, ctx.device());
    run_topk(ctx, check_topk(ctx, qv, keys, k, vv, iv, config.tf32, op));
    KnnVoteProblem v;
    v.values = values.data_as<const float>();
    v.indices = indices.data_as<const std::int64_t>();
    v.key_labels = static_cast<const std::int64_t*>(key_labels.data);
    v.query_labels = static_cast<const std::int64_t*>(query_labels.data) + q0;
    v.num_queries = qb;
    v.k = k;
    v.num_classes = C;
    v.inv_sigma = 1.0f / config.sigma;
    v.predictions = preds.data_as<std::int64_t>();
    v.top5 = top5.data_as<std::int64_t>();
    if (ctx.is_cuda()) {
      launch_knn_vote(ctx, v);
    } else {
      knn_vote_cpu(v, ctx.cpu_threads());
    }
    copy(ctx, view(result.predictions.data() + q0, {qb}), TensorView(preds.data(), DType::kInt64, {qb}, ctx.device()));
    copy(ctx, view(top5_host.data() + q0, {qb}), TensorView(top5.data(), DType::kInt64, {qb}, ctx.device()));
  }
  std::vector<std::int64_t> hits(static_cast<std::size_t>(C), 0), count(static_cast<std::size_t>(C), 0);
  std::int64_t correct1 = 0, correct5 = 0;
  for (std::int64_t q = 0; q < Q; ++q) {
    const std::int64_t y = labels_host[q];
    const bool ok = result.predictions[q] == y;
    correct1 += ok;
    correct5 += top5_host[q];
    hits[y] += ok;
    ++count[y];
  }
  result.top1 = static_cast<double>(correct1) / Q;
  result.top5 = static_cast<double>(correct5) / Q;
  result.per_class_top1.resize(static_cast<std::size_t>(C));
  for (std::int64_t c = 0; c < C; ++c) {
    result.per_class_top1[c] = count[c] ? static_cast<double>(hits[c]) / count[c]
                                        : std::numeric_limits<double>::quiet_NaN();
  }
  return result;
}

}  // namespace npid
