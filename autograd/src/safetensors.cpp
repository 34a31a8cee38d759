// safetensors reader and writer (see safetensors.h).
//
// The reader trusts nothing in the file: every number from the header is range-checked with
// overflow-safe arithmetic before it becomes a pointer offset, and element values are copied with
// memcpy because the data section need not be aligned for its dtype.
#include "edgetune/autograd/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "checks.h"
#include "edgetune/autograd/quant.h"
#include "edgetune/core/context.h"
#include "edgetune/core/file_io.h"

namespace edgetune::safetensors {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this reader copies it as is");

namespace {

using json = nlohmann::json;

// Known dtypes and their element sizes. The first six convert; the others are listed only.
struct DTypeEntry {
  const char* name;
  std::size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
    {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
    {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

std::string known_dtypes() {
  std::string s;
  for (const auto& d : kDTypes) {
    if (!s.empty()) s += ' ';
    s += d.name;
  }
  return s;
}

bool is_float_source(std::string_view d) {
  return d == "F32" || d == "F16" || d == "BF16" || d == "F64";
}
bool is_int_source(std::string_view d) {
  return d == "I64" || d == "I32";
}

// A name as it appears in a one-line message: quoted, control characters escaped, long names cut.
std::string quote(std::string_view name) {
  constexpr std::size_t kMax = 160;
  std::string s = "'";
  for (std::size_t i = 0; i < name.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      s += "\\x";
      s += hex[c >> 4];
      s += hex[c & 15];
    } else {
      s += static_cast<char>(c);
    }
  }
  if (name.size() > kMax) s += "...";
  return s + "'";
}

// A JSON value shown in a message: compact, one line, cut when long.
std::string show(const json& j) {
  std::string s;
  try {
    s = j.dump(-1, ' ', true, json::error_handler_t::replace);
  } catch (const std::exception&) {
    s = "?";
  }
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A non-negative JSON integer, or nullopt-like failure reported through `ok`.
bool as_u64(const json& j, std::uint64_t& out) {
  if (!j.is_number_unsigned()) return false;
  out = j.get<std::uint64_t>();
  return true;
}

// numel of a shape; false on overflow of int64.
bool checked_numel(const std::vector<std::int64_t>& shape, std::int64_t& out) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  }
  out = n;
  return true;
}

std::uint64_t read_le_u64(const std::byte* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Thrown from inside the JSON parser callback; turned into a SafetensorsError by parse().
struct HeaderProblem {
  std::string what;
};

// Element-wise conversion of `n` values at `src` (safetensors dtype `dtype`) into dst.
template <class T>
void convert_floats(const std::byte* src, std::string_view dtype, T* dst, std::int64_t n) {
  if (n == 0) return;  // dst may be null for an empty tensor
  if (dtype == "F32") {
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(dst, src, static_cast<std::size_t>(n) * 4);
    } else {
      for (std::int64_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, src + i * 4, 4);
        dst[i] = static_cast<T>(v);
      }
    }
  } else if (dtype == "F64") {
    if constexpr (std::is_same_v<T, double>) {
      std::memcpy(dst, src, static_cast<std::size_t>(n) * 8);
    } else {
      for (std::int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + i * 8, 8);
        dst[i] = static_cast<T>(v);
      }
    }
  } else {
    const bool half = dtype == "F16";
    for (std::int64_t i = 0; i < n; ++i) {
      std::uint16_t h;
      std::memcpy(&h, src + i * 2, 2);
      dst[i] = static_cast<T>(half ? f16_to_f32(h) : bf16_to_f32(h));
    }
  }
}

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

std::size_t dtype_size(std::string_view dtype) {
  for (const auto& d : kDTypes)
    if (dtype == d.name) return d.size;
  return 0;
}

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;  // validated by the reader not to overflow
  return n;
}

// ---------------------------------------------------------------------------------------------
// Half and bfloat16 conversions.

