// Tests of the safetensors reader and writer (autograd/safetensors.h): half / bfloat16 conversions
// on known bit patterns, round trips of every written dtype, one test per malformed-input error
// (each checks the one-line message names the file), truncated and mutated files (must raise
// SafetensorsError or load, never crash), the atomic write, row streaming, release(), and the
// files the Python golden scripts write by hand.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "edgetune/autograd/quant.h"
#include "edgetune/autograd/safetensors.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace edgetune;
using namespace edgetune::safetensors;
using edgetune::test::TempDir;

namespace {

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

// A safetensors image from a header text and raw data bytes.
std::string image(const std::string& header, const std::string& data = {}) {
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

template <class T>
std::string raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// The SafetensorsError message of opening `bytes` as a file, or "" when it opened.
std::string open_error(const std::string& bytes, fs::path* where = nullptr) {
  static TempDir dir;
  const fs::path p = dir.path / "bad.safetensors";
  write_file(p, bytes);
  if (where) *where = p;
  try {
    Reader r(p);
  } catch (const SafetensorsError& e) {
    return e.what();
  }
  return "";
}

// Opening `bytes` fails with a one-line message that starts with the file and contains `what`.
void check_rejected(const std::string& bytes, const std::string& what) {
  fs::path p;
  const std::string msg = open_error(bytes, &p);
  INFO("message: " << msg);
  REQUIRE(!msg.empty());
  CHECK(msg.rfind(p.string() + ": ", 0) == 0);
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.find(what) != std::string::npos);
}

std::vector<float> floats(const Tensor& t) {
  const auto v = t.to_vector();
  return std::vector<float>(v.begin(), v.end());
}

bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, 4) == 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Conversions.

TEST_CASE("safetensors: f16 -> f32 is exact on known bit patterns", "[safetensors]") {
  struct Case {
    std::uint16_t h;
    float f;
  };
  const Case cases[] = {
      {0x0000, 0.0f},
      {0x3c00, 1.0f},
      {0xc000, -2.0f},
      {0x3555, 0.333251953125f},
      {0x7bff, 65504.0f},
      {0xfbff, -65504.0f},
      {0x0400, 0x1p-14f},
      {0x0001, 0x1p-24f},
      {0x03ff, 1023 * 0x1p-24f},
      {0x8001, -0x1p-24f},
      {0x3bff, 0.99951171875f},
      {0x7c00, INFINITY},
      {0xfc00, -INFINITY},
  };
  for (const auto& c : cases) {
    INFO("half 0x" << std::hex << c.h);
    CHECK(same_bits(f16_to_f32(c.h), c.f));
  }
  CHECK(std::signbit(f16_to_f32(0x8000)));
  CHECK(f16_to_f32(0x8000) == 0.0f);
  CHECK(std::isnan(f16_to_f32(0x7e00)));
  CHECK(std::isnan(f16_to_f32(0x7c01)));  // signalling NaN stays a NaN, not an infinity
  CHECK(std::signbit(f16_to_f32(0xfe00)));
}

