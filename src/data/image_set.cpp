// ImageSet: packed uint8 HWC images with (offset, height, width) descriptors.
#include <algorithm>
#include <cstring>
#include <thread>

#include "npid/data.h"
#include "npid/error.h"

namespace npid {

std::int64_t ImageSet::height(std::int64_t i) const { return host_descs_.at(3 * i + 1); }
std::int64_t ImageSet::width(std::int64_t i) const { return host_descs_.at(3 * i + 2); }

bool ImageSet::uniform_size(std::int64_t* h, std::int64_t* w) const {
  if (size() == 0) return false;
  const std::int64_t h0 = host_descs_[1], w0 = host_descs_[2];
  for (std::int64_t i = 1; i < size(); ++i) {
    if (host_descs_[3 * i + 1] != h0 || host_descs_[3 * i + 2] != w0) return false;
  }
  if (h) *h = h0;
  if (w) *w = w0;
  return true;
}

ImageSet ImageSet::to(Context& ctx) const {
  ImageSet out;
  out.pixels = Tensor(pixels.shape(), DType::kUInt8, ctx.device());
  out.descs = Tensor(descs.shape(), DType::kInt64, ctx.device());
  copy(ctx, out.pixels, pixels);
  copy(ctx, out.descs, descs);
  ctx.synchronize();
  out.labels = labels;
  out.class_names = class_names;
  out.files = files;
  out.skipped_files = skipped_files;
  out.host_descs_ = host_descs_;
  return out;
}

ImageSet ImageSet::slice(std::int64_t begin, std::int64_t count) const {
  NPID_CHECK_ARG(begin >= 0 && count >= 0 && begin + count <= size(), "ImageSet::slice",
                 "begin, count",
                 "expected 0 <= begin <= begin + count <= " << size() << ", got begin " << begin
                                                            << ", count " << count);
  std::vector<std::int64_t> rows(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) rows[static_cast<std::size_t>(i)] = begin + i;
  return select(rows);
}

ImageSet ImageSet::select(const std::vector<std::int64_t>& rows) const {
  NPID_CHECK_ARG(!device().is_cuda(), "ImageSet::select", "this",
                 "expected a host image set, got one on " << device().str());
  ImageSetBuilder b;
  const auto* px = pixels.data_as<const std::uint8_t>();
  for (const std::int64_t i : rows) {
    NPID_CHECK_ARG(i >= 0 && i < size(), "ImageSet::select", "rows", "expected rows in [0, " << size() << "), got " << i);
    b.add(px + host_descs_[3 * i], host_descs_[3 * i + 1], host_descs_[3 * i + 2], labels[i],
          files.empty() ? std::string() : files[i]);
  }
  ImageSet s = b.finish(class_names);
  if (files.empty()) s.files.clear();
  return s;
}

void ImageSetBuilder::add(const std::uint8_t* hwc, std::int64_t height, std::int64_t width,
                          std::int64_t label, std::string file) {
  NPID_CHECK_ARG(height >= 1 && width >= 1, "ImageSetBuilder::add", "height, width",
                 "expected >= 1, got " << height << " x " << width);
  NPID_CHECK_ARG(label >= 0, "ImageSetBuilder::add", "label", "expected >= 0, got " << label);
  const std::size_t n = static_cast<std::size_t>(height * width * 3);
  descs_.push_back(static_cast<std::int64_t>(bytes_.size()));
  descs_.push_back(height);
  descs_.push_back(width);
  bytes_.insert(bytes_.end(), hwc, hwc + n);
  labels_.push_back(label);
  files_.push_back(std::move(file));
}

ImageSet ImageSetBuilder::finish(std::vector<std::string> class_names) {
  ImageSet s;
  const std::int64_t n = static_cast<std::int64_t>(labels_.size());
  s.pixels = Tensor({std::max<std::int64_t>(1, static_cast<std::int64_t>(bytes_.size()))},
                    DType::kUInt8, Device::cpu());
  if (!bytes_.empty()) std::memcpy(s.pixels.data(), bytes_.data(), bytes_.size());
  s.descs = Tensor({std::max<std::int64_t>(n, 1), 3}, DType::kInt64, Device::cpu());
  std::memset(s.descs.data(), 0, s.descs.bytes());
  if (n > 0) std::memcpy(s.descs.data(), descs_.data(), descs_.size() * sizeof(std::int64_t));
  s.host_descs_ = std::move(descs_);
  s.labels = std::move(labels_);
  s.files = std::move(files_);
  s.class_names = std::move(class_names);
  const bool any_file = std::any_of(s.files.begin(), s.files.end(),
                                    [](const std::string& f) { return !f.empty(); });
  if (!any_file) s.files.clear();
  *this = ImageSetBuilder();
  return s;
}

}  // namespace npid