float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float (a normal float for every mant > 0).
    const float v = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -v : v;
  }
  std::uint32_t bits;
  if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);  // infinity, or NaN keeping its payload
  } else {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

std::uint16_t f64_to_f16(double d) {
  const auto bits = std::bit_cast<std::uint64_t>(d);
  const auto sign = static_cast<std::uint16_t>((bits >> 48) & 0x8000u);
  const auto exp = static_cast<int>((bits >> 52) & 0x7ffu);
  const std::uint64_t frac = bits & ((std::uint64_t{1} << 52) - 1);
  if (exp == 0x7ff) {
    if (frac == 0) return sign | 0x7c00u;
    // NaN: keep the top payload bits and set the quiet bit so it cannot turn into an infinity.
    return static_cast<std::uint16_t>(sign | 0x7e00u | (frac >> 42));
  }
  if (exp == 0) return sign;  // double zeros and subnormals are far below half's smallest value
  const int e = exp - 1023;   // d = 1.frac * 2^e
  if (e > 15) return sign | 0x7c00u;
  const std::uint64_t m = frac | (std::uint64_t{1} << 52);  // 53-bit significand, d = m * 2^(e-52)
  // A half holds k * 2^(ee-10) with ee >= -14 (subnormals share ee = -14 with a 0 leading bit):
  // k = m >> shift where shift = 42 for normals and grows below 2^-14.
  const int shift = e >= -14 ? 42 : 42 + (-14 - e);
  if (shift > 54) return sign;  // below half the smallest subnormal: rounds to zero
  std::uint64_t k = m >> shift;
  const std::uint64_t rest = m & ((std::uint64_t{1} << shift) - 1);
  const std::uint64_t halfway = std::uint64_t{1} << (shift - 1);
  if (rest > halfway || (rest == halfway && (k & 1))) ++k;
  // For normals k is 1.mantissa (11 bits); adding the biased exponent with `+` lets a rounding
  // carry move into the exponent (and from the largest finite value into infinity, 0x7c00).
  std::uint32_t out;
  if (e >= -14) {
    out = (static_cast<std::uint32_t>(e + 14) << 10) + static_cast<std::uint32_t>(k);
  } else {
    out = static_cast<std::uint32_t>(k);  // subnormal; k == 0x400 is the smallest normal
  }
  return static_cast<std::uint16_t>(sign | out);
}

std::uint16_t f32_to_f16(float f) {
  return f64_to_f16(static_cast<double>(f));
}

float bf16_to_f32(std::uint16_t h) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

std::uint16_t f32_to_bf16(float f) {
  const auto bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  const std::uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

// ---------------------------------------------------------------------------------------------
// Reader.

Reader::Reader(const std::filesystem::path& path, FileOrigin origin) : label_(path.string()) {
  std::optional<std::string> plain;
  try {
    plain = read_if_encrypted(path, origin);
  } catch (const FileError& e) {
    throw SafetensorsError(e.what());
  }
  if (plain) {
    decrypted_accountant_ = current_context().accountant;
    decrypted_charge_ = Charge(*decrypted_accountant_, MemCategory::Workspace, plain->size());
    decrypted_ = std::make_unique<std::string>(std::move(*plain));
    file_ = reinterpret_cast<const std::byte*>(decrypted_->data());
    file_size_ = decrypted_->size();
    parse();
    return;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open (" + errno_text() + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    fail("cannot stat (" + why + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(S_ISDIR(st.st_mode) ? "is a directory, expected a .safetensors file"
                             : "is not a regular file");
  }
  file_size_ = static_cast<std::size_t>(st.st_size);
  if (file_size_ < 8) {
    ::close(fd);
    fail("the file holds " + std::to_string(file_size_) +
         " bytes, fewer than the 8-byte header length (empty or truncated file?)");
  }
  void* p = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const std::string why = errno_text();
  ::close(fd);  // the mapping keeps the file open
  if (p == MAP_FAILED) fail("cannot mmap (" + why + ")");
  file_ = static_cast<const std::byte*>(p);
  mapped_ = true;
  try {
    parse();
  } catch (...) {
    ::munmap(const_cast<std::byte*>(file_), file_size_);
    mapped_ = false;
    throw;
  }
}

Reader::Reader(std::span<const std::byte> bytes, std::string label)
    : label_(std::move(label)), file_(bytes.data()), file_size_(bytes.size()) {
  parse();
}

Reader::~Reader() {
  if (mapped_) ::munmap(const_cast<std::byte*>(file_), file_size_);
}

Reader::Reader(Reader&& other) noexcept {
  *this = std::move(other);
}

Reader& Reader::operator=(Reader&& other) noexcept {
  if (this != &other) {
    if (mapped_) ::munmap(const_cast<std::byte*>(file_), file_size_);
    label_ = std::move(other.label_);
    file_ = std::exchange(other.file_, nullptr);
    file_size_ = std::exchange(other.file_size_, 0);
    mapped_ = std::exchange(other.mapped_, false);
    decrypted_charge_ = std::move(other.decrypted_charge_);
    decrypted_ = std::move(other.decrypted_);
    decrypted_accountant_ = std::move(other.decrypted_accountant_);
    data_ = std::exchange(other.data_, nullptr);
    data_size_ = std::exchange(other.data_size_, 0);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

void Reader::fail(const std::string& what) const {
  throw SafetensorsError(label_ + ": " + what);
}

void Reader::parse() {
  if (file_size_ < 8) {
    fail("the file holds " + std::to_string(file_size_) +
         " bytes, fewer than the 8-byte header length (empty or truncated file?)");
  }
  const std::uint64_t n = read_le_u64(file_);
  if (n > kMaxHeaderBytes) {
    fail("header length " + std::to_string(n) + " is absurd (the limit is " +
         std::to_string(kMaxHeaderBytes) + " bytes): not a safetensors file?");
  }
  if (n > file_size_ - 8) {
    fail("header length " + std::to_string(n) + " runs past the end of the file, which holds " +
         std::to_string(file_size_ - 8) + " bytes after the 8-byte length (truncated file?)");
  }
  data_ = file_ + 8 + n;
  data_size_ = file_size_ - 8 - static_cast<std::size_t>(n);

  // Parse. The callback rejects duplicate tensor names (a plain object would silently keep one)
  // and absurd nesting, which no valid header has.
  const char* begin = reinterpret_cast<const char*>(file_ + 8);
  const char* end = begin + n;
  std::set<std::string, std::less<>> seen;
  auto callback = [&seen](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) throw HeaderProblem{"tensor " + quote(key) + " appears twice"};
    }
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth > 16) {
      throw HeaderProblem{"header JSON is nested more than 16 levels deep"};
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, callback);
  } catch (const HeaderProblem& p) {
    fail(p.what);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    if (const auto pos = msg.find("] "); msg.starts_with("[json.exception") && pos != msg.npos)
      msg = msg.substr(pos + 2);
    fail("header is not valid JSON (" + msg + "): not a safetensors file?");
  }
  if (!header.is_object()) {
    fail(std::string("header is a JSON ") + header.type_name() +
         ", expected an object of tensors: not a safetensors file?");
  }

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        fail("\"__metadata__\" is a JSON " + std::string(value.type_name()) +
             ", expected an object of strings");
      }
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          fail("metadata " + quote(mk) + " is a JSON " + std::string(mv.type_name()) + " (" +
               show(mv) + "), expected a string");
        }
        metadata_.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    const std::string t = "tensor " + quote(key);
    if (!value.is_object()) {
      fail(t + " is a JSON " + std::string(value.type_name()) +
           ", expected an object with dtype, shape and data_offsets");
    }
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(field)) fail(t + " has no \"" + std::string(field) + "\"");
    }
    TensorInfo info;
    info.name = key;

    const json& dt = value.at("dtype");
    if (!dt.is_string()) fail(t + ": dtype " + show(dt) + " is not a string like \"F32\"");
    info.dtype = dt.get<std::string>();
    const std::size_t esize = dtype_size(info.dtype);
    if (esize == 0) {
      fail(t + " has unknown dtype " + quote(info.dtype) + " (known: " + known_dtypes() + ")");
    }

    const json& sh = value.at("shape");
    if (!sh.is_array()) fail(t + ": shape " + show(sh) + " is not an array of integers");
    for (const json& d : sh) {
      std::uint64_t v = 0;
      if (!as_u64(d, v) ||
          v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        const char* why = d.is_number_integer() ? "negative"
                          : d.is_number()       ? "not an integer"
                                                : "not a number";
        if (d.is_number_unsigned()) why = "too large";
        fail(t + ": shape " + show(sh) + " has a dimension " + show(d) + " that is " + why);
      }
      info.shape.push_back(static_cast<std::int64_t>(v));
    }
    std::int64_t numel = 0;
    std::uint64_t need = 0;
    if (!checked_numel(info.shape, numel) ||
        __builtin_mul_overflow(static_cast<std::uint64_t>(numel), esize, &need)) {
      fail(t + ": shape " + shape_str(info.shape) + " has more elements than 64 bits can count");
    }

    const json& off = value.at("data_offsets");
    if (!off.is_array() || off.size() != 2 || !as_u64(off[0], info.begin) ||
        !as_u64(off[1], info.end)) {
      fail(t + ": data_offsets " + show(off) + " is not [begin, end] with non-negative integers");
    }
    if (info.end < info.begin) {
      fail(t + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
           "] end before they begin");
    }
    if (info.end - info.begin != need) {
      fail(t + " of dtype " + info.dtype + " and shape " + shape_str(info.shape) + " needs " +
           std::to_string(need) + " bytes but data_offsets [" + std::to_string(info.begin) + ", " +
           std::to_string(info.end) + "] span " + std::to_string(info.end - info.begin));
    }
    if (info.end > data_size_) {
      fail(t + " ends at byte " + std::to_string(info.end) +
           " of the data section but the file holds only " + std::to_string(data_size_) +
           " bytes of data (truncated file?)");
    }
    tensors_.push_back(std::move(info));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  // Sorted by begin, the last non-empty tensor seen has the largest end so far: a tensor that
  // starts before it ends shares bytes with it.
  const TensorInfo* last = nullptr;
  for (const TensorInfo& info : tensors_) {
    if (info.nbytes() == 0) continue;
    if (last && info.begin < last->end) {
      fail("tensors " + quote(last->name) + " [" + std::to_string(last->begin) + ", " +
           std::to_string(last->end) + ") and " + quote(info.name) + " [" +
           std::to_string(info.begin) + ", " + std::to_string(info.end) +
           ") overlap in the data section");
    }
    last = &info;
  }
  for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const TensorInfo* Reader::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& Reader::at(std::string_view name) const {
  if (const TensorInfo* info = find(name)) return *info;
  // A common slip is a missing or extra prefix ("bert.", "base_model.model."): suggest a name
  // that differs only by one.
  std::string hint;
  for (const TensorInfo& t : tensors_) {
    const std::string_view a = t.name;
    if ((a.size() > name.size() && a.ends_with(name) && a[a.size() - name.size() - 1] == '.') ||
        (name.size() > a.size() && name.ends_with(a) && name[name.size() - a.size() - 1] == '.')) {
      hint = "; did you mean " + quote(t.name) + "?";
      break;
    }
  }
  fail("no tensor " + quote(name) + " (the file holds " + std::to_string(tensors_.size()) +
       " tensors" + hint + ")");
}