TEST_CASE("safetensors: f32/f64 -> f16 round to nearest even, exhaustively on halves",
          "[safetensors]") {
  // Every non-NaN half survives f16 -> f32 -> f16 and f16 -> f64 -> f16.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto hh = static_cast<std::uint16_t>(h);
    const float f = f16_to_f32(hh);
    if (std::isnan(f)) {
      REQUIRE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    REQUIRE(f32_to_f16(f) == hh);
    REQUIRE(f64_to_f16(static_cast<double>(f)) == hh);
  }
  // Midpoints between neighbours (positive and negative, subnormal and normal) go to the even
  // one; a hair either side goes to the nearer one.
  for (std::uint32_t h = 0; h < 0x7bff; ++h) {
    const double lo = f16_to_f32(static_cast<std::uint16_t>(h));
    const double hi = f16_to_f32(static_cast<std::uint16_t>(h + 1));
    const double mid = (lo + hi) / 2;
    const auto even = static_cast<std::uint16_t>(h % 2 == 0 ? h : h + 1);
    REQUIRE(f64_to_f16(mid) == even);
    REQUIRE(f32_to_f16(static_cast<float>(mid)) == even);  // the midpoint is exact in float
    REQUIRE(f64_to_f16(-mid) == (even | 0x8000));
    REQUIRE(f64_to_f16(std::nextafter(mid, 0.0)) == h);
    REQUIRE(f64_to_f16(std::nextafter(mid, INFINITY)) == h + 1);
  }
  CHECK(f32_to_f16(65519.996f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);  // the tie above the largest half goes to infinity
  CHECK(f32_to_f16(1e10f) == 0x7c00);
  CHECK(f32_to_f16(-1e10f) == 0xfc00);
  CHECK(f64_to_f16(1e300) == 0x7c00);
  CHECK(f32_to_f16(0x1p-25f) == 0x0000);  // half the smallest subnormal: tie to even zero
  CHECK(f32_to_f16(0x1.000002p-25f) == 0x0001);
  CHECK(f32_to_f16(-0x1p-26f) == 0x8000);
  CHECK(f64_to_f16(5e-324) == 0x0000);  // a double subnormal
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(f32_to_f16(INFINITY) == 0x7c00);
  CHECK((f32_to_f16(NAN) & 0x7c00) == 0x7c00);
  CHECK((f32_to_f16(NAN) & 0x03ff) != 0);
  // Rounding once from double differs from rounding through float: 1 + 2^-11 + 2^-40 is just
  // above a half tie, but float rounds it to the tie itself, which goes down to 1.
  const double d = 1.0 + 0x1p-11 + 0x1p-40;
  CHECK(f64_to_f16(d) == 0x3c01);
  CHECK(f32_to_f16(static_cast<float>(d)) == 0x3c00);
// GCC before 13 has _Float16 in C++ on x86 only (on ARM64 only in C, __FLT16_MAX__ all the same).
#if defined(__FLT16_MAX__) && (defined(__x86_64__) || defined(__clang__) || __GNUC__ >= 13)
  // The compiler's own _Float16 conversion agrees on random doubles and floats of every scale.
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> exp(-30, 17);
  std::uniform_real_distribution<double> mant(-2.0, 2.0);
  for (int i = 0; i < 200000; ++i) {
    const double v = std::ldexp(mant(rng), exp(rng));
    const _Float16 a = static_cast<_Float16>(v);
    const _Float16 b = static_cast<_Float16>(static_cast<float>(v));
    std::uint16_t ab, bb;
    std::memcpy(&ab, &a, 2);
    std::memcpy(&bb, &b, 2);
    REQUIRE(f64_to_f16(v) == ab);
    REQUIRE(f32_to_f16(static_cast<float>(v)) == bb);
  }
#endif
}

TEST_CASE("safetensors: bf16 is the top half of an f32", "[safetensors]") {
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(bf16_to_f32(0xc000) == -2.0f);
  CHECK(bf16_to_f32(0x7f80) == INFINITY);
  CHECK(bf16_to_f32(0x0001) == 0x1p-133f);  // subnormal, exact
  CHECK(std::isnan(bf16_to_f32(0x7fc0)));
  CHECK(bf16_to_f32(0x4049) == 3.140625f);
  CHECK(f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);      // tie -> even
  CHECK(f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82);  // tie -> even (up)
  CHECK(f32_to_bf16(1.0f + 0x1.02p-8f) == 0x3f81);   // above the tie
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

// ---------------------------------------------------------------------------------------------
// Round trips.

TEST_CASE("safetensors: round trip of F32, F64, I32 and F16 tensors with metadata",
          "[safetensors]") {
  TempDir dir;
  const fs::path p = dir.path / "rt.safetensors";
  const std::vector<double> v6 = {1.5, -2.25, 3e-3, 1e10, -0.0, 65504.0};
  Tensor a = Tensor::from_values({2, 3}, v6, DType::F32);
  Tensor b = Tensor::from_values({3, 2}, v6, DType::F64);
  Tensor c = Tensor::from_ints({2, 2, 1, 1},
                               std::vector<std::int32_t>{7, -8, 2147483647, -2147483647 - 1});
  Tensor s = Tensor::from_values(Shape{}, std::vector<double>{0.125}, DType::F32);
  Tensor e = Tensor::zeros({0, 4}, DType::F32);
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "caf\xc3\xa9"}};
  save(p, {{"b.weight", b}, {"a", a}, {"ids", c}, {"empty", e}, {"scalar", s}}, meta);

  Reader r(p);
  CHECK(r.metadata() == meta);
  REQUIRE(r.tensors().size() == 5);
  // Listed in the order of the bytes, which is the order given to save().
  const std::vector<std::string> order = {"b.weight", "a", "ids", "empty", "scalar"};
  for (size_t i = 0; i < order.size(); ++i) CHECK(r.tensors()[i].name == order[i]);
  CHECK(r.find("a")->dtype == "F32");
  CHECK(r.find("b.weight")->dtype == "F64");
  CHECK(r.find("ids")->dtype == "I32");
  CHECK(r.find("scalar")->shape.empty());
  CHECK(r.find("missing") == nullptr);
  CHECK(r.find("a")->shape == std::vector<std::int64_t>{2, 3});
  CHECK(r.find("b.weight")->begin == 0);
  CHECK(r.find("b.weight")->end == 48);
  CHECK(r.find("a")->begin == 48);

  CHECK(r.load("a").to_vector() == a.to_vector());
  CHECK(r.load("a", DType::F64).to_vector() == a.to_vector());
  CHECK(r.load("b.weight", DType::F64).to_vector() == v6);
  CHECK(r.load("b.weight").dtype() == DType::F32);
  CHECK(r.load("b.weight").shape() == Shape{3, 2});
  Tensor ids = r.load("ids", DType::I32, MemCategory::Activations);
  CHECK(ids.shape() == Shape{2, 2, 1, 1});
  CHECK(ids.to_vector() == c.to_vector());
  CHECK(ids.name() == "ids");
  CHECK(ids.category() == MemCategory::Activations);
  CHECK(r.load("scalar").item() == 0.125);
  CHECK(r.load("scalar").rank() == 0);
  CHECK(r.load("empty").numel() == 0);
  CHECK(r.load("a").category() == MemCategory::BaseWeights);

  // The header is padded with spaces to a multiple of 8, as the reference writer does.
  const std::string bytes = read_file(p);
  std::uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  CHECK(header["a"]["data_offsets"] == nlohmann::json::array({48, 72}));
  CHECK(bytes.size() == 8 + n + 48 + 24 + 16 + 0 + 4);

  // As F16: floats rounded to nearest even, integers untouched.
  const fs::path p16 = dir.path / "rt16.safetensors";
  save(p16, {{"a", a}, {"b", b}, {"ids", c}}, {}, /*as_f16=*/true);
  Reader r16(p16);
  CHECK(r16.find("a")->dtype == "F16");
  CHECK(r16.find("b")->dtype == "F16");
  CHECK(r16.find("ids")->dtype == "I32");
  CHECK(r16.metadata().empty());
  const auto a16 = floats(r16.load("a"));
  for (size_t i = 0; i < v6.size(); ++i) {
    CHECK(same_bits(a16[i], f16_to_f32(f32_to_f16(static_cast<float>(v6[i])))));
  }
  CHECK(a16[3] == INFINITY);  // 1e10 is beyond the half range
  CHECK(std::signbit(a16[4]));
  CHECK(r16.load("ids", DType::I32).to_vector() == c.to_vector());
}

