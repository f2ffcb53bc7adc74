// Model weights <-> safetensors tensors in PyTorch's layout (npid/checkpoint.h).
#include <cstring>
#include <nlohmann/json.hpp>

#include "npid/checkpoint.h"
#include "npid/error.h"

namespace npid {
namespace {

std::vector<std::int64_t> dims(const Shape& s) {
  std::vector<std::int64_t> out;
  for (int i = 0; i < s.rank(); ++i) out.push_back(s[i]);
  return out;
}

bool is_conv(const ParameterInfo& p) { return p.shape.rank() == 4; }

// (O, KH, KW, I) storage <-> (O, I, KH, KW) logical.
void to_logical(const float* storage, const Shape& s, float* logical) {
  const std::int64_t O = s[0], I = s[1], KH = s[2], KW = s[3];
  for (std::int64_t o = 0; o < O; ++o)
    for (std::int64_t kh = 0; kh < KH; ++kh)
      for (std::int64_t kw = 0; kw < KW; ++kw)
        for (std::int64_t i = 0; i < I; ++i)
          logical[((o * I + i) * KH + kh) * KW + kw] = storage[((o * KH + kh) * KW + kw) * I + i];
}
void to_storage(const float* logical, const Shape& s, float* storage) {
  const std::int64_t O = s[0], I = s[1], KH = s[2], KW = s[3];
  for (std::int64_t o = 0; o < O; ++o)
    for (std::int64_t kh = 0; kh < KH; ++kh)
      for (std::int64_t kw = 0; kw < KW; ++kw)
        for (std::int64_t i = 0; i < I; ++i)
          storage[((o * KH + kh) * KW + kw) * I + i] = logical[((o * I + i) * KH + kh) * KW + kw];
}

std::vector<std::string> bn_prefixes(const ResNet18& net) {
  std::vector<std::string> out;
  for (const ParameterInfo& b : net.buffers()) {
    const auto pos = b.name.rfind(".running_mean");
    if (pos != std::string::npos) out.push_back(b.name.substr(0, pos));
  }
  return out;
}

}  // namespace

std::vector<NamedTensor> model_state(Context& ctx, const ResNet18& net) {
  std::vector<NamedTensor> out;
  const std::int64_t np = net.parameter_buffer().numel(), nb = net.buffer_buffer().numel();
  std::vector<float> params(static_cast<std::size_t>(np)), buffers(static_cast<std::size_t>(nb));
  copy(ctx, view(params.data(), {np}), net.parameter_buffer());
  copy(ctx, view(buffers.data(), {nb}), net.buffer_buffer());
  auto add = [&](const ParameterInfo& p, const std::vector<float>& flat) {
    NamedTensor t;
    t.name = p.name;
    t.dtype = DType::kFloat32;
    t.shape = dims(p.shape);
    t.bytes.resize(static_cast<std::size_t>(p.numel) * 4);
    if (is_conv(p)) {
      to_logical(flat.data() + p.offset, p.shape, reinterpret_cast<float*>(t.bytes.data()));
    } else {
      std::memcpy(t.bytes.data(), flat.data() + p.offset, t.bytes.size());
    }
    out.push_back(std::move(t));
  };
  for (const ParameterInfo& p : net.parameters()) add(p, params);
  for (const ParameterInfo& b : net.buffers()) add(b, buffers);
  for (const std::string& prefix : bn_prefixes(net)) {
    NamedTensor t;
    t.name = prefix + ".num_batches_tracked";
    t.dtype = DType::kInt64;
    t.bytes.resize(8);
    const std::int64_t n = net.num_batches_tracked();
    std::memcpy(t.bytes.data(), &n, 8);
    out.push_back(std::move(t));
  }
  return out;
}

void load_model_state(Context& ctx, ResNet18& net, const SafetensorsFile& file, const std::string& what) {
  const std::int64_t np = net.parameter_buffer().numel(), nb = net.buffer_buffer().numel();
  std::vector<float> params(static_cast<std::size_t>(np), 0.0f), buffers(static_cast<std::size_t>(nb), 0.0f);
  auto take = [&](const ParameterInfo& p, std::vector<float>& flat) {
    const NamedTensor& t = file.require(p.name, DType::kFloat32, dims(p.shape), what);
    const auto* src = reinterpret_cast<const float*>(t.bytes.data());
    if (is_conv(p)) {
      to_storage(src, p.shape, flat.data() + p.offset);
    } else {
      std::memcpy(flat.data() + p.offset, src, t.bytes.size());
    }
  };
  // Everything is read and checked before the network is touched.
  for (const ParameterInfo& p : net.parameters()) take(p, params);
  for (const ParameterInfo& b : net.buffers()) take(b, buffers);
  std::int64_t tracked = 0;
  const auto prefixes = bn_prefixes(net);
  if (!prefixes.empty()) {
    if (const NamedTensor* t = file.find(prefixes.front() + ".num_batches_tracked")) {
      if (t->dtype == DType::kInt64 && t->bytes.size() == 8) std::memcpy(&tracked, t->bytes.data(), 8);
    }
  }
  copy(ctx, net.parameter_buffer(), view(params.data(), {np}));
  copy(ctx, net.buffer_buffer(), view(buffers.data(), {nb}));
  net.set_num_batches_tracked(tracked);
}

std::string model_config_json(const ResNetConfig& c) {
  nlohmann::json j = {{"stem", to_string(c.stem)},
                      {"width", c.width},
                      {"embedding_dim", c.embedding_dim},
                      {"image_size", c.image_size},
                      {"bn_eps", c.bn_eps},
                      {"bn_momentum", c.bn_momentum}};
  return j.dump();
}

ResNetConfig model_config_from(const SafetensorsFile& file, const std::string& what) {
  const auto it = file.metadata.find("npid.model");
  if (it == file.metadata.end()) throw Error(ErrorKind::kIo, what + ": no 'npid.model' metadata (not an npid model file)");
  try {
    const auto j = nlohmann::json::parse(it->second);
    ResNetConfig c;
    const std::string stem = j.at("stem").get<std::string>();
    if (stem != "cifar" && stem != "imagenet") throw std::runtime_error("stem '" + stem + "'");
    c.stem = stem == "cifar" ? ResNetStem::kCifar : ResNetStem::kImageNet;
    c.width = j.at("width").get<std::int64_t>();
    c.embedding_dim = j.at("embedding_dim").get<std::int64_t>();
    c.image_size = j.at("image_size").get<std::int64_t>();
    if (j.contains("bn_eps")) c.bn_eps = j.at("bn_eps").get<float>();
    if (j.contains("bn_momentum")) c.bn_momentum = j.at("bn_momentum").get<float>();
    return c;
  } catch (const std::exception& e) {
    throw Error(ErrorKind::kIo, what + ": bad 'npid.model' metadata: " + e.what());
  }
}

}  // namespace npid
