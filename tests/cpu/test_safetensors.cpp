// safetensors: round trip of dtypes, shapes and metadata; every corruption
// gets a kIo error naming the file; a failed write leaves the old file;
// ResNet-18 weights round trip in PyTorch's layout.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/test_util.h"
#include "io/atomic_file.h"
#include "io/plot.h"

using namespace npid;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("npid_st_" + std::to_string(::getpid()) + "_" + name)).string();
}

NamedTensor make(const std::string& name, DType d, std::vector<std::int64_t> shape, int seed) {
  NamedTensor t;
  t.name = name;
  t.dtype = d;
  t.shape = std::move(shape);
  std::int64_t n = 1;
  for (auto s : t.shape) n *= s;
  t.bytes.resize(static_cast<std::size_t>(n) * dtype_size(d));
  for (std::size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<std::uint8_t>(i * 7 + seed);
  return t;
}

std::vector<std::uint8_t> read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_all(const std::string& p, const std::vector<std::uint8_t>& b) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(b.data()),
                                                              static_cast<std::streamsize>(b.size()));
}

}  // namespace

TEST_CASE("safetensors: round trip of dtypes, shapes, scalars and metadata", "[safetensors]") {
  const std::string path = temp_path("rt.safetensors");
  const std::vector<NamedTensor> ts = {make("a.weight", DType::kFloat32, {3, 4}, 1), make("bank", DType::kBFloat16, {5, 2}, 2),
                                       make("step", DType::kInt64, {}, 3), make("img", DType::kUInt8, {2, 3, 3}, 4),
                                       make("empty", DType::kFloat32, {0, 4}, 5)};
  save_safetensors(path, ts, {{"npid.model", "{\"x\": 1}"}, {"format", "pt"}});
  const auto bytes = read_all(path);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  REQUIRE((8 + n) % 8 == 0);  // data 8-byte aligned
  const SafetensorsFile f = load_safetensors(path);
  REQUIRE(f.tensors.size() == ts.size());
  for (std::size_t i = 0; i < ts.size(); ++i) {
    REQUIRE(f.tensors[i].name == ts[i].name);
    REQUIRE(f.tensors[i].dtype == ts[i].dtype);
    REQUIRE(f.tensors[i].shape == ts[i].shape);
    REQUIRE(f.tensors[i].bytes == ts[i].bytes);
  }
  REQUIRE(f.metadata.at("format") == "pt");
  REQUIRE(f.require("a.weight", DType::kFloat32, {3, 4}, "x").bytes.size() == 48);
  test::require_error([&] { f.require("a.weight", DType::kFloat32, {4, 3}, "ckpt"); }, ErrorKind::kIo,
                      {"ckpt", "a.weight", "float32(3, 4)", "expected float32(4, 3)"});
  test::require_error([&] { f.require("nope", DType::kFloat32, {1}, "ckpt"); }, ErrorKind::kIo, {"ckpt", "no tensor 'nope'"});
  fs::remove(path);
}

