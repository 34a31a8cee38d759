// safetensors files: a validating, memory-mapped reader and an atomic writer.
//
// The format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N, then N
// bytes of JSON header
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the data section; offsets are bytes relative to the start of the data section, values are
// little-endian and row-major.
//
// What this is: the one place edgetune reads and writes safetensors (Hugging Face checkpoints,
// PEFT adapters, training state, test goldens). The reader checks every byte of the header before
// trusting it and never reads outside the file, whatever the input; it converts F16 / BF16 / F32 /
// F64 to the engine's float tensors, I64 / I32 to I32, and streams rows of a matrix as f32 so a
// loader can quantize a base weight without a float copy of the whole matrix.
// What this is not: a general array library. Other dtypes (U8, I8, BOOL, F8, ...) are listed but
// not converted; a tensor of more than 4 dimensions is listed but not loaded (Shape's limit);
// Quantized tensors are not saved (the format has no layout for them).
//
// Errors are SafetensorsError, one line, starting with the file name:
//   model.safetensors: tensor 'bert.pooler.dense.weight' ends at byte 4096 of the data section
//   but the file holds only 1000 bytes of data (truncated file?)
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edgetune/autograd/tensor.h"
#include "edgetune/core/file_io.h"
#include "edgetune/core/memory.h"

