// npid/safetensors.h -- reading and writing the safetensors format
// (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {string: string}}, then the raw little-endian tensor bytes. Files we write
// load with safetensors.torch.load_file in PyTorch.
//
// Writing is atomic: a temporary file in the same directory, fsync, rename,
// so a crash leaves the old file or the new one, never a torn one. Reading
// validates the header (JSON, dtypes, shapes against byte ranges, ranges inside
// the file and not overlapping) and names the file in every error (kIo).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "npid/tensor.h"

namespace npid {

struct NamedTensor {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;  // numel * dtype_size
};

struct SafetensorsFile {
  std::vector<NamedTensor> tensors;  // in file order
  std::map<std::string, std::string> metadata;
  const NamedTensor* find(const std::string& name) const;
  // The named tensor, which must exist with this dtype and shape (kIo otherwise,
  // naming the file given as `what`).
  const NamedTensor& require(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
                             const std::string& what) const;
};

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
SafetensorsFile load_safetensors(const std::string& path);

// Host bytes of a tensor view (device memory is copied through ctx).
class Context;
NamedTensor to_named(Context& ctx, const std::string& name, const TensorView& v,
                     const std::vector<std::int64_t>& shape = {});

}  // namespace npid
