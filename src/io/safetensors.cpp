// safetensors reader/writer (format in npid/safetensors.h); JSON via
// nlohmann/json (Debian's nlohmann-json3-dev).
#include "npid/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "npid/context.h"
#include "npid/error.h"
#include "io/atomic_file.h"

namespace npid {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(ErrorKind::kIo, path + ": " + what);
}

const char* dtype_tag(DType d) {
  switch (d) {
    case DType::kFloat32: return "F32";
    case DType::kBFloat16: return "BF16";
    case DType::kInt64: return "I64";
    case DType::kInt32: return "I32";
    case DType::kUInt8: return "U8";
  }
  return "?";
}

bool parse_dtype(const std::string& tag, DType* out) {
  for (DType d : {DType::kFloat32, DType::kBFloat16, DType::kInt64, DType::kInt32, DType::kUInt8}) {
    if (tag == dtype_tag(d)) {
      *out = d;
      return true;
    }
  }
  return false;
}

// Bytes of a tensor of `shape` and `dtype`; false when a dimension is
// negative or the product overflows 64 bits (a corrupt or hostile header).
bool byte_size(const std::vector<std::int64_t>& shape, DType dtype, std::uint64_t* bytes) {
  std::uint64_t n = dtype_size(dtype);
  for (std::int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n)) return false;
  *bytes = n;
  return true;
}

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

}  // namespace

const NamedTensor* SafetensorsFile::find(const std::string& name) const {
  for (const NamedTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const NamedTensor& SafetensorsFile::require(const std::string& name, DType dtype,
                                            const std::vector<std::int64_t>& shape, const std::string& what) const {
  const NamedTensor* t = find(name);
  if (t == nullptr) fail(what, "has no tensor '" + name + "'");
  if (t->dtype != dtype || t->shape != shape) {
    fail(what, "tensor '" + name + "' is " + to_string(t->dtype) + shape_str(t->shape) + ", expected " +
                   to_string(dtype) + shape_str(shape));
  }
  return *t;
}

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    NPID_CHECK_ARG(!t.name.empty() && t.name != "__metadata__", "save_safetensors", "tensors",
                   "expected non-empty names other than __metadata__, got '" << t.name << "'");
    std::uint64_t bytes = 0;
    const bool sized = byte_size(t.shape, t.dtype, &bytes);
    NPID_CHECK_ARG(sized && bytes == t.bytes.size(), "save_safetensors", "tensors",
                   "expected '" << t.name << "' to hold "
                                << (sized ? std::to_string(bytes) + " bytes" : std::string("a countable number of bytes"))
                                << " for " << to_string(t.dtype) << shape_str(t.shape) << ", got " << t.bytes.size());
    NPID_CHECK_ARG(!header.contains(t.name), "save_safetensors", "tensors", "expected unique names, got '" << t.name << "' twice");
    header[t.name] = {{"dtype", dtype_tag(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::uint8_t len[8];
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(n >> (8 * i));
  std::vector<ByteRange> pieces = {{len, 8}, {text.data(), text.size()}};
  for (const NamedTensor& t : tensors) pieces.push_back({t.bytes.data(), t.bytes.size()});
  write_file_atomic(path, pieces);
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    fail(path, "is a directory, not a safetensors file (a run folder? its files are model.safetensors and "
               "checkpoint.safetensors)");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, "cannot open for reading");
  const auto size = static_cast<std::uint64_t>(in.tellg());
  if (size < 8) fail(path, "truncated: " + std::to_string(size) + " bytes, not a safetensors file");
  in.seekg(0);
  std::uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(len[i]) << (8 * i);
  if (n == 0 || n > size - 8 || n > (std::uint64_t(100) << 20))
    fail(path, "not a safetensors file: header length " + std::to_string(n) + " does not fit the file (" + std::to_string(size) + " bytes)");
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail(path, std::string("corrupt header (not JSON): ") + e.what());
  }
  if (!header.is_object()) fail(path, "corrupt header (not a JSON object)");
  const std::uint64_t data_size = size - 8 - n;
  SafetensorsFile file;
  struct Entry {
    std::uint64_t begin, end;
    std::size_t index;
  };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) fail(path, "__metadata__ value '" + m.key() + "' is not a string");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const auto& v = it.value();
    NamedTensor t;
    t.name = it.key();
    try {
      if (!parse_dtype(v.at("dtype").get<std::string>(), &t.dtype))
        fail(path, "tensor '" + t.name + "' has unsupported dtype " + v.at("dtype").dump());
      t.shape = v.at("shape").get<std::vector<std::int64_t>>();
      const auto off = v.at("data_offsets").get<std::vector<std::uint64_t>>();
      if (off.size() != 2 || off[0] > off[1] || off[1] > data_size)
        fail(path, "tensor '" + t.name + "' has byte range " + v.at("data_offsets").dump() + " outside the " +
                       std::to_string(data_size) + " data bytes (truncated file?)");
      std::uint64_t bytes = 0;
      if (!byte_size(t.shape, t.dtype, &bytes))
        fail(path, "tensor '" + t.name + "' has shape " + shape_str(t.shape) +
                       " (a negative dimension, or more bytes than 64 bits count)");
      if (bytes != off[1] - off[0])
        fail(path, "tensor '" + t.name + "' shape " + shape_str(t.shape) + " does not match its " +
                       std::to_string(off[1] - off[0]) + " bytes");
      entries.push_back({off[0], off[1], file.tensors.size()});
    } catch (const nlohmann::json::exception& e) {
      fail(path, "corrupt header entry '" + t.name + "': " + e.what());
    }
    file.tensors.push_back(std::move(t));
  }
  // Non-empty ranges must not overlap; an empty tensor's range [b, b] holds no
  // byte and may sit anywhere (also inside another's, as some writers place it).
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  std::uint64_t covered = 0;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (e.begin < covered) fail(path, "tensor byte ranges overlap");
    covered = e.end;
  }
  for (const Entry& e : entries) {
    NamedTensor& t = file.tensors[e.index];
    t.bytes.resize(e.end - e.begin);
    in.seekg(static_cast<std::streamoff>(8 + n + e.begin));
    in.read(reinterpret_cast<char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
    if (!in) fail(path, "read failed in tensor '" + t.name + "' (truncated file?)");
  }
  // Restore file order (JSON objects are unordered): by byte offset.
  std::vector<NamedTensor> ordered;
  for (const Entry& e : entries) ordered.push_back(std::move(file.tensors[e.index]));
  file.tensors = std::move(ordered);
  return file;
}

NamedTensor to_named(Context& ctx, const std::string& name, const TensorView& v, const std::vector<std::int64_t>& shape) {
  NamedTensor t;
  t.name = name;
  t.dtype = v.dtype;
  if (shape.empty()) {
    for (int i = 0; i < v.shape.rank(); ++i) t.shape.push_back(v.shape[i]);
  } else {
    t.shape = shape;
  }
  std::uint64_t bytes = 0;
  NPID_CHECK_ARG(byte_size(t.shape, t.dtype, &bytes) && bytes == v.bytes(), "to_named", "shape",
                 "expected " << v.numel() << " elements for '" << name << "', got " << shape_str(t.shape));
  t.bytes.resize(v.bytes());
  if (!t.bytes.empty()) copy(ctx, TensorView(t.bytes.data(), v.dtype, v.shape, Device::cpu()), v);
  return t;
}

}  // namespace npid
