// safetensors: round trip of dtypes, shapes and metadata; every corruption
// gets a kIo error naming the file; a failed write leaves the old file;
// ResNet-18 weights round trip in PyTorch's layout.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/test_util.h"

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
  fs::remove(path);
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