namespace edgetune::safetensors {

// Anything wrong with a safetensors file, or a request the file cannot satisfy (a missing tensor,
// a dtype that cannot be converted). The message is one line and starts with the file name.
class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Headers longer than this are rejected before parsing (the reference implementation's limit).
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

// Bytes per element of a safetensors dtype name ("F32" -> 4, "BF16" -> 2, "BOOL" -> 1), or 0 for
// a name this reader does not know.
std::size_t dtype_size(std::string_view dtype);

// One tensor as the header describes it (validated).
struct TensorInfo {
  std::string name;
  std::string dtype;                // as written in the file: "F32", "F16", "BF16", "I64", ...
  std::vector<std::int64_t> shape;  // any rank; empty for a scalar (one element)
  std::uint64_t begin = 0;          // [begin, end): byte range relative to the data section;
  std::uint64_t end = 0;            //   end - begin == numel() * dtype_size(dtype)
  std::int64_t numel() const;
  std::uint64_t nbytes() const { return end - begin; }
};

// Exact conversions between IEEE half (binary16) and float, written portably (no F16C needed).
// f16_to_f32 is exact for every bit pattern: subnormals, signed zeros, infinities; a NaN stays a
// NaN with its sign and the top bits of its payload. The narrowing ones round to nearest, ties to
// even; a finite value beyond the half range becomes an infinity.
float f16_to_f32(std::uint16_t h);
std::uint16_t f32_to_f16(float f);
std::uint16_t f64_to_f16(double d);  // rounds once (not through float, which could round twice)
// bfloat16 is the top 16 bits of a float32: widening is exact.
float bf16_to_f32(std::uint16_t h);
// Round to nearest even; NaN stays NaN (quiet).
std::uint16_t f32_to_bf16(float f);

// A read-only view of one safetensors file.
//
// The file is memory-mapped (read-only, private) for the Reader's lifetime: tensors are read
// straight from the page cache, nothing is copied until load() / read_rows_f32() asks for it.
// The constructor validates the whole header: the 8-byte length (present, within the file, at most
// kMaxHeaderBytes), the JSON (an object; no duplicate names), each entry (an object with a known
// "dtype", a "shape" of non-negative integers and "data_offsets" [begin, end] of integers with
// end - begin == numel * dtype size and end within the data section), no two tensors sharing a
// byte, and "__metadata__" (an object of strings). Gaps between tensors are allowed.
// After construction every accessor stays inside the mapping whatever the file held.
// The caller must not truncate the file while a Reader maps it (the OS would raise SIGBUS).
// All const members may be called from several threads at once.
class Reader {
 public:
  // Maps and validates `path`. Throws SafetensorsError (file missing, unreadable, malformed).
  // A file that edgetune wrote encrypted (core's encryption.h) is decrypted into memory instead,
  // with the current context's key, and that copy is counted by the current context's accountant
  // as workspace for the Reader's life; a key that does not open it, an altered or truncated file,
  // or an Output file that is plain while a key is set (read_if_encrypted() of file_io.h) throws
  // SafetensorsError naming the file.
  explicit Reader(const std::filesystem::path& path, FileOrigin origin = FileOrigin::Input);
  // Validates a safetensors image already in memory (a file embedded in an app bundle, a buffer
  // received from elsewhere). `bytes` is not copied: it must outlive the Reader. `label` stands
  // for the file name in error messages. release() does nothing for such a reader.
  Reader(std::span<const std::byte> bytes, std::string label);
  ~Reader();
  Reader(Reader&& other) noexcept;
  Reader& operator=(Reader&& other) noexcept;
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // The file name used in error messages (the path as given).
  const std::string& label() const { return label_; }

  // Every tensor, in the order of its bytes in the data section (ascending byte range, then name).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // The tensor called `name`, or nullptr.
  const TensorInfo* find(std::string_view name) const;
  // The tensor called `name`; throws SafetensorsError naming the file (and a close name if any).
  const TensorInfo& at(std::string_view name) const;
  // The "__metadata__" object of the header (empty when absent).
  std::map<std::string, std::string> metadata() const { return metadata_; }

  // The raw little-endian bytes of a tensor of this reader (not necessarily aligned).
  std::span<const std::byte> bytes(const TensorInfo& info) const;

  // Converts a tensor into a new engine tensor of dtype `target`, named after it, counted under
  // `category`:
  //   F16, BF16, F32, F64 -> F32 or F64 (F16/BF16 widen exactly; F64 -> F32 rounds to nearest)
  //                       -> a quantized dtype for a 2-D tensor: quantized a row (pal4: 16 rows) at a time (quant.h),
  //                          without a float copy of the whole matrix; from a mapped file the
  //                          source pages already quantized are dropped (drop_pages) as it goes
  //   I64, I32            -> I32 (every I64 value must fit: an error names the first that does not)
  // Any other pairing, a dtype of the "listed only" kind, or a rank above 4 throws
  // SafetensorsError saying what would work. May throw BudgetExceeded from the accountant.
  Tensor load(std::string_view name, DType target = DType::F32,
              MemCategory category = MemCategory::BaseWeights) const;
  Tensor load(const TensorInfo& info, DType target = DType::F32,
              MemCategory category = MemCategory::BaseWeights) const;

  // Rows [row0, row0 + rows) of a 2-D F32 / F16 / BF16 / F64 tensor (N, K) of this reader,
  // converted to float, into out (rows x K floats, row-major). Requires 0 <= row0,
  // 0 <= rows, row0 + rows <= N; throws SafetensorsError otherwise.
  void read_rows_f32(const TensorInfo& info, std::int64_t row0, std::int64_t rows,
                     float* out) const;

  // Tells the OS this tensor's bytes are not needed for now (madvise MADV_DONTNEED on the pages
  // its byte range touches), so the resident set stops holding the pages of a weight that has been
  // converted or quantized. The mapping stays valid: reading the tensor again later faults its
  // pages back in from the file, with the same values. Pages shared with a neighbouring tensor are
  // dropped too, which only costs that neighbour a re-read. No effect on a Reader over memory.
  void release(const TensorInfo& info) const;
  // release() of every tensor.
  void release_all() const;

 private:
  void parse();
  void check_own(const TensorInfo& info) const;
  // madvise(MADV_DONTNEED) of the whole pages between file offsets `from` (rounded down to a page)
  // and `to` (rounded down): the bytes past `to` on its page stay resident. No effect on a Reader
  // over memory.
  void drop_pages(std::size_t from, std::size_t to) const;
  // Source bytes quantized between two drop_pages() calls while loading a matrix quantized.
  static constexpr std::size_t kDropEvery = 1 << 20;
  [[noreturn]] void fail(const std::string& what) const;

  std::string label_;
  const std::byte* file_ = nullptr;  // the whole file (mapping or caller's bytes)
  std::size_t file_size_ = 0;
  bool mapped_ = false;              // file_ is our mmap
  // The decrypted image of an encrypted file (file_ points into it), and its charge.
  std::shared_ptr<Accountant> decrypted_accountant_;
  std::unique_ptr<std::string> decrypted_;
  Charge decrypted_charge_;
  const std::byte* data_ = nullptr;  // start of the data section
  std::size_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (F32, F64 or I32; names unique, not "__metadata__") and `metadata` to `path`
// as safetensors. With as_f16, float tensors are stored as F16 (rounded to nearest even; values
// beyond +-65504 become infinities), integer tensors stay I32.
// Layout: tensors in the given order, both in the header and in the data section, packed without
// gaps; the header JSON is padded with spaces to a multiple of 8 bytes, as the reference
// implementation does, so the data section starts 8-byte aligned.
// Atomic, through core's AtomicFile: the bytes go to a temporary file beside `path`, which is
// fsynced and renamed over `path`, then the folder is fsynced. On any failure the temporary file
// is removed, `path` is left as it was, and SafetensorsError says what failed (for the file
// system, with FileError's message). Arguments are checked before anything is written.
void save(const std::filesystem::path& path,
          const std::vector<std::pair<std::string, Tensor>>& tensors,
          const std::map<std::string, std::string>& metadata = {}, bool as_f16 = false);

// One tensor given as its bytes, for save_aligned: any dtype dtype_size() knows ("U8", "I8",
// "F32", ...), `bytes` holding exactly numel(shape) * dtype_size(dtype) little-endian bytes.
struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> bytes;
};

// Writes `tensors` and `metadata` to `path` as safetensors whose every tensor starts at a file
// offset that is a multiple of `alignment` (a power of two from 8 up, at most 4096): the header is
// padded with spaces so the data section starts aligned, and zero bytes pad between tensors (gaps
// the format allows), so a reader mapping the file from a page boundary can use each tensor in
// place. Checks and atomicity as save(); throws SafetensorsError naming `path`.
void save_aligned(const std::filesystem::path& path, const std::vector<RawTensor>& tensors,
                  const std::map<std::string, std::string>& metadata, std::size_t alignment);

}  // namespace edgetune::safetensors