TEST_CASE("safetensors: hand-written F16, BF16, I64 and listed-only tensors", "[safetensors]") {
  const std::vector<std::uint16_t> h = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00, 0x8000};
  const std::vector<std::uint16_t> bf = {0x3f80, 0xc000, 0x4049};
  const std::vector<std::int64_t> i64 = {1, -2, 2147483647, -2147483648LL};
  const std::vector<std::int64_t> big = {5, 1LL << 40};
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
      R"("bf":{"dtype":"BF16","shape":[3],"data_offsets":[12,18]},)"
      R"("i":{"dtype":"I64","shape":[4],"data_offsets":[18,50]},)"
      R"("big":{"dtype":"I64","shape":[2],"data_offsets":[50,66]},)"
      R"("u":{"dtype":"U8","shape":[2],"data_offsets":[66,68]},)"
      R"("deep":{"dtype":"BOOL","shape":[1,1,1,1,1],"data_offsets":[68,69]}})";
  const std::string file =
      image(header, raw(h) + raw(bf) + raw(i64) + raw(big) + "\x01\x02" + "\x01");
  Reader r(as_bytes(file), "hand.safetensors");
  REQUIRE(r.tensors().size() == 6);

  const auto hv = floats(r.load("h"));
  for (size_t i = 0; i < h.size(); ++i) CHECK(same_bits(hv[i], f16_to_f32(h[i])));
  CHECK(hv[2] == 0x1p-24f);
  const auto hd = r.load("h", DType::F64).to_vector();
  CHECK(hd[3] == 65504.0);
  CHECK(r.load("bf").to_vector() == std::vector<double>{1.0, -2.0, 3.140625});
  CHECK(r.load("i", DType::I32).to_vector() ==
        std::vector<double>{1, -2, 2147483647, -2147483648.0});

  auto error = [&](auto&& f) -> std::string {
    try {
      f();
    } catch (const SafetensorsError& e) {
      return e.what();
    }
    return "";
  };
  const std::string e1 = error([&] { r.load("big", DType::I32); });
  CHECK(e1.rfind("hand.safetensors: tensor 'big' element 1 is 1099511627776", 0) == 0);
  CHECK(error([&] { r.load("u", DType::I32); }).find("U8, which is listed but not converted") !=
        std::string::npos);
  CHECK(error([&] { r.load("deep"); }).find("has 5 dimensions") != std::string::npos);
  CHECK(error([&] { r.load("i"); }).find("load it as DType::I32") != std::string::npos);
  CHECK(error([&] { r.load("h", DType::I32); }).find("load it as DType::F32") != std::string::npos);
  CHECK(error([&] { r.load("nope"); }) ==
        "hand.safetensors: no tensor 'nope' (the file holds 6 tensors)");
  CHECK(r.bytes(*r.find("u")).size() == 2);

  // A TensorInfo edited by the caller (or from another file) is refused, not trusted.
  TensorInfo forged = *r.find("u");
  forged.end = 1000;
  forged.shape = {934};
  CHECK(error([&] { r.load(forged, DType::I32); }).find("not described this way") !=
        std::string::npos);
}

TEST_CASE("safetensors: at() suggests a name that differs by a prefix", "[safetensors]") {
  const std::string file =
      image(R"({"bert.pooler.dense.bias":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
            std::string(4, '\0'));
  Reader r(as_bytes(file), "m.safetensors");
  try {
    r.at("pooler.dense.bias");
    FAIL("no error");
  } catch (const SafetensorsError& e) {
    CHECK(std::string(e.what()) ==
          "m.safetensors: no tensor 'pooler.dense.bias' (the file holds 1 tensors; did you mean "
          "'bert.pooler.dense.bias'?)");
  }
}

// ---------------------------------------------------------------------------------------------
// Malformed files: one test per check.

namespace {
const std::string kF32x6 = std::string(24, '\0');
std::string one(const std::string& entry, const std::string& data = kF32x6) {
  return image(R"({"w":)" + entry + "}", data);
}
}  // namespace

TEST_CASE("safetensors error: missing file", "[safetensors]") {
  try {
    Reader r("/nonexistent/dir/model.safetensors");
    FAIL("no error");
  } catch (const SafetensorsError& e) {
    CHECK(std::string(e.what()) ==
          "/nonexistent/dir/model.safetensors: cannot open (No such file or directory)");
  }
}

TEST_CASE("safetensors error: a directory", "[safetensors]") {
  TempDir dir;
  try {
    Reader r(dir.path);
    FAIL("no error");
  } catch (const SafetensorsError& e) {
    CHECK(std::string(e.what()).find("is a directory") != std::string::npos);
  }
}

TEST_CASE("safetensors error: file shorter than 8 bytes", "[safetensors]") {
  check_rejected("", "holds 0 bytes, fewer than the 8-byte header length");
  check_rejected(std::string("\x10\0\0", 3), "holds 3 bytes, fewer than the 8-byte header length");
}

TEST_CASE("safetensors error: header length beyond the file", "[safetensors]") {
  std::string f = image("{}");
  f[0] = 100;
  check_rejected(f, "header length 100 runs past the end of the file, which holds 2 bytes");
}

