// libFuzzer target: the TSV reader on arbitrary bytes (see fuzz_reader.h for the checks).
#include "fuzz_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  edgetune::fuzz::read_with_options(data, size, edgetune::data::Format::kTsv);
  return 0;
}
