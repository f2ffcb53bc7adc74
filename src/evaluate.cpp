// Evaluation: dataset embedding, kNN (recompute / bank), linear classifier,
// retrieval grid, and the report (npid/evaluate.h).
#include "npid/evaluate.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/args.h"
#include "npid/error.h"
#include "npid/loader.h"

namespace npid {

AugmentConfig eval_transform_for(const ResNetConfig& config) {
  AugmentConfig t = config.stem == ResNetStem::kCifar ? AugmentConfig::cifar10_eval() : AugmentConfig::imagenet_eval();
  t.out_height = t.out_width = config.image_size;
  if (config.stem == ResNetStem::kImageNet) t.resize_shorter = (config.image_size * 256 + 112) / 224;
  return t;
}

Tensor embed_dataset(Context& ctx, ResNet18& net, const DataSource& set, const AugmentConfig& transform) {
  constexpr const char* op = "embed_dataset";
  const ResNetConfig& rc = net.config();
  NPID_CHECK_ARG(transform.out_height == rc.image_size && transform.out_width == rc.image_size, op, "transform",
                 "expected an output of the network's " << rc.image_size << " x " << rc.image_size << ", got "
                                                        << transform.out_height << " x " << transform.out_width);
  NPID_CHECK_ARG(set.size() >= 1, op, "set", "expected at least one image, got 0");
  LoaderConfig lc;
  lc.batch_size = std::min(net.max_batch(), set.size());
  lc.augment = transform;
  lc.shuffle = false;
  lc.drop_last = false;
  Loader loader = set.streaming() ? Loader::streaming(ctx, *set.folder, lc) : Loader::resident(ctx, *set.images, lc);
  const std::int64_t N = set.size(), D = rc.embedding_dim;
  Tensor features({N, D}, DType::kFloat32, ctx.device());
  loader.start_epoch(0);
  Batch b;
  std::int64_t row = 0;
  while (loader.next(&b)) {
    net.forward(b.images, TensorView(features.data_as<float>() + row * D, DType::kFloat32, {b.size, D}, ctx.device()),
                false);
    row += b.size;
  }
  return features;
}

namespace {

void draw_cell(std::vector<std::uint8_t>& canvas, std::int64_t W, std::int64_t x0, std::int64_t y0, std::int64_t cell,
               const ImageSet& set, std::int64_t row, const std::uint8_t frame[3]) {
  constexpr std::int64_t kBorder = 3;
  const auto* d = set.descs.data_as<const std::int64_t>() + 3 * row;
  const std::uint8_t* img = set.pixels.data_as<const std::uint8_t>() + d[0];
  const std::int64_t h = d[1], w = d[2], inner = cell - 2 * kBorder;
  for (std::int64_t y = 0; y < cell; ++y) {
    for (std::int64_t x = 0; x < cell; ++x) {
      std::uint8_t* px = canvas.data() + ((y0 + y) * W + (x0 + x)) * 3;
      if (y < kBorder || x < kBorder || y >= cell - kBorder || x >= cell - kBorder) {
        px[0] = frame[0];
        px[1] = frame[1];
        px[2] = frame[2];
        continue;
      }
      const std::int64_t sy = (y - kBorder) * h / inner, sx = (x - kBorder) * w / inner;
      const std::uint8_t* s = img + (sy * w + sx) * 3;
      px[0] = s[0];
      px[1] = s[1];
      px[2] = s[2];
    }
  }
}

nlohmann::json knn_json(const KnnResult& r) {
  nlohmann::json per = nlohmann::json::array();
  for (double v : r.per_class_top1) per.push_back(std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v));
  return {{"queries", r.queries}, {"top1", r.top1}, {"top5", r.top5}, {"per_class_top1", per}};
}

}  // namespace