TEST_CASE("safetensors: corrupt and truncated files get a kIo error naming the file", "[safetensors]") {
  const std::string path = temp_path("bad.safetensors");
  save_safetensors(path, {make("w", DType::kFloat32, {16, 16}, 1), make("b", DType::kFloat32, {16}, 2)});
  const auto good = read_all(path);
  std::uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  struct Case { const char* what; std::vector<std::uint8_t> bytes; const char* needle; };
  std::vector<Case> cases;
  cases.push_back({"truncated data", std::vector<std::uint8_t>(good.begin(), good.end() - 100), "outside"});
  cases.push_back({"truncated header", std::vector<std::uint8_t>(good.begin(), good.begin() + 20), "does not fit"});
  cases.push_back({"tiny", std::vector<std::uint8_t>(good.begin(), good.begin() + 5), "truncated"});
  auto garbage = good;
  garbage[8] = '#';
  cases.push_back({"garbage header", garbage, "not JSON"});
  auto huge = good;
  huge[7] = 0x7f;
  cases.push_back({"huge header length", huge, "does not fit"});
  auto dtype = good;
  const std::string text(good.begin() + 8, good.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  const auto pos = text.find("F32");
  dtype[8 + pos] = 'Q';
  cases.push_back({"unknown dtype", dtype, "unsupported dtype"});
  for (const Case& c : cases) {
    INFO(c.what);
    write_all(path, c.bytes);
    test::require_error([&] { load_safetensors(path); }, ErrorKind::kIo, {path, c.needle});
  }
  fs::remove(path);
  test::require_error([&] { load_safetensors(path); }, ErrorKind::kIo, {path, "cannot open"});
}

namespace {
// A file from a header text and data bytes (the 8-byte length, then both).
std::vector<std::uint8_t> file_of(const std::string& header, std::size_t data_bytes) {
  std::vector<std::uint8_t> b(8 + header.size() + data_bytes, 0);
  const std::uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}
}  // namespace

TEST_CASE("safetensors: empty tensors anywhere are valid; overflowing shapes and real overlaps are not",
          "[safetensors]") {
  const std::string path = temp_path("edge.safetensors");
  // Our own writer with the empty tensor first: its range [0, 0] sorts
  // beside the next tensor's [0, 16] and overlaps nothing.
  const std::vector<NamedTensor> ts = {make("z", DType::kFloat32, {0, 4}, 1), make("a", DType::kFloat32, {4}, 2),
                                       make("y", DType::kInt64, {3, 0}, 3), make("b", DType::kUInt8, {3}, 4)};
  save_safetensors(path, ts);
  const SafetensorsFile f = load_safetensors(path);
  REQUIRE(f.tensors.size() == 4);
  REQUIRE(f.require("a", DType::kFloat32, {4}, path).bytes == ts[1].bytes);
  REQUIRE(f.require("b", DType::kUInt8, {3}, path).bytes == ts[3].bytes);
  REQUIRE(f.require("z", DType::kFloat32, {0, 4}, path).bytes.empty());
  // Another writer's placement: an empty range inside a non-empty one.
  write_all(path, file_of(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                          R"("e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})", 16));
  REQUIRE(load_safetensors(path).tensors.size() == 2);
  // Two non-empty ranges sharing bytes.
  write_all(path, file_of(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16));
  test::require_error([&] { load_safetensors(path); }, ErrorKind::kIo, {path, "overlap"});
  // 2^62 x 4 floats: the byte count overflows 64 bits (it would wrap to 0 and
  // "match" an empty range).
  write_all(path, file_of(R"({"h":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", 0));
  test::require_error([&] { load_safetensors(path); }, ErrorKind::kIo, {path, "'h'", "64 bits"});
  NamedTensor huge = make("h", DType::kFloat32, {}, 1);
  huge.shape = {std::int64_t(1) << 62, 4};
  huge.bytes.clear();
  test::require_error([&] { save_safetensors(path, {huge}); }, ErrorKind::kInvalidArgument,
                      {"save_safetensors", "'h'", "countable"});
  fs::remove(path);
}

TEST_CASE("safetensors: a failed write leaves the existing file intact", "[safetensors]") {
  const std::string path = temp_path("keep.safetensors");
  save_safetensors(path, {make("w", DType::kFloat32, {4}, 1)});
  const auto before = read_all(path);
  NamedTensor bad = make("w", DType::kFloat32, {4}, 2);
  bad.bytes.pop_back();  // size does not match the shape
  test::require_error([&] { save_safetensors(path, {bad}); }, ErrorKind::kInvalidArgument, {"save_safetensors", "'w'", "16 bytes"});
  test::require_error([&] { save_safetensors(path, {make("w", DType::kFloat32, {4}, 1), make("w", DType::kFloat32, {4}, 1)}); },
                      ErrorKind::kInvalidArgument, {"unique"});
  test::require_error([&] { save_safetensors("/nonexistent_dir_npid/x.safetensors", {make("w", DType::kFloat32, {4}, 1)}); },
                      ErrorKind::kIo, {"/nonexistent_dir_npid/x.safetensors"});
  REQUIRE(read_all(path) == before);

  // A write that fails part way (here the process's file-size limit, as a
  // full disk would) must not replace the file -- with text files too.
  const std::string text_path = temp_path("keep.json");
  write_text_atomic(text_path, "{\"old\": true}\n");
  rlimit old_limit{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of the signal
  rlimit small = old_limit;
  small.rlim_cur = 100;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string big_text(1000, 'x');
  bool threw_text = false, threw_st = false;
  try {
    write_text_atomic(text_path, big_text);
  } catch (const Error& e) {
    threw_text = e.kind() == ErrorKind::kIo && std::string(e.what()).find(text_path) != std::string::npos;
  }
  try {
    save_safetensors(path, {make("w", DType::kFloat32, {64}, 3)});
  } catch (const Error& e) {
    threw_st = e.kind() == ErrorKind::kIo && std::string(e.what()).find(path) != std::string::npos;
  }
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  std::signal(SIGXFSZ, old_handler);
  CHECK(threw_text);
  CHECK(threw_st);
  const auto kept = read_all(text_path);
  CHECK(std::string(kept.begin(), kept.end()) == "{\"old\": true}\n");
  CHECK(read_all(path) == before);
  // No temporary files left beside them.
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path()))
    CHECK(entry.path().filename().string().find("npid_st_" + std::to_string(::getpid()) + "_keep.json.tmp") ==
          std::string::npos);
  fs::remove(path);
  fs::remove(text_path);
}