void Reader::check_own(const TensorInfo& info) const {
  // Offsets are only trusted when they are this file's own, validated ones.
  const TensorInfo* mine = find(info.name);
  if (!mine || mine->begin != info.begin || mine->end != info.end || mine->dtype != info.dtype ||
      mine->shape != info.shape) {
    fail("tensor " + quote(info.name) +
         " is not described this way by this file (a TensorInfo "
         "from another Reader?)");
  }
}

std::span<const std::byte> Reader::bytes(const TensorInfo& info) const {
  check_own(info);
  return {data_ + info.begin, static_cast<std::size_t>(info.nbytes())};
}

Tensor Reader::load(std::string_view name, DType target, MemCategory category) const {
  return load(at(name), target, category);
}

Tensor Reader::load(const TensorInfo& info, DType target, MemCategory category) const {
  check_own(info);
  const std::string t = "tensor " + quote(info.name);
  if (info.shape.size() > static_cast<std::size_t>(Shape::kMaxRank)) {
    fail(t + " has " + std::to_string(info.shape.size()) +
         " dimensions; edgetune tensors have at most 4 (list it, or reshape it when writing)");
  }
  const Shape shape(std::span<const std::int64_t>(info.shape));
  const std::byte* src = data_ + info.begin;
  const std::int64_t n = info.numel();

  if (is_float_source(info.dtype)) {
    if (target == DType::F32 || target == DType::F64) {
      Tensor out = Tensor::empty(shape, target, category);
      detail::dispatch_float(
          target, [&]<class T>() { convert_floats(src, info.dtype, out.data<T>(), n); });
      out.set_name(info.name);
      return out;
    }
    if (is_quantized(target)) {
      if (info.shape.size() != 2) {
        fail(t + " of shape " + shape_str(info.shape) + " cannot be loaded as " +
             dtype_name(target) + ": only (N, K) matrices are quantized");
      }
      if (info.shape[1] == 0 && info.shape[0] > 0) {
        // Scales are per row: an (N, 0) matrix would need N of them for no data at all, and N is
        // not bounded by the file's size.
        fail(t + " of shape " + shape_str(info.shape) + " has no columns to quantize");
      }
      Tensor q = quantized_empty(info.shape[0], info.shape[1], target, category);
      // pal4 quantizes its groups of rows together (they share a palette); the rest row by row.
      const std::int64_t group = quant_row_group(target);
      std::vector<float> rows(static_cast<std::size_t>(group * info.shape[1]));
      // The source pages already quantized leave the resident set every kDropEvery bytes, so a
      // large float matrix (BERT-base's word embeddings are 90 MiB) is never resident whole.
      const std::size_t row_bytes = static_cast<std::size_t>(info.shape[1]) * dtype_size(info.dtype);
      const std::size_t first = static_cast<std::size_t>(data_ - file_) + info.begin;
      std::size_t dropped = first;
      for (std::int64_t r = 0; r < info.shape[0]; ++r) {
        const std::size_t consumed = first + static_cast<std::size_t>(r) * row_bytes;
        if (consumed - dropped >= kDropEvery) {
          drop_pages(dropped, consumed);
          dropped = consumed;
        }
        float* row = rows.data() + (r % group) * info.shape[1];
        read_rows_f32(info, r, 1, row);
        // A scale cannot represent nan or inf (and a code cast from nan is undefined behaviour).
        for (std::int64_t j = 0; j < info.shape[1]; ++j) {
          if (!std::isfinite(row[j])) {
            fail(t + " holds " + std::to_string(row[j]) + " at row " + std::to_string(r) +
                 ", column " + std::to_string(j) + ": only finite values can be quantized to " +
                 dtype_name(target));
          }
        }
        if (r % group == group - 1 || r + 1 == info.shape[0]) {
          const std::int64_t row0 = r / group * group;
          quantize_rows(q, row0, r + 1 - row0, rows.data());
        }
      }
      q.set_name(info.name);
      return q;
    }
    fail(t + " holds " + info.dtype + " floats; load it as DType::F32 or DType::F64 (or a quantized dtype)");
  }
  if (is_int_source(info.dtype)) {
    if (target != DType::I32) {
      fail(t + " holds " + info.dtype + " integers; load it as DType::I32");
    }
    Tensor out = Tensor::empty(shape, DType::I32, category);
    std::int32_t* dst = out.data<std::int32_t>();
    if (n == 0) {
      // nothing to copy (and no buffer to copy into)
    } else if (info.dtype == "I32") {
      std::memcpy(dst, src, static_cast<std::size_t>(n) * 4);
    } else {
      for (std::int64_t i = 0; i < n; ++i) {
        std::int64_t v;
        std::memcpy(&v, src + i * 8, 8);
        if (v < std::numeric_limits<std::int32_t>::min() ||
            v > std::numeric_limits<std::int32_t>::max()) {
          fail(t + " element " + std::to_string(i) + " is " + std::to_string(v) +
               ", outside the int32 range I64 values are narrowed to");
        }
        dst[i] = static_cast<std::int32_t>(v);
      }
    }
    out.set_name(info.name);
    return out;
  }
  fail(t + " has dtype " + info.dtype +
       ", which is listed but not converted (F16, BF16, F32, F64, I64 and I32 are)");
}