TEST_CASE("safetensors error: absurd header length", "[safetensors]") {
  std::string f = image("{}");
  const std::uint64_t n = 1ULL << 40;
  std::memcpy(f.data(), &n, 8);
  check_rejected(f, "header length 1099511627776 is absurd");
  std::memset(f.data(), 0xff, 8);
  check_rejected(f, "header length 18446744073709551615 is absurd");
}

TEST_CASE("safetensors error: header not JSON", "[safetensors]") {
  check_rejected(image("{\"w\": [1, 2"), "header is not valid JSON");
  check_rejected(image("PK\x03\x04 zip"), "header is not valid JSON");
  check_rejected(image(""), "header is not valid JSON");
  check_rejected(image(std::string("{\"a\0\":1}", 9)), "header is not valid JSON");
}

TEST_CASE("safetensors error: header not an object", "[safetensors]") {
  check_rejected(image("[1, 2, 3]"), "header is a JSON array, expected an object of tensors");
  check_rejected(image("42      "), "header is a JSON number");
}

TEST_CASE("safetensors error: header nested absurdly deep", "[safetensors]") {
  check_rejected(image("{\"w\":" + std::string(10000, '[') + std::string(10000, ']') + "}"),
                 "nested more than 16 levels deep");
}

TEST_CASE("safetensors error: entry not an object", "[safetensors]") {
  check_rejected(image(R"({"w": 3})"), "tensor 'w' is a JSON number, expected an object");
}

TEST_CASE("safetensors error: entry without dtype, shape or data_offsets", "[safetensors]") {
  check_rejected(one(R"({"shape":[6],"data_offsets":[0,24]})"), "tensor 'w' has no \"dtype\"");
  check_rejected(one(R"({"dtype":"F32","data_offsets":[0,24]})"), "tensor 'w' has no \"shape\"");
  check_rejected(one(R"({"dtype":"F32","shape":[6]})"), "tensor 'w' has no \"data_offsets\"");
}

TEST_CASE("safetensors error: unknown dtype", "[safetensors]") {
  check_rejected(one(R"({"dtype":"F31","shape":[6],"data_offsets":[0,24]})"),
                 "tensor 'w' has unknown dtype 'F31' (known: F64 F32 F16 BF16 I64 I32");
  check_rejected(one(R"({"dtype":4,"shape":[6],"data_offsets":[0,24]})"),
                 "dtype 4 is not a string");
}

TEST_CASE("safetensors error: negative or non-integer shape", "[safetensors]") {
  check_rejected(one(R"({"dtype":"F32","shape":[-2,3],"data_offsets":[0,24]})"),
                 "shape [-2,3] has a dimension -2 that is negative");
  check_rejected(one(R"({"dtype":"F32","shape":[2.5,2],"data_offsets":[0,20]})"),
                 "has a dimension 2.5 that is not an integer");
  check_rejected(one(R"({"dtype":"F32","shape":[2.0,3],"data_offsets":[0,24]})"),
                 "that is not an integer");
  check_rejected(one(R"({"dtype":"F32","shape":["6"],"data_offsets":[0,24]})"),
                 "that is not a number");
  check_rejected(one(R"({"dtype":"F32","shape":6,"data_offsets":[0,24]})"),
                 "shape 6 is not an array of integers");
  check_rejected(one(R"({"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,24]})"),
                 "that is too large");
}

TEST_CASE("safetensors error: shape with more elements than 64 bits count", "[safetensors]") {
  check_rejected(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,24]})"),
                 "has more elements than 64 bits can count");
  check_rejected(one(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,24]})"),
                 "has more elements than 64 bits can count");
}

TEST_CASE("safetensors error: offsets inconsistent with dtype and shape", "[safetensors]") {
  check_rejected(one(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,20]})"),
                 "tensor 'w' of dtype F32 and shape [2, 3] needs 24 bytes but data_offsets [0, 20] "
                 "span 20");
  check_rejected(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,4]})"),
                 "data_offsets [8, 4] end before they begin");
  check_rejected(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"),
                 "data_offsets [0] is not [begin, end] with non-negative integers");
  check_rejected(one(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"),
                 "is not [begin, end] with non-negative integers");
  check_rejected(one(R"({"dtype":"F32","shape":[2],"data_offsets":"0-8"})"),
                 "is not [begin, end] with non-negative integers");
}

TEST_CASE("safetensors error: offsets outside the data (truncated file)", "[safetensors]") {
  check_rejected(one(R"({"dtype":"F32","shape":[6],"data_offsets":[8,32]})"),
                 "tensor 'w' ends at byte 32 of the data section but the file holds only 24 bytes "
                 "of data (truncated file?)");
  check_rejected(
      one(R"({"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]})"),
      "is not [begin, end] with non-negative integers");
}

TEST_CASE("safetensors error: overlapping tensors", "[safetensors]") {
  check_rejected(image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                       kF32x6),
                 "tensors 'a' [0, 16) and 'b' [12, 20) overlap in the data section");
  // A tensor inside another one is caught too, and empty tensors anywhere are fine.
  check_rejected(image(R"({"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},)"
                       R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                       kF32x6),
                 "tensors 'a' [0, 24) and 'b' [8, 12) overlap");
}

TEST_CASE("safetensors error: duplicate tensor names", "[safetensors]") {
  check_rejected(image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                       kF32x6),
                 "tensor 'w' appears twice");
}