void write_retrieval_grid(const std::string& path, const ImageSet& queries, const std::vector<std::int64_t>& query_rows,
                          const ImageSet& train, const std::vector<std::int64_t>& neighbours,
                          const RetrievalGridConfig& config) {
  constexpr const char* op = "write_retrieval_grid";
  const auto Q = static_cast<std::int64_t>(query_rows.size());
  const std::int64_t n = config.neighbours, cell = config.cell, gap = 4;
  NPID_CHECK_ARG(n >= 1 && cell >= 8 && cell <= 1024, op, "config",
                 "expected neighbours >= 1 and 8 <= cell <= 1024, got " << n << " and " << cell);
  NPID_CHECK_ARG(Q >= 1 && static_cast<std::int64_t>(neighbours.size()) == Q * n, op, "neighbours",
                 "expected " << Q << " x " << n << " rows, got " << neighbours.size());
  NPID_CHECK_ARG(!queries.device().is_cuda() && !train.device().is_cuda(), op, "queries, train",
                 "expected host image sets, got sets on " << queries.device().str() << " and " << train.device().str());
  for (std::int64_t r : query_rows)
    NPID_CHECK_ARG(r >= 0 && r < queries.size(), op, "query_rows", "expected rows in [0, " << queries.size() << "), got " << r);
  for (std::int64_t r : neighbours)
    NPID_CHECK_ARG(r >= 0 && r < train.size(), op, "neighbours", "expected rows in [0, " << train.size() << "), got " << r);
  const std::int64_t W = gap + (n + 1) * (cell + gap) + gap, H = gap + Q * (cell + gap);
  std::vector<std::uint8_t> canvas(static_cast<std::size_t>(W * H * 3), 255);
  const std::uint8_t grey[3] = {128, 128, 128}, green[3] = {0, 170, 0}, red[3] = {210, 0, 0};
  for (std::int64_t q = 0; q < Q; ++q) {
    const std::int64_t y0 = gap + q * (cell + gap);
    draw_cell(canvas, W, gap, y0, cell, queries, query_rows[q], grey);
    const std::int64_t label = queries.labels[query_rows[q]];
    for (std::int64_t j = 0; j < n; ++j) {
      const std::int64_t r = neighbours[q * n + j];
      draw_cell(canvas, W, gap + (j + 1) * (cell + gap) + gap, y0, cell, train, r,
                train.labels[r] == label ? green : red);
    }
  }
  write_png(path, canvas.data(), H, W);
}

