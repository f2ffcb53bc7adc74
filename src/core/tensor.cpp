// Shapes, views, owning tensors, copies.
#include "npid/tensor.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <new>
#include <sstream>

#include "core/check.h"
#include "core/context_impl.h"
#include "npid/context.h"
#include "npid/error.h"

namespace npid {

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kInt64: return 8;
    case DType::kInt32: return 4;
    case DType::kUInt8: return 1;
  }
  return 0;
}

const char* to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt64: return "int64";
    case DType::kInt32: return "int32";
    case DType::kUInt8: return "uint8";
  }
  return "?";
}

std::string Device::str() const {
  return is_cuda() ? "cuda:" + std::to_string(index) : std::string("cpu");
}

Shape::Shape(std::initializer_list<std::int64_t> dims) {
  if (dims.size() > static_cast<std::size_t>(kMaxRank))
    throw Error(ErrorKind::kInvalidArgument,
                "Shape: expected at most 4 dimensions, got " + std::to_string(dims.size()));
  for (std::int64_t d : dims) {
    if (d < 0)
      throw Error(ErrorKind::kInvalidArgument,
                  "Shape: expected non-negative dimensions, got " + std::to_string(d));
    dims_[rank_++] = d;
  }
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < rank_; ++i) os << (i ? ", " : "") << dims_[i];
  os << ")";
  return os.str();
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i)
    if (a.dims_[i] != b.dims_[i]) return false;
  return true;
}

std::string TensorView::str() const {
  if (empty()) return "<empty>";
  return std::string(to_string(dtype)) + shape.str() + " on " + device.str();
}

TensorView view(float* d, Shape s, Device dev) { return {d, DType::kFloat32, s, dev}; }
TensorView view(const float* d, Shape s, Device dev) {
  return {const_cast<float*>(d), DType::kFloat32, s, dev};
}
TensorView view(std::int64_t* d, Shape s, Device dev) { return {d, DType::kInt64, s, dev}; }
TensorView view(const std::int64_t* d, Shape s, Device dev) {
  return {const_cast<std::int64_t*>(d), DType::kInt64, s, dev};
}
TensorView view(std::int32_t* d, Shape s, Device dev) { return {d, DType::kInt32, s, dev}; }
TensorView view(std::uint8_t* d, Shape s, Device dev) { return {d, DType::kUInt8, s, dev}; }

Tensor::Tensor(Shape shape, DType dtype, Device device)
    : shape_(shape), dtype_(dtype), device_(device) {
  data_ = allocate_bytes(device, bytes());
}

Tensor::~Tensor() { release(); }

void Tensor::release() noexcept {
  free_bytes(device_, data_);
  data_ = nullptr;
}

Tensor::Tensor(Tensor&& o) noexcept
    : data_(o.data_), shape_(o.shape_), dtype_(o.dtype_), device_(o.device_) {
  o.data_ = nullptr;
}

Tensor& Tensor::operator=(Tensor&& o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_;
    shape_ = o.shape_;
    dtype_ = o.dtype_;
    device_ = o.device_;
    o.data_ = nullptr;
  }
  return *this;
}

void copy(Context& ctx, const TensorView& dst, const TensorView& src) {
  NPID_CHECK_ARG(dst.dtype == src.dtype, "copy", "src",
                 "expected dtype " << to_string(dst.dtype) << " like dst, got "
                                   << to_string(src.dtype));
  NPID_CHECK_ARG(dst.numel() == src.numel(), "copy", "src",
                 "expected " << dst.numel() << " elements like dst " << dst.shape.str()
                             << ", got " << src.numel() << " " << src.shape.str());
  const std::size_t n = dst.bytes();
  if (n == 0) return;
  if (!dst.device.is_cuda() && !src.device.is_cuda()) {
    std::memmove(dst.data, src.data, n);
    return;
  }
  NPID_CHECK_ARG(ctx.is_cuda(), "copy", "ctx",
                 "expected a CUDA context to copy " << src.str() << " to " << dst.str());
  DeviceGuard guard(ctx.device());
  NPID_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, n, cudaMemcpyDefault, ctx.stream()));
  if (!dst.device.is_cuda() || !src.device.is_cuda())
    NPID_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
}

void fill_zero(Context& ctx, const TensorView& dst) {
  if (dst.bytes() == 0) return;
  if (!dst.device.is_cuda()) {
    std::memset(dst.data, 0, dst.bytes());
    return;
  }
  NPID_CHECK_ARG(ctx.device() == dst.device, "fill_zero", "dst",
                 "expected a tensor on " << ctx.device().str() << ", got " << dst.str());
  DeviceGuard guard(ctx.device());
  NPID_CUDA_CHECK(cudaMemsetAsync(dst.data, 0, dst.bytes(), ctx.stream()));
}

}  // namespace npid
