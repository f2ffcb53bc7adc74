// Image decoding (JPEG via libjpeg-turbo's TurboJPEG API, PNG via libpng)
// and PNG writing. Pixels come out as PIL's Image.convert("RGB") gives them
// (the reference pipeline's loader); every failure names the file.
#include <png.h>
#include <turbojpeg.h>

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

#include "npid/data.h"
#include "io/atomic_file.h"
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

// Decoded images larger than this are refused before any pixel is allocated
// (a 4 KB file can declare 65,000 x 65,000 pixels): PIL's
// DecompressionBombError threshold, twice its 89,478,485-pixel warning.
constexpr std::int64_t kMaxDecodedPixels = 178956970;

void check_pixels(const std::string& name, const char* kind, std::int64_t w, std::int64_t h) {
  if (w <= 0 || h <= 0) io_error(name, std::string(kind) + " with an empty image");
  if (w * h > kMaxDecodedPixels)
    io_error(name, std::string(kind) + " of " + std::to_string(w) + " x " + std::to_string(h) +
                       " pixels: expected at most " + std::to_string(kMaxDecodedPixels) +
                       " pixels (a decompression bomb, or an image far larger than training needs)");
}

struct TjHandle {
  tjhandle h = tjInitDecompress();
  ~TjHandle() {
    if (h) tjDestroy(h);
  }
  // A TurboJPEG handle is not reliably reusable after a call that reported an
  // error or a warning (the next header read can report a 0 x 0 image), so
  // such a call replaces it.
  void reset() {
    tjDestroy(h);
    h = tjInitDecompress();
  }
  [[noreturn]] void fail(const std::string& name, const std::string& what) {
    const std::string message = what + tjGetErrorStr2(h);
    reset();
    io_error(name, message);
  }
  // After a decompression that returned -1: fatal errors and the warnings
  // that mean missing data (a truncated file, which libjpeg-turbo completes
  // with grey) fail; other warnings (e.g. extraneous bytes before a marker,
  // after which the image is complete) pass, as they do in PIL.
  void check_warning(const std::string& name) {
    const std::string message = tjGetErrorStr2(h);
    const bool warning = tjGetErrorCode(h) == TJERR_WARNING;
    const bool missing_data = message.find("Premature end") != std::string::npos ||
                              message.find("premature end") != std::string::npos;
    if (!warning || missing_data) fail(name, "corrupt JPEG: ");
    reset();
  }
};

// a * b / 255, rounded as PIL's MULDIV255.
inline std::uint8_t muldiv255(unsigned a, unsigned b) {
  const unsigned t = a * b + 128;
  return static_cast<std::uint8_t>((t + (t >> 8)) >> 8);
}

DecodedImage decode_jpeg(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  thread_local TjHandle tj;  // one decompressor per decoding thread
  if (!tj.h) io_error(name, "cannot create a TurboJPEG decompressor");
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.h, bytes, static_cast<unsigned long>(size), &w, &h, &subsamp,
                          &colorspace) != 0) {
    tj.fail(name, "not a readable JPEG: ");
  }
  check_pixels(name, "JPEG", w, h);
  DecodedImage img;
  img.height = h;
  img.width = w;
  const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h);
  img.pixels.resize(n * 3);
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    // CMYK (print) JPEGs: decoded to CMYK, then to RGB as PIL's
    // convert("RGB"): samples stored inverted (Adobe's convention, which PIL
    // assumes for every CMYK JPEG), R = C' K' / 255 with C' = 255 - C.
    std::vector<std::uint8_t> cmyk(n * 4);
    if (tjDecompress2(tj.h, bytes, static_cast<unsigned long>(size), cmyk.data(), w, 0, h, TJPF_CMYK,
                      TJFLAG_ACCURATEDCT) != 0)
      tj.check_warning(name);
    for (std::size_t i = 0; i < n; ++i)
      for (int c = 0; c < 3; ++c) img.pixels[i * 3 + c] = muldiv255(cmyk[i * 4 + c], cmyk[i * 4 + 3]);
    return img;
  }
  if (tjDecompress2(tj.h, bytes, static_cast<unsigned long>(size), img.pixels.data(), w, 0, h,
                    TJPF_RGB, TJFLAG_ACCURATEDCT) != 0) {
    tj.check_warning(name);
  }
  return img;
}