TEST_CASE("safetensors error: metadata not an object of strings", "[safetensors]") {
  check_rejected(image(R"({"__metadata__":[1]})"),
                 "\"__metadata__\" is a JSON array, expected an object of strings");
  check_rejected(image(R"({"__metadata__":{"step":3}})"),
                 "metadata 'step' is a JSON number (3), expected a string");
}

TEST_CASE("safetensors error: names with control characters stay on one line", "[safetensors]") {
  check_rejected(image(R"({"a\nb":{"dtype":"X","shape":[],"data_offsets":[0,0]}})"),
                 "tensor 'a\\x0ab' has unknown dtype 'X'");
}

// ---------------------------------------------------------------------------------------------
// Truncation and mutation: SafetensorsError or a clean load, never a crash or an out-of-bounds
// read (run under the sanitizer build to make the latter visible).

namespace {

// A small valid file with every convertible dtype, a listed-only one, metadata and an empty tensor.
std::string sample_file() {
  TempDir dir;
  const fs::path p = dir.path / "s.safetensors";
  const std::vector<double> v = {0.5, -1.0, 2.0, 3.5, -4.25, 1e-3};
  save(p,
       {{"w", Tensor::from_values({2, 3}, v, DType::F32)},
        {"d", Tensor::from_values({3, 2}, v, DType::F64)},
        {"i", Tensor::from_ints({3}, std::vector<std::int32_t>{1, 2, 3})},
        {"e", Tensor::zeros({0, 2})}},
       {{"format", "pt"}});
  std::string f = read_file(p);
  // Add F16, BF16, I64 and U8 tensors by rewriting the header by hand.
  std::uint64_t n;
  std::memcpy(&n, f.data(), 8);
  auto header = nlohmann::ordered_json::parse(f.substr(8, n));
  std::string data = f.substr(8 + n);
  auto add = [&](const std::string& name, const char* dtype, std::vector<std::int64_t> shape,
                 const std::string& bytes) {
    header[name] = {{"dtype", dtype},
                    {"shape", shape},
                    {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  };
  add("h", "F16", {2, 2}, raw(std::vector<std::uint16_t>{0x3c00, 0x0001, 0x7c00, 0xfc00}));
  add("b", "BF16", {2, 1}, raw(std::vector<std::uint16_t>{0x3f80, 0x4049}));
  add("l", "I64", {2}, raw(std::vector<std::int64_t>{-7, 1LL << 35}));
  add("u", "U8", {3}, "abc");
  return image(header.dump(), data);
}

// Opens and uses every tensor of an image; returns whether it opened.
bool exercise(const Reader& r) {
  for (const TensorInfo& t : r.tensors()) {
    for (DType target : {DType::F32, DType::F64, DType::I32, DType::Q8}) {
      try {
        Tensor x = r.load(t, target);
        (void)x.to_vector();
      } catch (const SafetensorsError&) {
      }
    }
    if (t.shape.size() == 2 && t.shape[0] > 0 && t.shape[0] * t.shape[1] < (1 << 20)) {
      try {
        std::vector<float> row(static_cast<size_t>(t.shape[1]) + 1);
        r.read_rows_f32(t, t.shape[0] - 1, 1, row.data());
      } catch (const SafetensorsError&) {
      }
    }
    (void)r.bytes(t);
    r.release(t);
  }
  (void)r.metadata();
  return true;
}

}  // namespace

TEST_CASE("safetensors: every truncation of a valid file is rejected", "[safetensors]") {
  const std::string f = sample_file();
  REQUIRE(exercise(Reader(as_bytes(f), "full")));
  for (size_t len = 0; len < f.size(); ++len) {
    const std::string cut = f.substr(0, len);
    INFO("length " << len);
    CHECK_THROWS_AS(Reader(as_bytes(cut), "cut.safetensors"), SafetensorsError);
  }
  // And through the file path (mmap) for a few lengths.
  for (size_t len : {size_t{0}, size_t{7}, size_t{8}, size_t{20}, f.size() - 1}) {
    CHECK_FALSE(open_error(f.substr(0, len)).empty());
  }
}

TEST_CASE("safetensors: mutated files raise SafetensorsError or load, never crash",
          "[safetensors]") {
  const std::string f = sample_file();
  std::uint64_t header_len;
  std::memcpy(&header_len, f.data(), 8);
  std::mt19937 rng(12345);  // deterministic
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  int opened = 0, rejected = 0;
  const char* interesting[] = {"0", "9", "-", ".", "e", "[", "]", "{", "}", "\"", ",", ":", " "};
  for (int i = 0; i < 4000; ++i) {
    std::string m = f;
    switch (i % 6) {
      case 0:  // flip bits of a few bytes anywhere
        for (int k = 0, n = 1 + static_cast<int>(pick(4)); k < n; ++k)
          m[pick(m.size())] ^= static_cast<char>(1 << pick(8));
        break;
      case 1:  // replace a header byte with a JSON-significant character
        m[8 + pick(header_len)] = interesting[pick(std::size(interesting))][0];
        break;
      case 2:  // truncate
        m.resize(pick(m.size()));
        break;
      case 3:  // delete or insert a header byte (shifts everything after it)
        if (pick(2)) {
          m.erase(8 + pick(header_len), 1);
        } else {
          m.insert(8 + pick(header_len), 1, interesting[pick(std::size(interesting))][0]);
        }
        break;
      case 4: {  // change a digit of the header (offsets and shapes)
        std::vector<size_t> digits;
        for (size_t j = 8; j < 8 + header_len; ++j)
          if (std::isdigit(static_cast<unsigned char>(m[j]))) digits.push_back(j);
        m[digits[pick(digits.size())]] = static_cast<char>('0' + pick(10));
        break;
      }
      default: {  // a random header length
        const std::uint64_t n = pick(2) ? pick(m.size() + 16) : rng();
        std::memcpy(m.data(), &n, 8);
        break;
      }
    }
    try {
      if (i % 20 == 0) {  // through the mmap path now and then
        fs::path p;
        if (open_error(m, &p).empty()) {
          exercise(Reader(p));
          ++opened;
        } else {
          ++rejected;
        }
      } else {
        exercise(Reader(as_bytes(m), "mutant.safetensors"));
        ++opened;
      }
    } catch (const SafetensorsError& e) {
      ++rejected;
      REQUIRE(std::string(e.what()).find('\n') == std::string::npos);
    }
  }
  INFO("opened " << opened << ", rejected " << rejected);
  CHECK(opened > 100);
  CHECK(rejected > 1000);
}

// ---------------------------------------------------------------------------------------------
// The atomic write.

namespace {
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp-") != std::string::npos)
      out.push_back(e.path().filename().string());
  }
  return out;
}
}  // namespace