TEST_CASE("ResNet-18 weights round trip through safetensors in PyTorch layout", "[safetensors][resnet]") {
  Context ctx = Context::cpu();
  ResNetConfig cfg;
  cfg.width = 4;
  cfg.image_size = 16;
  ResNet18 a(ctx, cfg, 2, 1), b(ctx, cfg, 2, 2);
  // Make the running statistics non-trivial.
  std::vector<float> img(2 * 16 * 16 * 3, 0.25f), emb(2 * 128);
  for (std::size_t i = 0; i < img.size(); ++i) img[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
  a.forward(view(img.data(), {2, 16, 16, 3}), view(emb.data(), {2, 128}), true);
  const std::string path = temp_path("model.safetensors");
  save_safetensors(path, model_state(ctx, a), {{"npid.model", model_config_json(cfg)}});
  const SafetensorsFile f = load_safetensors(path);
  // Conv weights are (O, I, KH, KW): element [o][i][kh][kw] is storage (o, kh, kw, i).
  const NamedTensor& conv = f.require("layer1.0.conv1.weight", DType::kFloat32, {4, 4, 3, 3}, path);
  const TensorView storage = a.tensor("layer1.0.conv1.weight");
  const auto* s = static_cast<const float*>(storage.data);
  const auto* l = reinterpret_cast<const float*>(conv.bytes.data());
  REQUIRE(l[((2 * 4 + 3) * 3 + 1) * 3 + 0] == s[((2 * 3 + 1) * 3 + 0) * 4 + 3]);
  REQUIRE(f.find("bn1.num_batches_tracked") != nullptr);
  REQUIRE(model_config_from(f, path).width == 4);
  load_model_state(ctx, b, f, path);
  const auto* pa = static_cast<const float*>(a.parameter_buffer().data);
  const auto* pb = static_cast<const float*>(b.parameter_buffer().data);
  REQUIRE(std::equal(pa, pa + a.parameter_buffer().numel(), pb));
  const auto* ba = static_cast<const float*>(a.buffer_buffer().data);
  const auto* bb = static_cast<const float*>(b.buffer_buffer().data);
  REQUIRE(std::equal(ba, ba + a.buffer_buffer().numel(), bb));
  REQUIRE(b.num_batches_tracked() == 1);
  // A file for another width fails naming the tensor, and leaves b unchanged.
  cfg.width = 8;
  ResNet18 c(ctx, cfg, 2, 3);
  const std::vector<float> before(static_cast<const float*>(c.parameter_buffer().data),
                                  static_cast<const float*>(c.parameter_buffer().data) + c.parameter_buffer().numel());
  test::require_error([&] { load_model_state(ctx, c, f, path); }, ErrorKind::kIo, {path, "conv1.weight"});
  REQUIRE(std::equal(before.begin(), before.end(), static_cast<const float*>(c.parameter_buffer().data)));
  fs::remove(path);
}

TEST_CASE("SVG plots: epochs get whole-number ticks; fractional x keeps fractional ticks", "[io]") {
  const fs::path dir = fs::temp_directory_path() / ("npid_plot_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto x_ticks = [&](std::vector<double> x) {
    PlotSeries s;
    s.name = "loss";
    s.x = x;
    s.y.assign(x.size(), 1.0);
    for (std::size_t i = 0; i < x.size(); ++i) s.y[i] = 3.0 - 0.1 * static_cast<double>(i);
    const std::string p = (dir / "p.svg").string();
    write_svg_plot(p, "t", "epoch", "loss", {s});
    std::ifstream in(p);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(text.rfind("<svg", 0) == 0);
    REQUIRE(text.find("</svg>") != std::string::npos);
    // The x-axis labels: text elements anchored "middle" below the axis.
    std::vector<std::string> labels;
    for (std::size_t at = 0; (at = text.find("text-anchor=\"middle\">", at)) != std::string::npos;) {
      at += 21;
      labels.push_back(text.substr(at, text.find('<', at) - at));
    }
    return labels;
  };
  const auto whole = x_ticks({0, 1, 2});  // three epochs: ticks 0, 1, 2 (not 0.2, 0.4, ...)
  CHECK(std::find(whole.begin(), whole.end(), "1") != whole.end());
  for (const std::string& l : whole) CHECK(l.find('.') == std::string::npos);
  const auto frac = x_ticks({0, 0.25, 0.5});
  CHECK(std::find(frac.begin(), frac.end(), "0.2") != frac.end());
  fs::remove_all(dir);
}
