// libFuzzer entry point for the safetensors reader (autograd/safetensors.h).
//
// Each input is taken as a whole safetensors file (the Reader over memory, so libFuzzer's exactly
// sized buffer lets AddressSanitizer see any read past the end). When the header validates, every
// tensor is loaded to every target dtype, its first and last rows are streamed, and its bytes are
// released. The only exception allowed out of the reader is SafetensorsError; anything else (a
// crash, an out-of-bounds read, another exception type, a huge allocation) is a finding.
// It is not a test of values: the Catch2 tests check those.
//
// Build by hand, for example:
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I autograd/include \
//     -I /usr/include/eigen3 fuzz/fuzz_safetensors.cpp autograd/src/safetensors.cpp \
//     autograd/src/tensor.cpp autograd/src/memory.cpp autograd/src/quant.cpp ... -o fuzz_safetensors
//   ./fuzz_safetensors -max_len=65536 corpus/
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/context.h"

namespace {
// The context every input's tensors are counted in. Without the accountant's reuse cache every
// freed tensor goes back to the system allocator, so AddressSanitizer catches a use after free and
// memory does not pile up across inputs.
edgetune::Context& fuzz_context() {
  static edgetune::Context* context = [] {
    auto* c = new edgetune::Context();
    c->accountant->set_caching(false);
    return c;
  }();
  return *context;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace edgetune;
  using namespace edgetune::safetensors;
  const ContextScope scope(fuzz_context());
  try {
    const Reader r(std::span(reinterpret_cast<const std::byte*>(data), size), "fuzz.safetensors");
    for (const TensorInfo& t : r.tensors()) {
      for (DType target : {DType::F32, DType::F64, DType::I32, DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
        try {
          const Tensor x = r.load(t, target);
          if (x.numel() > 0) (void)x.to_vector();
        } catch (const SafetensorsError&) {
        }
      }
      if (t.shape.size() == 2 && t.shape[0] > 0) {
        try {
          // A row holds at most the file's bytes, so its size is bounded by the input.
          std::vector<float> row(static_cast<std::size_t>(t.shape[1]));
          r.read_rows_f32(t, 0, 1, row.data());
          r.read_rows_f32(t, t.shape[0] - 1, 1, row.data());
        } catch (const SafetensorsError&) {
        }
      }
      (void)r.bytes(t);
      (void)r.find(t.name);
      r.release(t);
    }
    (void)r.metadata();
  } catch (const SafetensorsError&) {
  }
  return 0;
}