void Reader::read_rows_f32(const TensorInfo& info, std::int64_t row0, std::int64_t rows,
                           float* out) const {
  check_own(info);
  const std::string t = "tensor " + quote(info.name);
  if (info.shape.size() != 2) {
    fail("read_rows_f32: " + t + " has shape " + shape_str(info.shape) + ", expected (N, K)");
  }
  if (!is_float_source(info.dtype)) {
    fail("read_rows_f32: " + t + " holds " + info.dtype + ", expected F32, F16, BF16 or F64");
  }
  const std::int64_t n = info.shape[0], k = info.shape[1];
  if (row0 < 0 || rows < 0 || row0 > n - rows) {
    fail("read_rows_f32: rows [" + std::to_string(row0) + ", " + std::to_string(row0) + " + " +
         std::to_string(rows) + ") are outside the " + std::to_string(n) + " rows of " + t);
  }
  if (rows == 0 || k == 0) return;
  if (!out) fail("read_rows_f32: null output buffer for " + t);
  const std::size_t esize = dtype_size(info.dtype);
  const std::byte* src = data_ + info.begin + static_cast<std::size_t>(row0 * k) * esize;
  convert_floats(src, info.dtype, out, rows * k);
}

void Reader::release(const TensorInfo& info) const {
  check_own(info);
  if (info.nbytes() == 0) return;
  const std::size_t first = static_cast<std::size_t>(data_ - file_) + info.begin;
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  drop_pages(first, (first + info.nbytes() + page - 1) / page * page);
}