// PNG through libpng's full API, so that the samples are taken as they are
// stored, as PIL's convert("RGB") takes them: 16-bit samples keep their high
// byte, palettes and grey expand to RGB, alpha (and tRNS) is dropped without
// compositing, and no gamma (gAMA, sRGB, iCCP) is applied. (libpng's
// simplified API treats 16-bit data as linear light, applies gAMA and
// composites alpha onto black: a 16-bit 0x8080 became 186, not 128.)
struct PngRead {
  const std::uint8_t* bytes;
  std::size_t size, pos;
  char message[256];
  std::uint8_t* pixels;  // malloc'd by decode_png_raw, owned by the caller
  png_uint_32 width, height;
};

void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngRead*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "file ends early (truncated)");
  std::memcpy(out, r->bytes + r->pos, n);
  r->pos += n;
}

void png_on_error(png_structp png, png_const_charp msg) {
  auto* r = static_cast<PngRead*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof r->message, "%s", msg);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

// C-style on purpose: nothing with a destructor lives between setjmp and a
// longjmp out of libpng. Returns false with r->message set on failure.
bool decode_png_raw(PngRead* r) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, png_on_error, png_on_warning);
  if (png == nullptr) {
    std::snprintf(r->message, sizeof r->message, "cannot create a PNG reader");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  png_bytep* volatile rows = nullptr;  // set after setjmp, read after a longjmp
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    if (info == nullptr) std::snprintf(r->message, sizeof r->message, "cannot create a PNG reader");
    std::free(rows);
    std::free(r->pixels);
    r->pixels = nullptr;
    png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
    return false;
  }
  png_set_read_fn(png, r, png_read_memory);
  png_set_user_limits(png, 1u << 24, 1u << 24);
  png_read_info(png, info);
  r->width = png_get_image_width(png, info);
  r->height = png_get_image_height(png, info);
  if (std::int64_t(r->width) * std::int64_t(r->height) > kMaxDecodedPixels) png_error(png, "too many pixels");
  const int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const std::size_t stride = png_get_rowbytes(png, info);
  if (stride != std::size_t(r->width) * 3) png_error(png, "unexpected row layout after conversion to RGB");
  r->pixels = static_cast<std::uint8_t*>(std::malloc(stride * r->height));
  rows = static_cast<png_bytep*>(std::malloc(sizeof(png_bytep) * r->height));
  if (r->pixels == nullptr || rows == nullptr) png_error(png, "out of memory");
  for (png_uint_32 y = 0; y < r->height; ++y) rows[y] = r->pixels + stride * y;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  std::free(rows);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

DecodedImage decode_png(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  PngRead r{bytes, size, 0, {0}, nullptr, 0, 0};
  if (!decode_png_raw(&r)) {
    if (std::string(r.message) == "too many pixels") check_pixels(name, "PNG", r.width, r.height);
    io_error(name, std::string("corrupt PNG: ") + r.message);
  }
  std::unique_ptr<std::uint8_t, decltype(&std::free)> owned(r.pixels, &std::free);
  DecodedImage img;
  img.height = r.height;
  img.width = r.width;
  img.pixels.assign(r.pixels, r.pixels + std::size_t(r.width) * r.height * 3);
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
  // Encoded in memory (a size query, then the bytes), then written by the
  // library's one atomic writer (temp file, fsync, rename).
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, hwc, 0, nullptr))
    io_error(path, std::string("cannot encode PNG: ") + image.message);
  std::vector<std::uint8_t> bytes(size);
  if (!png_image_write_to_memory(&image, bytes.data(), &size, 0, hwc, 0, nullptr))
    io_error(path, std::string("cannot encode PNG: ") + image.message);
  write_file_atomic(path, {{bytes.data(), static_cast<std::size_t>(size)}});
}

}  // namespace npid