EvalReport evaluate(Context& ctx, const EvalConfig& config, ResNet18& net, const DataSource& train,
                    const DataSource& test, const TensorView& bank) {
  constexpr const char* op = "evaluate";
  const auto t0 = std::chrono::steady_clock::now();
  NPID_CHECK_ARG(train.size() >= 1 && test.size() >= 1, op, "train, test",
                 "expected non-empty sets, got " << train.size() << " and " << test.size() << " images");
  EvalReport report;
  report.train_size = train.size();
  report.test_size = test.size();
  report.classes = std::max(train.num_classes(), test.num_classes());
  KnnConfig knn = config.knn;
  knn.num_classes = report.classes;
  knn.k = std::min(knn.k, train.size());  // fewer train images than k: every one votes
  report.knn_k = knn.k;
  report.knn_sigma = knn.sigma;
  if (!bank.empty()) {
    require_on(bank, ctx, op, "bank");
    NPID_CHECK_ARG(bank.shape.rank() == 2 && bank.shape[0] == train.size() && bank.shape[1] == net.config().embedding_dim,
                   op, "bank",
                   "expected (" << train.size() << ", " << net.config().embedding_dim << ") rows for the train set, got "
                                << bank.shape.str());
  }
  const AugmentConfig transform = eval_transform_for(net.config());
  const std::int64_t D = net.config().embedding_dim;
  const Tensor test_features = embed_dataset(ctx, net, test, transform);
  Tensor train_labels({train.size()}, DType::kInt64, ctx.device()), test_labels({test.size()}, DType::kInt64, ctx.device());
  copy(ctx, train_labels, view(train.labels().data(), {train.size()}));
  copy(ctx, test_labels, view(test.labels().data(), {test.size()}));
  Tensor train_features;
  if (config.knn_recompute || config.linear || !config.retrieval_png.empty()) {
    train_features = embed_dataset(ctx, net, train, transform);
  }
  if (config.knn_recompute) {
    report.knn_recompute = knn_classify(ctx, knn, test_features, test_labels, train_features, train_labels);
  }
  if (config.knn_bank && !bank.empty()) {
    report.knn_bank = knn_classify(ctx, knn, test_features, test_labels, bank, train_labels);
  }
  if (config.linear) {
    LinearEvalConfig lc = config.linear_config;
    lc.num_classes = report.classes;
    report.linear = linear_eval(ctx, lc, train_features, train_labels, test_features, test_labels);
  }
  const bool host_sets = (train.streaming() || !train.images->device().is_cuda()) &&
                         (test.streaming() || !test.images->device().is_cuda());
  if (!config.retrieval_png.empty() && host_sets) {
    const std::int64_t Q = std::min(config.retrieval_queries, test.size());
    const std::int64_t n = std::min(config.retrieval.neighbours, train.size());
    // Evenly spread queries over the test set (covers the classes of a
    // class-ordered folder).
    std::vector<std::int64_t> rows(static_cast<std::size_t>(Q));
    for (std::int64_t q = 0; q < Q; ++q) rows[q] = q * test.size() / Q;
    std::vector<float> qf(static_cast<std::size_t>(Q * D));
    for (std::int64_t q = 0; q < Q; ++q) {
      copy(ctx, view(qf.data() + q * D, {1, D}),
           TensorView(test_features.data_as<float>() + rows[q] * D, DType::kFloat32, {1, D}, ctx.device()));
    }
    Tensor qd({Q, D}, DType::kFloat32, ctx.device()), v({Q, n}, DType::kFloat32, ctx.device()),
        idx({Q, n}, DType::kInt64, ctx.device());
    copy(ctx, qd, view(qf.data(), {Q, D}));
    knn_topk(ctx, qd, train_features, n, v, idx);
    std::vector<std::int64_t> nb(static_cast<std::size_t>(Q * n));
    copy(ctx, view(nb.data(), {Q, n}), idx);
    RetrievalGridConfig gc = config.retrieval;
    gc.neighbours = n;
    if (!train.streaming() && !test.streaming()) {
      write_retrieval_grid(config.retrieval_png, *test.images, rows, *train.images, nb, gc);
    } else {
      // Decode just the pictured images; rows renumbered into the small sets.
      const ImageSet q = test.streaming() ? load_folder_images(*test.folder, rows) : test.images->slice(0, 0);
      const ImageSet t = train.streaming() ? load_folder_images(*train.folder, nb) : train.images->slice(0, 0);
      std::vector<std::int64_t> qrows(rows.size()), nrows(nb.size());
      for (std::size_t i = 0; i < rows.size(); ++i) qrows[i] = test.streaming() ? static_cast<std::int64_t>(i) : rows[i];
      for (std::size_t i = 0; i < nb.size(); ++i) nrows[i] = train.streaming() ? static_cast<std::int64_t>(i) : nb[i];
      write_retrieval_grid(config.retrieval_png, test.streaming() ? q : *test.images, qrows,
                           train.streaming() ? t : *train.images, nrows, gc);
    }
    report.retrieval_png = config.retrieval_png;
  }
  ctx.synchronize();  // the feature tensors are freed on return
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

std::string EvalReport::to_json() const {
  nlohmann::json j = {{"train_size", train_size}, {"test_size", test_size}, {"classes", classes}, {"seconds", seconds}};
  if (knn_recompute || knn_bank) j["knn"] = {{"k", knn_k}, {"sigma", knn_sigma}};
  if (knn_recompute) j["knn_recompute"] = knn_json(*knn_recompute);
  if (knn_bank) j["knn_bank"] = knn_json(*knn_bank);
  if (linear) {
    j["linear"] = {{"loss", to_string(linear->loss)},
                   {"l2_grid", linear->l2_grid},
                   {"holdout_accuracy", linear->holdout_accuracy},
                   {"best_l2", linear->best_l2},
                   {"train_accuracy", linear->train_accuracy},
                   {"test_accuracy", linear->test_accuracy}};
  }
  if (!retrieval_png.empty()) j["retrieval_png"] = retrieval_png;
  return j.dump(2);
}

std::string EvalReport::to_table() const {
  std::ostringstream os;
  char line[160];
  std::snprintf(line, sizeof line, "evaluation: %lld train, %lld test images, %lld classes (%.1f s)\n",
                static_cast<long long>(train_size), static_cast<long long>(test_size), static_cast<long long>(classes),
                seconds);
  os << line;
  if (knn_recompute || knn_bank) {
    std::snprintf(line, sizeof line, "  kNN: k %lld, sigma %g\n", static_cast<long long>(knn_k),
                  static_cast<double>(knn_sigma));
    os << line;
  }
  auto knn_line = [&](const char* name, const KnnResult& r) {
    std::snprintf(line, sizeof line, "  %-22s top-1 %6.2f %%   top-5 %6.2f %%\n", name, 100 * r.top1, 100 * r.top5);
    os << line;
  };
  if (knn_recompute) knn_line("kNN (recomputed)", *knn_recompute);
  if (knn_bank) knn_line("kNN (memory bank)", *knn_bank);
  if (linear) {
    std::snprintf(line, sizeof line, "  %-22s top-1 %6.2f %%   (train %.2f %%, l2 %.0e)\n",
                  linear->loss == LinearLoss::kHinge ? "linear SVM" : "linear softmax", 100 * linear->test_accuracy,
                  100 * linear->train_accuracy, linear->best_l2);
    os << line;
  }
  if (!retrieval_png.empty()) os << "  retrieval grid: " << retrieval_png << "\n";
  return os.str();
}

}  // namespace npid
