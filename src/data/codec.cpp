// Image decoding (JPEG via libjpeg-turbo's TurboJPEG API, PNG via libpng's
// simplified API) and PNG writing. Every failure names the file.
#include <png.h>
#include <turbojpeg.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>

#include "npid/data.h"
#include "npid/error.h"

namespace npid {
namespace {

[[noreturn]] void io_error(const std::string& name, const std::string& what) {
  throw Error(ErrorKind::kIo, name + ": " + what);
}

bool is_jpeg(const std::uint8_t* b, std::size_t n) {
  return n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF;
}
bool is_png(const std::uint8_t* b, std::size_t n) {
  static const std::uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  return n >= 8 && std::equal(sig, sig + 8, b);
}

struct TjHandle {
  tjhandle h = tjInitDecompress();
  ~TjHandle() {
    if (h) tjDestroy(h);
  }
  // A TurboJPEG handle is not reliably reusable after a failed call (the next
  // header read can report a 0 x 0 image), so a failure replaces it.
  [[noreturn]] void fail(const std::string& name, const std::string& what) {
    const std::string message = what + tjGetErrorStr2(h);
    tjDestroy(h);
    h = tjInitDecompress();
    io_error(name, message);
  }
};

DecodedImage decode_jpeg(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  thread_local TjHandle tj;  // one decompressor per decoding thread
  if (!tj.h) io_error(name, "cannot create a TurboJPEG decompressor");
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.h, bytes, static_cast<unsigned long>(size), &w, &h, &subsamp,
                          &colorspace) != 0) {
    tj.fail(name, "not a readable JPEG: ");
  }
  if (w <= 0 || h <= 0) io_error(name, "JPEG with an empty image");
  DecodedImage img;
  img.height = h;
  img.width = w;
  img.pixels.resize(static_cast<std::size_t>(w) * h * 3);
  if (tjDecompress2(tj.h, bytes, static_cast<unsigned long>(size), img.pixels.data(), w, 0, h,
                    TJPF_RGB, TJFLAG_ACCURATEDCT) != 0) {
    // Warnings too: libjpeg-turbo reports a truncated file as a warning and
    // fills the rest with grey, which must not pass as an image.
    tj.fail(name, "corrupt JPEG: ");
  }
  return img;
}

DecodedImage decode_png(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes, size)) {
    io_error(name, std::string("not a readable PNG: ") + image.message);
  }
  image.format = PNG_FORMAT_RGB;
  DecodedImage img;
  img.height = image.height;
  img.width = image.width;
  img.pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, img.pixels.data(), 0, nullptr)) {
    const std::string msg = image.message;
    png_image_free(&image);
    io_error(name, "corrupt PNG: " + msg);
  }
  return img;
}

}  // namespace

DecodedImage decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  if (is_jpeg(bytes, size)) return decode_jpeg(bytes, size, name);
  if (is_png(bytes, size)) return decode_png(bytes, size, name);
  io_error(name, "neither a JPEG nor a PNG (" + std::to_string(size) + " bytes)");
}

DecodedImage decode_image_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) io_error(path, "cannot open for reading");
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  if (in.bad()) io_error(path, "read failed");
  return decode_image(bytes.data(), bytes.size(), path);
}

void write_png(const std::string& path, const std::uint8_t* hwc, std::int64_t height,
               std::int64_t width) {
  NPID_CHECK_ARG(height >= 1 && width >= 1 && height < (1 << 24) && width < (1 << 24), "write_png",
                 "height, width", "expected 1..2^24 each, got " << height << " x " << width);
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_RGB;
  const std::string tmp = path + ".tmp";
  if (!png_image_write_to_file(&image, tmp.c_str(), 0, hwc, 0, nullptr)) {
    std::remove(tmp.c_str());
    io_error(path, std::string("cannot write PNG: ") + image.message);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    io_error(path, "cannot rename the temporary file into place");
  }
}

}  // namespace npid