void Reader::drop_pages(std::size_t from, std::size_t to) const {
  if (!mapped_) return;
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  from = from / page * page;
  to = to / page * page;
  // A hint only: failure leaves the pages resident, which is never wrong.
  if (to > from) ::madvise(const_cast<std::byte*>(file_) + from, to - from, MADV_DONTNEED);
}

void Reader::release_all() const {
  if (!mapped_ || data_size_ == 0) return;
  for (const TensorInfo& info : tensors_) release(info);
}

// ---------------------------------------------------------------------------------------------
// Writer.

namespace {

// Buffered writes into an atomic file: tensors arrive in small pieces (a header, f16 chunks).
class BufferedWriter {
 public:
  explicit BufferedWriter(AtomicFile& file) : file_(file) { buf_.reserve(kBuf); }
  void put(const void* p, std::size_t n) {
    const auto* c = static_cast<const char*>(p);
    if (buf_.size() + n > kBuf) flush();
    if (n >= kBuf) {
      file_.write(c, n);
    } else {
      buf_.insert(buf_.end(), c, c + n);
    }
  }
  void flush() {
    file_.write(buf_.data(), buf_.size());
    buf_.clear();
  }

 private:
  static constexpr std::size_t kBuf = 1 << 20;
  AtomicFile& file_;
  std::vector<char> buf_;
};

[[noreturn]] void save_fail(const std::string& label, const std::string& what) {
  throw SafetensorsError(label + ": " + what);
}

const char* file_dtype(DType d, bool as_f16) {
  if (d == DType::I32) return "I32";
  if (as_f16) return "F16";
  return d == DType::F32 ? "F32" : "F64";
}

void write_tensor(BufferedWriter& w, const Tensor& t, bool as_f16) {
  const std::int64_t n = t.numel();
  if (n == 0) return;
  if (!as_f16 || t.dtype() == DType::I32) {
    w.put(t.impl()->storage->data(), t.impl()->storage->bytes());
    return;
  }
  constexpr std::int64_t kChunk = 1 << 15;
  std::vector<std::uint16_t> halves(static_cast<std::size_t>(std::min(n, kChunk)));
  detail::dispatch_float(t.dtype(), [&]<class T>() {
    for (std::int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const std::int64_t m = std::min(kChunk, n - i0);
      const T* s = t.data<T>() + i0;
      for (std::int64_t i = 0; i < m; ++i) {
        halves[static_cast<std::size_t>(i)] = f64_to_f16(static_cast<double>(s[i]));
      }
      w.put(halves.data(), static_cast<std::size_t>(m) * 2);
    }
  });
}

}  // namespace

