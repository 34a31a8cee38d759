// libFuzzer entry point for the decrypting reader (core/encryption.h).
//
// Each input is taken as a whole file claimed to be encrypted: decrypt() must either return a
// plaintext or throw FileError naming the file, whatever the bytes (a header cut short, chunk
// lengths that do not add up, a FINAL tag in the middle, trailing bytes). Inputs made by
// encrypting the fuzzer's bytes with the same key must decrypt back to them. Anything else (a
// crash, an out-of-bounds read, another exception type) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "edgetune/core/encryption.h"
#include "edgetune/core/file_io.h"

namespace {
const edgetune::EncryptionKey& fuzz_key() {
  static const edgetune::EncryptionKey* key =
      new edgetune::EncryptionKey(std::vector<unsigned char>(edgetune::EncryptionKey::kBytes, 0x5a));
  return *key;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace enc = edgetune::encryption;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    enc::decrypt(fuzz_key(), bytes, "fuzz.enc");
  } catch (const edgetune::FileError&) {
  }
  // The same bytes as a plaintext: they come back whole.
  const std::string sealed = enc::encrypt(fuzz_key(), bytes);
  if (enc::decrypt(fuzz_key(), sealed, "fuzz.enc") != bytes) std::abort();
  return 0;
}
