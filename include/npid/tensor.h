// npid/tensor.h -- dtypes, devices, shapes, non-owning views, owning tensors.
//
// TensorView is what every op takes: a pointer, a dtype, a shape (row-major,
// contiguous) and the device the memory lives on. It owns nothing and is cheap
// to copy. Tensor owns one allocation (host memory, or CUDA device memory via
// cudaMalloc) and hands out views; its destructor never throws.
//
// Views do not carry const-ness: an op's documentation says which views it
// reads and which it writes. An empty view (data == nullptr) marks an optional
// argument that is absent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace npid {

enum class DType { kFloat32, kBFloat16, kInt64, kInt32, kUInt8 };

std::size_t dtype_size(DType dtype) noexcept;
const char* to_string(DType dtype) noexcept;

enum class DeviceKind { kCpu, kCuda };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // CUDA ordinal; 0 for the CPU

  static Device cpu() { return {DeviceKind::kCpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceKind::kCuda, index}; }
  bool is_cuda() const { return kind == DeviceKind::kCuda; }
  std::string str() const;  // "cpu", "cuda:0"
  friend bool operator==(Device a, Device b) {
    return a.kind == b.kind && a.index == b.index;
  }
  friend bool operator!=(Device a, Device b) { return !(a == b); }
};

// Up to four dimensions, row-major, contiguous.
class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);

  int rank() const { return rank_; }
  std::int64_t operator[](int i) const { return dims_[i]; }
  std::int64_t numel() const;
  std::string str() const;  // "(256, 128)"
  friend bool operator==(const Shape& a, const Shape& b);
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

 private:
  std::int64_t dims_[kMaxRank] = {0, 0, 0, 0};
  int rank_ = 0;
};

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Shape shape;
  Device device;

  TensorView() = default;
  TensorView(void* data, DType dtype, Shape shape, Device device)
      : data(data), dtype(dtype), shape(shape), device(device) {}

  bool empty() const { return data == nullptr; }
  std::int64_t numel() const { return shape.numel(); }
  std::size_t bytes() const {
    return static_cast<std::size_t>(numel()) * dtype_size(dtype);
  }
  // "float32(256, 128) on cuda:0"
  std::string str() const;
};

// Typed helpers: view(ptr, {B, D}) picks the dtype from the pointer type.
TensorView view(float* data, Shape shape, Device device = Device::cpu());
TensorView view(const float* data, Shape shape, Device device = Device::cpu());
TensorView view(std::int64_t* data, Shape shape, Device device = Device::cpu());
TensorView view(const std::int64_t* data, Shape shape,
                Device device = Device::cpu());
TensorView view(std::int32_t* data, Shape shape, Device device = Device::cpu());
TensorView view(std::uint8_t* data, Shape shape, Device device = Device::cpu());

class Context;

// Owning tensor. Move-only. Host memory is 64-byte aligned; device memory comes
// from cudaMalloc (256-byte aligned).
class Tensor {
 public:
  Tensor() = default;
  Tensor(Shape shape, DType dtype, Device device);  // uninitialized contents
  ~Tensor();
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  TensorView view() const { return {data_, dtype_, shape_, device_}; }
  operator TensorView() const { return view(); }
  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t bytes() const { return view().bytes(); }

 private:
  void release() noexcept;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kFloat32;
  Device device_;
};

// Copies src into dst (same dtype and element count; shapes may differ).
// Stream-ordered on ctx's stream; when either side is host memory, returns
// only after the copy has completed, so host data is ready to use.
void copy(Context& ctx, const TensorView& dst, const TensorView& src);

// Sets every byte of dst to zero (stream-ordered on ctx's stream).
void fill_zero(Context& ctx, const TensorView& dst);

}  // namespace npid