TEST_CASE("safetensors: save replaces the target atomically and leaves no temporary file",
          "[safetensors]") {
  TempDir dir;
  const fs::path p = dir.path / "model.safetensors";
  const Tensor a = Tensor::full({4, 4}, 1.0);
  const Tensor b = Tensor::full({2}, 2.0);
  save(p, {{"a", a}});
  CHECK(leftovers(dir.path).empty());
  save(p, {{"b", b}}, {{"k", "v"}});
  CHECK(leftovers(dir.path).empty());
  Reader r(p);
  REQUIRE(r.tensors().size() == 1);
  CHECK(r.tensors()[0].name == "b");
  CHECK(r.metadata().at("k") == "v");

  // A relative path (the directory to sync is the current one).
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path);
  save("relative.safetensors", {{"a", a}});
  fs::current_path(cwd);
  CHECK(Reader(dir.path / "relative.safetensors").find("a") != nullptr);
}

TEST_CASE("safetensors: a failed save leaves the target untouched and no temporary file",
          "[safetensors]") {
  TempDir dir;
  const fs::path p = dir.path / "model.safetensors";
  save(p, {{"keep", Tensor::full({3}, 7.0)}});
  const std::string before = read_file(p);
  auto error = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const SafetensorsError& e) {
      return e.what();
    }
    return "";
  };

  SECTION("into a directory that does not exist") {
    const fs::path q = dir.path / "no" / "such" / "dir" / "model.safetensors";
    const std::string msg = error([&] { save(q, {{"a", Tensor::full({2}, 1.0)}}); });
    CHECK(msg.rfind(q.string() + ": cannot create a temporary file beside it", 0) == 0);
    CHECK(msg.find("No such file or directory") != std::string::npos);
    CHECK_FALSE(fs::exists(dir.path / "no"));
  }
  SECTION("a quantized tensor") {
    const Tensor q = quantize(Tensor::full({2, 4}, 0.5), DType::Q8);
    const std::string msg = error([&] { save(p, {{"a", Tensor::full({2}, 1.0)}, {"q", q}}); });
    CHECK(msg.rfind(p.string() + ": tensor 'q' is q8: quantized tensors cannot be saved", 0) == 0);
  }
  SECTION("duplicate names, a reserved name, an undefined tensor") {
    const Tensor a = Tensor::full({2}, 1.0);
    CHECK(error([&] {
            save(p, {{"a", a}, {"a", a}});
          }).find("tensor 'a' is given twice") != std::string::npos);
    CHECK(error([&] {
            save(p, {{"__metadata__", a}});
          }).find("cannot be a tensor name") != std::string::npos);
    CHECK(error([&] { save(p, {{"u", Tensor()}}); }).find("undefined") != std::string::npos);
    CHECK(error([&] { save(p, {{"bad\xff", a}}); }).find("not valid UTF-8") != std::string::npos);
  }
  SECTION("the rename fails after the bytes were written") {
    // The target is a non-empty directory: the temporary file is complete, rename() refuses.
    const fs::path d = dir.path / "occupied.safetensors";
    fs::create_directories(d / "inside");
    const std::string msg = error([&] { save(d, {{"a", Tensor::full({1000}, 1.0)}}); });
    CHECK(msg.find("cannot rename") != std::string::npos);
    CHECK(msg.find("left as it was") != std::string::npos);
    CHECK(fs::is_directory(d / "inside"));
  }
  CHECK(read_file(p) == before);
  CHECK(leftovers(dir.path).empty());
}

// ---------------------------------------------------------------------------------------------
// Streaming rows, quantize on load, release.