void save(const std::filesystem::path& path,
          const std::vector<std::pair<std::string, Tensor>>& tensors,
          const std::map<std::string, std::string>& metadata, bool as_f16) {
  const std::string label = path.string();
  auto fail = [&label](const std::string& what) { save_fail(label, what); };

  // Check everything and build the header before touching the file system.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string_view> names;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const std::string q = "tensor " + quote(name);
    if (name == "__metadata__") fail("\"__metadata__\" cannot be a tensor name");
    if (!names.insert(name).second) fail(q + " is given twice");
    if (!t.defined()) fail(q + " is an undefined Tensor");
    if (is_quantized(t.dtype())) {
      fail(q + " is " + std::string(dtype_name(t.dtype())) +
           ": quantized tensors cannot be saved as safetensors; save the float weights, or "
           "dequantize first with .to(DType::F32)");
    }
    const bool half = as_f16 && is_float(t.dtype());
    const std::uint64_t nbytes =
        static_cast<std::uint64_t>(t.numel()) * (half                      ? 2
                                                 : t.dtype() == DType::F64 ? 8
                                                                           : 4);
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = file_dtype(t.dtype(), as_f16);
    entry["shape"] = std::vector<std::int64_t>(t.shape().dims().begin(), t.shape().dims().end());
    entry["data_offsets"] = {offset, offset + nbytes};
    header[name] = std::move(entry);
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    fail("a tensor name or metadata string is not valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::uint64_t header_len = text.size();

  try {
    AtomicFile file(path);
    BufferedWriter w(file);
    w.put(&header_len, 8);
    w.put(text.data(), text.size());
    for (const auto& [name, t] : tensors) write_tensor(w, t, as_f16);
    w.flush();
    file.commit();
  } catch (const FileError& e) {
    throw SafetensorsError(e.what());
  }
}

}  // namespace edgetune::safetensors
