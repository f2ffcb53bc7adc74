// Data sets: image-folder order and labels, JPEG/PNG decoding (PIL's
// convert("RGB") semantics for 16-bit, gamma, alpha, palette, CMYK; oversized
// headers refused), bad-file policies, the CIFAR-10 binary reader, the
// synthetic set's determinism.
#include <png.h>
#include <turbojpeg.h>

#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "common/test_util.h"

using namespace npid;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("npid_test_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A smooth test image whose pixels encode (seed, y, x).
std::vector<std::uint8_t> pattern(int h, int w, int seed) {
  std::vector<std::uint8_t> px(static_cast<std::size_t>(h * w * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      px[(y * w + x) * 3 + 0] = static_cast<std::uint8_t>(40 + 4 * x + seed * 10);
      px[(y * w + x) * 3 + 1] = static_cast<std::uint8_t>(30 + 5 * y);
      px[(y * w + x) * 3 + 2] = static_cast<std::uint8_t>(200 - 3 * x - 2 * y);
    }
  return px;
}

std::vector<std::uint8_t> encode_jpeg(const std::vector<std::uint8_t>& px, int h, int w) {
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  REQUIRE(tjCompress2(tj, px.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_444, 100,
                      TJFLAG_ACCURATEDCT) == 0);
  std::vector<std::uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

// A PNG with any colour type and depth, written with libpng's full API.
// samples: rows of (channels x depth/8)-byte samples, big-endian at 16 bits.
// gamma > 0 adds a gAMA chunk; palette: RGB triples for PNG_COLOR_TYPE_PALETTE.
std::vector<std::uint8_t> encode_png(int w, int h, int color_type, int depth, const std::vector<std::uint8_t>& samples,
                                     double gamma = 0, const std::vector<std::uint8_t>& palette = {}) {
  struct Sink {
    static void write(png_structp png, png_bytep data, png_size_t n) {
      auto* out = static_cast<std::vector<std::uint8_t>*>(png_get_io_ptr(png));
      out->insert(out->end(), data, data + n);
    }
    static void flush(png_structp) {}
  };
  std::vector<std::uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  REQUIRE(png != nullptr);
  REQUIRE(info != nullptr);
  if (setjmp(png_jmpbuf(png))) FAIL("libpng could not write the test image");
  png_set_write_fn(png, &out, Sink::write, Sink::flush);
  png_set_IHDR(png, info, w, h, depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  std::vector<png_color> pal;
  for (std::size_t i = 0; i + 2 < palette.size(); i += 3) pal.push_back({palette[i], palette[i + 1], palette[i + 2]});
  if (!pal.empty()) png_set_PLTE(png, info, pal.data(), static_cast<int>(pal.size()));
  if (gamma > 0) png_set_gAMA(png, info, gamma);
  png_write_info(png, info);
  const std::size_t stride = samples.size() / static_cast<std::size_t>(h);
  for (int y = 0; y < h; ++y) png_write_row(png, const_cast<png_bytep>(samples.data() + stride * y));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

void write_file(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                           static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint8_t> image_bytes(const ImageSet& s, std::int64_t i) {
  const auto* d = s.descs.data_as<const std::int64_t>();
  const auto* px = s.pixels.data_as<const std::uint8_t>() + d[3 * i];
  return {px, px + d[3 * i + 1] * d[3 * i + 2] * 3};
}

int max_diff(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  REQUIRE(a.size() == b.size());
  int m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(int(a[i]) - int(b[i])));
  return m;
}

}  // namespace

TEST_CASE("Image folder: classes sorted, files sorted, labels and instance order", "[data]") {
  TempDir dir("folder");
  // Created out of order; "empty" has no images but is a class (label 1, as
  // torchvision's find_classes numbers it); a text file is not an image.
  write_file(dir.path / "zebra" / "b.jpg", encode_jpeg(pattern(8, 12, 3), 8, 12));
  write_file(dir.path / "zebra" / "a.JPEG", encode_jpeg(pattern(16, 16, 2), 16, 16));
  write_file(dir.path / "ant" / "2.jpg", encode_jpeg(pattern(8, 8, 1), 8, 8));
  {
    const auto px = pattern(10, 6, 0);
    write_png((dir.path / "ant" / "10.png").string(), px.data(), 10, 6);
  }
  write_file(dir.path / "ant" / "notes.txt", {'h', 'i'});
  fs::create_directories(dir.path / "empty");

  const ImageFolderIndex index = scan_image_folder(dir.path.string());
  REQUIRE(index.class_names == std::vector<std::string>{"ant", "empty", "zebra"});
  REQUIRE(index.files == std::vector<std::string>{"ant/10.png", "ant/2.jpg", "zebra/a.JPEG", "zebra/b.jpg"});
  REQUIRE(index.labels == std::vector<std::int64_t>{0, 0, 2, 2});

  ImageFolderOptions opt;
  opt.threads = 3;
  const ImageSet set = load_image_folder(dir.path.string(), opt);
  REQUIRE(set.size() == 4);
  REQUIRE(set.files == index.files);
  REQUIRE(set.labels == index.labels);
  REQUIRE(set.height(0) == 10);
  REQUIRE(set.width(0) == 6);
  REQUIRE(set.height(2) == 16);
  REQUIRE(set.width(3) == 12);
  REQUIRE_FALSE(set.uniform_size(nullptr, nullptr));
  // PNG is lossless; JPEG at quality 100, 4:4:4 within a few levels.
  REQUIRE(image_bytes(set, 0) == pattern(10, 6, 0));
  REQUIRE(max_diff(image_bytes(set, 1), pattern(8, 8, 1)) <= 3);
  REQUIRE(max_diff(image_bytes(set, 3), pattern(8, 12, 3)) <= 3);
  // Stable across loads and thread counts.
  opt.threads = 1;
  const ImageSet again = load_image_folder(dir.path.string(), opt);
  REQUIRE(std::equal(again.pixels.data_as<std::uint8_t>(),
                     again.pixels.data_as<std::uint8_t>() + again.pixels.numel(),
                     set.pixels.data_as<std::uint8_t>()));
}

TEST_CASE("Image folder: a corrupt file fails naming it, or is skipped and listed", "[data]") {
  TempDir dir("corrupt");
  const auto good = encode_jpeg(pattern(8, 8, 0), 8, 8);
  write_file(dir.path / "a" / "0.jpg", good);
  write_file(dir.path / "a" / "1.jpg", std::vector<std::uint8_t>(good.begin(), good.begin() + good.size() / 2));
  write_file(dir.path / "b" / "0.jpg", {'n', 'o', 't', ' ', 'j', 'p', 'g'});
  write_file(dir.path / "b" / "1.png", {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0});
  write_file(dir.path / "b" / "2.jpg", good);

  test::require_error([&] { load_image_folder(dir.path.string()); }, ErrorKind::kIo, {"a/1.jpg", "and 2 more unreadable files"});
  test::require_error([&] { decode_image_file((dir.path / "b" / "0.jpg").string()); },
                      ErrorKind::kIo, {"b/0.jpg", "neither a JPEG nor a PNG"});
  test::require_error([&] { decode_image_file((dir.path / "b" / "1.png").string()); },
                      ErrorKind::kIo, {"b/1.png", "PNG"});
  test::require_error([&] { decode_image_file((dir.path / "missing.jpg").string()); },
                      ErrorKind::kIo, {"missing.jpg", "cannot open"});

  // A failed decode leaves the thread's decoder usable for the next file.
  const std::vector<std::uint8_t> half(good.begin(), good.begin() + good.size() / 2);
  test::require_error([&] { decode_image(half.data(), half.size(), "half.jpg"); }, ErrorKind::kIo, {"half.jpg"});
  REQUIRE(decode_image(good.data(), good.size(), "good.jpg").width == 8);

  ImageFolderOptions opt;
  opt.on_bad_file = OnBadFile::kSkip;
  const ImageSet set = load_image_folder(dir.path.string(), opt);
  REQUIRE(set.size() == 2);
  REQUIRE(set.files == std::vector<std::string>{"a/0.jpg", "b/2.jpg"});
  REQUIRE(set.labels == std::vector<std::int64_t>{0, 1});
  REQUIRE(set.skipped_files == std::vector<std::string>{"a/1.jpg", "b/0.jpg", "b/1.png"});

  test::require_error([&] { scan_image_folder((dir.path / "nope").string()); }, ErrorKind::kIo,
                      {"nope", "not a directory"});
  TempDir empty("emptyfolder");
  test::require_error([&] { scan_image_folder(empty.path.string()); }, ErrorKind::kIo,
                      {"no images found"});
}

TEST_CASE("CIFAR-10 binary reader: planes to HWC, labels, file checks", "[data]") {
  TempDir dir("cifarbin");
  // Three records per file; record r of file f has label (f + r) % 10 and
  // pixel (c, p) = (f * 31 + r * 7 + c * 50 + p) % 256.
  auto record = [](int f, int r) {
    std::vector<std::uint8_t> rec(3073);
    rec[0] = static_cast<std::uint8_t>((f + r) % 10);
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) rec[1 + c * 1024 + p] = static_cast<std::uint8_t>((f * 31 + r * 7 + c * 50 + p) % 256);
    return rec;
  };
  for (int f = 1; f <= 6; ++f) {
    std::vector<std::uint8_t> bytes;
    for (int r = 0; r < 3; ++r) {
      const auto rec = record(f, r);
      bytes.insert(bytes.end(), rec.begin(), rec.end());
    }
    write_file(dir.path / (f <= 5 ? "data_batch_" + std::to_string(f) + ".bin" : "test_batch.bin"), bytes);
  }
  REQUIRE(is_cifar10_binary_dir(dir.path.string()));
  const ImageSet train = load_cifar10_binary(dir.path.string(), Split::kTrain);
  const ImageSet test = load_cifar10_binary(dir.path.string(), Split::kTest);
  REQUIRE(train.size() == 15);
  REQUIRE(test.size() == 3);
  REQUIRE(train.num_classes() == 10);
  REQUIRE(train.class_names[9] == "truck");
  std::int64_t h = 0, w = 0;
  REQUIRE(train.uniform_size(&h, &w));
  REQUIRE((h == 32 && w == 32));
  for (int i = 0; i < 15; ++i) {
    const int f = 1 + i / 3, r = i % 3;
    REQUIRE(train.labels[i] == (f + r) % 10);
    const auto px = image_bytes(train, i);
    for (int p : {0, 1, 517, 1023})
      for (int c = 0; c < 3; ++c) REQUIRE(px[3 * p + c] == (f * 31 + r * 7 + c * 50 + p) % 256);
  }
  REQUIRE(test.labels[2] == (6 + 2) % 10);

  // A truncated file is named.
  {
    std::ofstream(dir.path / "data_batch_3.bin", std::ios::binary | std::ios::trunc).write("abc", 3);
  }
  test::require_error([&] { load_cifar10_binary(dir.path.string(), Split::kTrain); }, ErrorKind::kIo,
                      {"data_batch_3.bin", "3073-byte record"});
  TempDir none("cifarnone");
  REQUIRE_FALSE(is_cifar10_binary_dir(none.path.string()));
  test::require_error([&] { load_cifar10_binary(none.path.string(), Split::kTest); }, ErrorKind::kIo,
                      {"test_batch.bin", "cannot open"});
}

TEST_CASE("Synthetic data set: deterministic, prefix-stable, balanced labels, seed matters", "[data]") {
  SyntheticConfig c;
  c.count = 40;
  c.image_size = 24;
  c.seed = 7;
  c.threads = 2;
  const ImageSet a = make_synthetic(c);
  c.threads = 1;
  const ImageSet b = make_synthetic(c);
  REQUIRE(a.size() == 40);
  REQUIRE(a.num_classes() == 10);
  REQUIRE(a.pixels.numel() == 40 * 24 * 24 * 3);
  REQUIRE(std::equal(a.pixels.data_as<std::uint8_t>(), a.pixels.data_as<std::uint8_t>() + a.pixels.numel(),
                     b.pixels.data_as<std::uint8_t>()));
  for (int i = 0; i < 40; ++i) REQUIRE(a.labels[i] == i % 10);
  c.count = 13;
  const ImageSet prefix = make_synthetic(c);
  REQUIRE(std::equal(prefix.pixels.data_as<std::uint8_t>(),
                     prefix.pixels.data_as<std::uint8_t>() + prefix.pixels.numel(),
                     a.pixels.data_as<std::uint8_t>()));
  c.seed = 8;
  const ImageSet other = make_synthetic(c);
  REQUIRE(image_bytes(other, 0) != image_bytes(a, 0));
  // Images of one class differ from each other (random colour, place, size).
  REQUIRE(image_bytes(a, 0) != image_bytes(a, 10));

  // The shape is visible: in every image the pixels split into two groups
  // (shape and background) whose mean brightness differs by > 0.2.
  for (int i = 0; i < 40; ++i) {
    const auto px = image_bytes(a, i);
    std::vector<float> lum(px.size() / 3);
    for (std::size_t p = 0; p < lum.size(); ++p) lum[p] = (px[3 * p] + px[3 * p + 1] + px[3 * p + 2]) / 765.0f;
    const float mid = (*std::min_element(lum.begin(), lum.end()) + *std::max_element(lum.begin(), lum.end())) / 2;
    double lo = 0, hi = 0;
    int nlo = 0, nhi = 0;
    for (float v : lum) (v < mid ? (lo += v, ++nlo) : (hi += v, ++nhi));
    REQUIRE(nlo > 0);
    REQUIRE(nhi > 0);
    REQUIRE(hi / nhi - lo / nlo > 0.2);
  }
  test::require_error([] { SyntheticConfig bad; bad.num_classes = 11; make_synthetic(bad); },
                      ErrorKind::kInvalidArgument, {"make_synthetic", "num_classes", "1..10", "11"});
}

TEST_CASE("ImageSet slice and select keep images, labels and files", "[data]") {
  SyntheticConfig c;
  c.count = 12;
  c.image_size = 8;
  const ImageSet a = make_synthetic(c);
  const ImageSet s = a.slice(5, 4);
  REQUIRE(s.size() == 4);
  REQUIRE(s.labels == std::vector<std::int64_t>{5, 6, 7, 8});
  REQUIRE(image_bytes(s, 2) == image_bytes(a, 7));
  test::require_error([&] { a.slice(10, 5); }, ErrorKind::kInvalidArgument, {"slice", "begin 10", "count 5", "12"});
  // Any rows, in the order given, repeats allowed.
  const ImageSet t = a.select({11, 0, 4, 4});
  REQUIRE(t.labels == std::vector<std::int64_t>{1, 0, 4, 4});  // label = index % 10
  REQUIRE(image_bytes(t, 0) == image_bytes(a, 11));
  REQUIRE(image_bytes(t, 3) == image_bytes(a, 4));
  REQUIRE(t.class_names == a.class_names);
  test::require_error([&] { a.select({3, 12}); }, ErrorKind::kInvalidArgument, {"ImageSet::select", "rows", "[0, 12)", "got 12"});
}

TEST_CASE("Image folder: a seeded held-out split, and decoding a subset by index", "[data]") {
  TempDir dir("split");
  for (int i = 0; i < 20; ++i) {
    const auto px = pattern(6, 6, i);
    char name[32];
    std::snprintf(name, sizeof name, "%02d.png", i);
    fs::create_directories(dir.path / (i < 12 ? "a" : "b"));
    write_png((dir.path / (i < 12 ? "a" : "b") / name).string(), px.data(), 6, 6);
  }
  const ImageFolderIndex all = scan_image_folder(dir.path.string());
  const auto [train, test] = split_image_folder(all, 0.1, 3);
  REQUIRE(test.files.size() == 2);
  REQUIRE(train.files.size() == 18);
  std::vector<std::string> merged = train.files;
  merged.insert(merged.end(), test.files.begin(), test.files.end());
  std::sort(merged.begin(), merged.end());
  REQUIRE(merged == all.files);  // disjoint and complete
  REQUIRE(std::is_sorted(train.files.begin(), train.files.end()));  // folder order kept
  REQUIRE(train.class_names == all.class_names);
  REQUIRE(split_image_folder(all, 0.1, 3).second.files == test.files);  // deterministic
  const ImageSet t = load_image_folder(test);
  REQUIRE(t.size() == 2);
  REQUIRE(t.files == test.files);
  REQUIRE(t.labels == test.labels);
  test::require_error([&] { split_image_folder(all, 1.0, 0); }, ErrorKind::kInvalidArgument,
                      {"split_image_folder", "test_fraction"});
}

TEST_CASE("PNG decoding takes samples as stored (PIL's convert('RGB')): 16-bit, gAMA, alpha, palette, grey",
          "[data]") {
  const int w = 3, h = 2;
  auto decode = [](const std::vector<std::uint8_t>& png) { return decode_image(png.data(), png.size(), "t.png"); };
  auto all_equal = [](const DecodedImage& img, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
    REQUIRE(img.pixels.size() == static_cast<std::size_t>(img.width * img.height * 3));
    for (std::size_t i = 0; i < img.pixels.size(); i += 3)
      if (img.pixels[i] != r || img.pixels[i + 1] != g || img.pixels[i + 2] != b) return false;
    return true;
  };
  // 16-bit RGB 0x8080: the high byte, 128 (a linear-light reading gave 186).
  CHECK(all_equal(decode(encode_png(w, h, PNG_COLOR_TYPE_RGB, 16, std::vector<std::uint8_t>(w * h * 6, 0x80))), 128,
                  128, 128));
  // 16-bit grey 0x8080 -> (128, 128, 128).
  CHECK(all_equal(decode(encode_png(w, h, PNG_COLOR_TYPE_GRAY, 16, std::vector<std::uint8_t>(w * h * 2, 0x80))), 128,
                  128, 128));
  // 8-bit with gAMA 1.0: no gamma correction.
  CHECK(all_equal(decode(encode_png(w, h, PNG_COLOR_TYPE_RGB, 8, std::vector<std::uint8_t>(w * h * 3, 128), 1.0)), 128,
                  128, 128));
  // RGBA red at alpha 0 and 128: alpha dropped, not composited onto black.
  for (std::uint8_t alpha : {std::uint8_t(0), std::uint8_t(128)}) {
    std::vector<std::uint8_t> rgba;
    for (int i = 0; i < w * h; ++i) rgba.insert(rgba.end(), {255, 0, 0, alpha});
    INFO("alpha " << int(alpha));
    CHECK(all_equal(decode(encode_png(w, h, PNG_COLOR_TYPE_RGB_ALPHA, 8, rgba)), 255, 0, 0));
  }
  // Palette (2 entries, 8-bit indices) and 1-bit grey expand to RGB.
  const std::vector<std::uint8_t> idx = {0, 1, 0, 1, 1, 0};
  const DecodedImage pal = decode(encode_png(w, h, PNG_COLOR_TYPE_PALETTE, 8, idx, 0, {10, 20, 30, 200, 100, 50}));
  REQUIRE(pal.width == w);
  for (int i = 0; i < w * h; ++i) {
    const std::uint8_t* p = &pal.pixels[static_cast<std::size_t>(i) * 3];
    CHECK((idx[i] ? std::vector<int>{200, 100, 50} : std::vector<int>{10, 20, 30}) ==
          std::vector<int>{p[0], p[1], p[2]});
  }
  const DecodedImage bit = decode(encode_png(8, 1, PNG_COLOR_TYPE_GRAY, 1, {0xA0}));  // 1010 0000
  REQUIRE(bit.width == 8);
  CHECK(std::vector<int>{bit.pixels[0], bit.pixels[3], bit.pixels[6], bit.pixels[9]} ==
        std::vector<int>{255, 0, 255, 0});
  // Truncated: an error naming the file, not a partial image.
  auto png = encode_png(w, h, PNG_COLOR_TYPE_RGB, 8, std::vector<std::uint8_t>(w * h * 3, 7));
  png.resize(png.size() - 20);
  test::require_error([&] { decode_image(png.data(), png.size(), "cut.png"); }, ErrorKind::kIo, {"cut.png", "PNG"});
}

TEST_CASE("JPEG decoding: CMYK as PIL converts it, harmless warnings pass, oversized headers are refused", "[data]") {
  // CMYK JPEG (stored YCCK by TurboJPEG) of one colour. PIL reads CMYK JPEGs
  // as Adobe-inverted samples and converts with R = C' K' / 255: measured
  // with Pillow 9.4 on its own CMYK JPEG, stored (215, 155, 55, 225) ->
  // RGB (190, 137, 49).
  const int w = 16, h = 8;
  std::vector<std::uint8_t> cmyk;
  for (int i = 0; i < w * h; ++i) cmyk.insert(cmyk.end(), {215, 155, 55, 225});
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  REQUIRE(tjCompress2(tj, cmyk.data(), w, 0, h, TJPF_CMYK, &buf, &size, TJSAMP_444, 100, TJFLAG_ACCURATEDCT) == 0);
  const std::vector<std::uint8_t> jpeg(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  const DecodedImage img = decode_image(jpeg.data(), jpeg.size(), "cmyk.jpg");
  REQUIRE(img.width == w);
  int worst = 0;
  for (std::size_t i = 0; i < img.pixels.size(); i += 3)
    for (int c = 0; c < 3; ++c) worst = std::max(worst, std::abs(int(img.pixels[i + c]) - std::vector<int>{190, 137, 49}[c]));
  CHECK(worst <= 2);  // quality 100: the stored samples within a level or so

  // Extraneous bytes before the end marker: libjpeg warns, the image is
  // complete, PIL accepts it; so do we. A truncated file still fails.
  const auto good = encode_jpeg(pattern(8, 8, 0), 8, 8);
  std::vector<std::uint8_t> extra(good.begin(), good.end() - 2);
  extra.insert(extra.end(), {0, 0, 0, 0xFF, 0xD9});
  const DecodedImage e = decode_image(extra.data(), extra.size(), "extra.jpg");
  const DecodedImage g = decode_image(good.data(), good.size(), "good.jpg");
  CHECK(e.pixels == g.pixels);
  // Cut inside the entropy-coded data (the headers complete): libjpeg-turbo
  // warns "Premature end of JPEG file" and fills grey; that must fail.
  const std::vector<std::uint8_t> cut(good.begin(), good.end() - 12);
  test::require_error([&] { decode_image(cut.data(), cut.size(), "cut.jpg"); }, ErrorKind::kIo,
                      {"cut.jpg", "corrupt JPEG", "Premature end"});
  CHECK(decode_image(good.data(), good.size(), "good.jpg").pixels == g.pixels);  // the decoder is still usable

  // A header declaring 30,000 x 30,000 pixels (the data is 8 x 8): refused
  // before 2.7 GB are allocated.
  std::vector<std::uint8_t> bomb = good;
  std::size_t sof = 2;
  while (sof + 9 < bomb.size() && !(bomb[sof] == 0xFF && bomb[sof + 1] == 0xC0)) ++sof;
  REQUIRE(sof + 9 < bomb.size());
  for (std::size_t at : {sof + 5, sof + 7}) {  // height, then width, big-endian
    bomb[at] = 30000 >> 8;
    bomb[at + 1] = 30000 & 0xFF;
  }
  test::require_error([&] { decode_image(bomb.data(), bomb.size(), "bomb.jpg"); }, ErrorKind::kIo,
                      {"bomb.jpg", "30000 x 30000", "decompression bomb"});
  auto big_png = encode_png(1, 1, PNG_COLOR_TYPE_GRAY, 8, {0});
  for (std::size_t at : {std::size_t(16), std::size_t(20)}) {  // IHDR width, height (the CRC no longer matches)
    big_png[at] = 0;
    big_png[at + 1] = 0;
    big_png[at + 2] = 30000 >> 8;
    big_png[at + 3] = 30000 & 0xFF;
  }
  test::require_error([&] { decode_image(big_png.data(), big_png.size(), "big.png"); }, ErrorKind::kIo, {"big.png"});
}