TEST_CASE("safetensors: read_rows_f32 streams rows of F32, F16, BF16 and F64 matrices",
          "[safetensors]") {
  TempDir dir;
  const fs::path p = dir.path / "rows.safetensors";
  const std::int64_t n = 5, k = 3;
  std::vector<double> v(static_cast<size_t>(n * k));
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.25 * static_cast<double>(i) - 1.0;
  save(p, {{"f32", Tensor::from_values({n, k}, v, DType::F32)},
           {"f64", Tensor::from_values({n, k}, v, DType::F64)},
           {"vec", Tensor::from_values({n * k}, v, DType::F32)},
           {"int", Tensor::from_ints({1, 2}, std::vector<std::int32_t>{1, 2})}});
  save(dir.path / "rows16.safetensors", {{"f16", Tensor::from_values({n, k}, v, DType::F32)}}, {},
       true);
  // BF16 by hand (the writer does not write it).
  std::vector<std::uint16_t> bf(v.size());
  for (size_t i = 0; i < v.size(); ++i) bf[i] = f32_to_bf16(static_cast<float>(v[i]));
  const std::string bf_file =
      image(R"({"bf16":{"dtype":"BF16","shape":[5,3],"data_offsets":[0,30]}})", raw(bf));

  Reader r(p), r16(dir.path / "rows16.safetensors");
  Reader rb(as_bytes(bf_file), "bf.safetensors");
  for (const auto& [reader, name] : {std::pair{&r, "f32"}, std::pair{&r, "f64"},
                                     std::pair{&r16, "f16"}, std::pair{&rb, "bf16"}}) {
    INFO(name);
    const TensorInfo& t = reader->at(name);
    std::vector<float> out(static_cast<size_t>(2 * k), -99.0f);
    reader->read_rows_f32(t, 2, 2, out.data());
    for (std::int64_t i = 0; i < 2 * k; ++i) CHECK(out[i] == static_cast<float>(v[6 + i]));
    reader->read_rows_f32(t, 4, 1, out.data());
    CHECK(out[2] == static_cast<float>(v[14]));
    reader->read_rows_f32(t, 5, 0, nullptr);  // empty range at the end is fine
    CHECK_THROWS_AS(reader->read_rows_f32(t, 4, 2, out.data()), SafetensorsError);
    CHECK_THROWS_AS(reader->read_rows_f32(t, -1, 1, out.data()), SafetensorsError);
    CHECK_THROWS_AS(reader->read_rows_f32(t, 0, -1, out.data()), SafetensorsError);
    CHECK_THROWS_AS(reader->read_rows_f32(t, 0, 1, nullptr), SafetensorsError);
  }
  CHECK_THROWS_WITH(r.read_rows_f32(r.at("vec"), 0, 1, nullptr),
                    Catch::Contains("has shape [15], expected (N, K)"));
  CHECK_THROWS_WITH(r.read_rows_f32(r.at("int"), 0, 1, nullptr),
                    Catch::Contains("holds I32, expected F32, F16, BF16 or F64"));
}

TEST_CASE("safetensors: loading quantized quantizes row by row (pal4: by groups) like quantize()",
          "[safetensors]") {
  TempDir dir;
  const fs::path p = dir.path / "q.safetensors";
  // k not a multiple of 32 or 64: a short last q4 group and nf4 block; n: two pal4 groups of 16
  // rows and a short one.
  const std::int64_t n = 37, k = 70;
  std::vector<double> v(static_cast<size_t>(n * k));
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 0.5);
  for (auto& x : v) x = normal(rng);
  const Tensor w = Tensor::from_values({n, k}, v, DType::F32);
  save(p, {{"w", w},
           {"b",
            Tensor::from_values({k}, std::vector<double>(v.begin(), v.begin() + k), DType::F32)}});
  Reader r(p);
  for (DType q : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    const Tensor a = r.load("w", q);
    const Tensor b = quantize(w, q);
    CHECK(a.dtype() == q);
    CHECK(a.name() == "w");
    CHECK(a.to_vector() == b.to_vector());
    CHECK(a.category() == MemCategory::BaseWeights);
  }
  CHECK_THROWS_WITH(r.load("b", DType::Q8), Catch::Contains("only (N, K) matrices are quantized"));
  // nan and inf have no q8 / q4 code (the fuzzer found them reaching quantize_row).
  const std::vector<float> bad = {1.0f, NAN, 2.0f, INFINITY};
  const std::string f =
      image(R"({"n":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", raw(bad));
  Reader rn(as_bytes(f), "nan.safetensors");
  CHECK_THROWS_WITH(
      rn.load("n", DType::Q4),
      Catch::Contains("nan.safetensors: tensor 'n' holds nan at row 0, column 1: only "
                      "finite values can be quantized to q4"));
  CHECK(std::isnan(rn.load("n").to_vector()[1]));  // a float load keeps them
}

TEST_CASE("safetensors: release() drops the resident pages and the data stays readable",
          "[safetensors]") {
  TempDir dir;
  const fs::path p = dir.path / "big.safetensors";
  const std::int64_t n = 2048, k = 4096;  // 32 MiB of F32
  {
    Tensor w = Tensor::empty({n, k}, DType::F32, MemCategory::Workspace);
    for (std::int64_t i = 0; i < n * k; ++i) w.data<float>()[i] = static_cast<float>(i % 1000);
    save(p, {{"w", w}});
  }
  Reader r(p);
  const TensorInfo& t = r.at("w");
  std::vector<float> row(static_cast<size_t>(k));
  double sum = 0;
  const std::size_t rss0 = process_rss();
  for (std::int64_t i = 0; i < n; ++i) {
    r.read_rows_f32(t, i, 1, row.data());
    sum += row[0];
  }
  const std::size_t rss1 = process_rss();
  r.release(t);
  const std::size_t rss2 = process_rss();
  if (rss0 == 0) {
    WARN("skipped the resident-set part: /proc/self/status is not readable here");
  } else {
    INFO("rss before " << rss0 << ", after reading " << rss1 << ", after release " << rss2);
    CHECK(rss1 > rss0 + (16u << 20));  // the mapped pages became resident
    CHECK(rss2 + (16u << 20) < rss1);  // and release() gave them back
  }
  // Still readable, same values.
  r.read_rows_f32(t, n - 1, 1, row.data());
  CHECK(row[5] == static_cast<float>(((n - 1) * k + 5) % 1000));
  r.release_all();
  CHECK(r.load("w").to_vector()[1234] == 234.0);
  CHECK(sum > 0);
}

TEST_CASE("safetensors: a Reader moves, and a reader over memory ignores release()",
          "[safetensors]") {
  const std::string f = sample_file();
  Reader a(as_bytes(f), "mem.safetensors");
  a.release_all();
  Reader b(std::move(a));
  CHECK(b.find("w") != nullptr);
  CHECK(b.label() == "mem.safetensors");
  const std::string empty = image("{}");
  Reader c(as_bytes(empty), "empty.safetensors");
  c = std::move(b);
  CHECK(c.tensors().size() == 8);
  CHECK(c.load("w").to_vector()[1] == -1.0);
}

// ---------------------------------------------------------------------------------------------
// Files written by the Python golden scripts (json + struct, tests/golden/st_write.py).

TEST_CASE("safetensors: reads the encoder goldens written by Python", "[safetensors]") {
  const fs::path dir = test::golden_dir() / "encoder";
  Reader r64(dir / "encoder_f64.safetensors");
  Reader r32(dir / "encoder_f32.safetensors");
  CHECK(r64.tensors().size() == 37);
  CHECK(r32.tensors().size() == 37);
  const auto meta = r64.metadata();
  CHECK(meta.at("format") == "edgetune-golden-encoder");
  CHECK(meta.at("C") == "32");
  CHECK(meta.at("layer_norm_eps") == "1e-12");
  CHECK(r64.at("x").shape == std::vector<std::int64_t>{2, 7, 32});
  CHECK(r64.at("x").dtype == "F64");
  CHECK(r32.at("x").dtype == "F32");
  CHECK(r64.at("intermediate.dense.weight").shape == std::vector<std::int64_t>{64, 32});
  CHECK(r64.at("grad.output.dense.weight").shape == std::vector<std::int64_t>{32, 64});
  const auto mask = r64.load("mask", DType::F64).to_vector();
  REQUIRE(mask.size() == 14);
  CHECK(mask == std::vector<double>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0});
  // The f32 file holds the f64 parameters rounded to float.
  for (const char* name : {"x", "attention.self.query.weight", "output.LayerNorm.weight"}) {
    const auto a = r64.load(name, DType::F64).to_vector();
    const auto b = r32.load(name).to_vector();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i)
      REQUIRE(b[i] == static_cast<double>(static_cast<float>(a[i])));
  }
}

TEST_CASE("safetensors: reads the BERT folders and goldens written by Python", "[safetensors]") {
  const fs::path root = test::golden_dir() / "bert";
  for (const char* name : {"tiny", "small", "small-f16"}) {
    INFO(name);
    const fs::path dir = root / name;
    const auto cfg = nlohmann::json::parse(std::ifstream(dir / "config.json"));
    const std::int64_t layers = cfg["num_hidden_layers"], c = cfg["hidden_size"];
    const std::int64_t v = cfg["vocab_size"], labels = cfg["id2label"].size();
    Reader model(dir / "model.safetensors");
    Reader golden(dir / "golden.safetensors");
    CHECK(model.tensors().size() == static_cast<size_t>(5 + 16 * layers + 4));
    CHECK(model.at("bert.embeddings.word_embeddings.weight").shape ==
          std::vector<std::int64_t>{v, c});
    CHECK(model.at("classifier.weight").shape == std::vector<std::int64_t>{labels, c});
    CHECK(model.at("bert.encoder.layer.0.attention.self.query.weight").dtype ==
          (std::string(name) == "small-f16" ? "F16" : "F32"));
    // Every parameter has its gradient, of the same shape.
    for (const TensorInfo& t : model.tensors()) {
      const TensorInfo* g = golden.find("grad." + t.name);
      REQUIRE(g != nullptr);
      CHECK(g->shape == t.shape);
      CHECK(g->dtype == "F32");
    }
    const TensorInfo& ids = golden.at("input_ids");
    CHECK(ids.dtype == "I32");
    CHECK(ids.shape.size() == 2);
    CHECK(ids.shape[0] == 8);
    CHECK(golden.at("loss").shape.empty());
    CHECK(golden.at("logits").shape == std::vector<std::int64_t>{8, labels});
    CHECK(golden.metadata().at("format") == "edgetune-golden-bert");
    const auto id = golden.load("input_ids", DType::I32).to_vector();
    CHECK(id[0] == 2);  // [CLS] in the pruned vocabulary
    for (double x : id) CHECK((x >= 0 && x < static_cast<double>(v)));
    const double loss = golden.load("loss").item();
    CHECK(std::isfinite(loss));
    CHECK(loss > 0);
    // HF's padding_idx: the [PAD] row of the word embeddings gets no gradient.
    std::vector<float> row(static_cast<size_t>(c));
    golden.read_rows_f32(golden.at("grad.bert.embeddings.word_embeddings.weight"), 0, 1,
                         row.data());
    for (float x : row) CHECK(x == 0.0f);
  }
  // The F16 copy holds small's weights rounded by torch's .half(): the same bits as f32_to_f16.
  Reader f32(root / "small" / "model.safetensors");
  Reader f16(root / "small-f16" / "model.safetensors");
  std::size_t checked = 0;
  for (const TensorInfo& t : f32.tensors()) {
    const auto a = f32.load(t).to_vector();
    const auto bytes = f16.bytes(f16.at(t.name));
    REQUIRE(bytes.size() == a.size() * 2);
    for (size_t i = 0; i < a.size(); ++i) {
      std::uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      REQUIRE(h == f32_to_f16(static_cast<float>(a[i])));
    }
    checked += a.size();
  }
  CHECK(checked > 800000);
}
