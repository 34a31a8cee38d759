// The encryption key and the encrypted file format (see encryption.h).
#include "edgetune/core/encryption.h"

#include <sodium.h>

#include <stdexcept>

#include "edgetune/core/file_io.h"

namespace edgetune {

namespace {

static_assert(EncryptionKey::kBytes == crypto_secretstream_xchacha20poly1305_KEYBYTES);
static_assert(encryption::kChunkOverhead == crypto_secretstream_xchacha20poly1305_ABYTES);

constexpr std::size_t kCheckBytes = 16;
constexpr std::size_t kFixedBytes = 12;  // magic, version, reserved
constexpr std::size_t kAdBytes = kFixedBytes + kCheckBytes;
static_assert(encryption::kHeaderBytes ==
              kAdBytes + crypto_secretstream_xchacha20poly1305_HEADERBYTES);

// libsodium must be initialised before its first use; sodium_init() is thread-safe and returns
// 1 once done, so every entry point calls it rather than relying on an order of calls.
void init_sodium() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot be initialised");
}

// The key check of the header: BLAKE2b-128 keyed by the key, of a fixed text.
void key_check(const EncryptionKey& key, unsigned char* out) {
  static constexpr std::string_view kText = "edgetune key check v1";
  crypto_generichash(out, kCheckBytes, reinterpret_cast<const unsigned char*>(kText.data()),
                     kText.size(), key.data(), EncryptionKey::kBytes);
}

const unsigned char* bytes_of(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

EncryptionKey::EncryptionKey(std::span<const unsigned char> bytes) {
  if (bytes.size() != kBytes) {
    throw std::invalid_argument("an encryption key is " + std::to_string(kBytes) + " bytes, got " +
                                std::to_string(bytes.size()));
  }
  init_sodium();
  bytes_ = static_cast<unsigned char*>(sodium_malloc(kBytes));
  if (bytes_ == nullptr) throw std::runtime_error("cannot allocate protected memory for a key");
  std::copy(bytes.begin(), bytes.end(), bytes_);
  sodium_mprotect_readonly(bytes_);
}

EncryptionKey::~EncryptionKey() {
  // sodium_free wipes the bytes before unmapping them.
  sodium_free(bytes_);
}

std::shared_ptr<const EncryptionKey> EncryptionKey::from_file(const std::filesystem::path& path) {
  std::string raw;
  try {
    raw = read_file(path);
  } catch (const FileError& e) {
    throw FileError(path, "cannot read the key file", e.reason());
  }
  if (raw.size() != kBytes) {
    const std::size_t n = raw.size();
    sodium_memzero(raw.data(), raw.size());
    throw FileError(path, "not a key file",
                    "holds " + std::to_string(n) + " bytes, expected exactly " +
                        std::to_string(kBytes) + " raw bytes, e.g. from head -c 32 /dev/urandom");
  }
  auto key = std::make_shared<const EncryptionKey>(
      std::span<const unsigned char>(bytes_of(raw), raw.size()));
  sodium_memzero(raw.data(), raw.size());
  return key;
}

namespace encryption {

bool is_encrypted(std::string_view bytes) { return bytes.starts_with(kMagic); }

struct Encryptor::State {
  crypto_secretstream_xchacha20poly1305_state stream;
  unsigned char ad[kAdBytes];
  std::string pending;  // plaintext of the chunk being filled, < kChunkBytes
  bool started = false;

  ~State() { sodium_memzero(&stream, sizeof stream); }

  // Encrypts `n` bytes at `p` as one chunk tagged `tag`, appended to `out`.
  void seal(const char* p, std::size_t n, unsigned char tag, std::string& out) {
    const std::size_t at = out.size();
    out.resize(at + n + kChunkOverhead);
    crypto_secretstream_xchacha20poly1305_push(
        &stream, reinterpret_cast<unsigned char*>(out.data() + at), nullptr,
        reinterpret_cast<const unsigned char*>(p), n, ad, kAdBytes, tag);
  }
};

Encryptor::Encryptor(const EncryptionKey& key) : state_(std::make_unique<State>()) {
  init_sodium();
  std::copy(kMagic.begin(), kMagic.end(), state_->ad);
  state_->ad[8] = kVersion;
  state_->ad[9] = state_->ad[10] = state_->ad[11] = 0;
  key_check(key, state_->ad + kFixedBytes);
  unsigned char header[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
  crypto_secretstream_xchacha20poly1305_init_push(&state_->stream, header, key.data());
  state_->pending.assign(reinterpret_cast<const char*>(state_->ad), kAdBytes);
  state_->pending.append(reinterpret_cast<const char*>(header), sizeof header);
}

Encryptor::~Encryptor() {
  sodium_memzero(state_->pending.data(), state_->pending.size());
}

std::string Encryptor::push(std::string_view plain) {
  State& s = *state_;
  std::string out;
  if (!s.started) {
    out.swap(s.pending);  // the file header goes out with the first bytes
    s.started = true;
  }
  while (!plain.empty()) {
    if (s.pending.empty() && plain.size() >= kChunkBytes) {
      s.seal(plain.data(), kChunkBytes, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE, out);
      plain.remove_prefix(kChunkBytes);
      continue;
    }
    const std::size_t take = std::min(plain.size(), kChunkBytes - s.pending.size());
    s.pending.append(plain.data(), take);
    plain.remove_prefix(take);
    if (s.pending.size() == kChunkBytes) {
      s.seal(s.pending.data(), kChunkBytes, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE, out);
      sodium_memzero(s.pending.data(), s.pending.size());
      s.pending.clear();
    }
  }
  return out;
}

std::string Encryptor::finish() {
  State& s = *state_;
  std::string out = push({});
  s.seal(s.pending.data(), s.pending.size(), crypto_secretstream_xchacha20poly1305_TAG_FINAL, out);
  sodium_memzero(s.pending.data(), s.pending.size());
  s.pending.clear();
  return out;
}

std::string encrypt(const EncryptionKey& key, std::string_view plain) {
  Encryptor e(key);
  std::string out = e.push(plain);
  out += e.finish();
  return out;
}

std::string decrypt(const EncryptionKey& key, std::string_view sealed,
                    const std::filesystem::path& file) {
  init_sodium();
  auto fail = [&file](const std::string& reason) -> FileError {
    return FileError(file, "cannot decrypt", reason);
  };
  if (!is_encrypted(sealed)) throw fail("not an encrypted edgetune file");
  if (sealed.size() < kHeaderBytes) throw fail("truncated: the header is incomplete");
  if (static_cast<unsigned char>(sealed[8]) != kVersion) {
    throw fail("encrypted in format version " +
               std::to_string(static_cast<unsigned char>(sealed[8])) + ", this build reads " +
               std::to_string(kVersion) + ", or the file was altered");
  }
  unsigned char check[kCheckBytes];
  key_check(key, check);
  if (sodium_memcmp(check, bytes_of(sealed) + kFixedBytes, kCheckBytes) != 0) {
    throw fail("encrypted with another key, or its header was altered");
  }
  crypto_secretstream_xchacha20poly1305_state stream;
  if (crypto_secretstream_xchacha20poly1305_init_pull(&stream, bytes_of(sealed) + kAdBytes,
                                                      key.data()) != 0) {
    throw fail("the header was altered");
  }
  const unsigned char* ad = bytes_of(sealed);
  std::string plain;
  std::size_t at = kHeaderBytes;
  bool final_seen = false;
  try {
    while (!final_seen) {
      const std::size_t left = sealed.size() - at;
      if (left < kChunkOverhead) {
        throw fail(left == 0 ? "truncated: the final chunk is missing"
                             : "truncated inside a chunk");
      }
      const std::size_t n = std::min(left, kChunkBytes + kChunkOverhead);
      const std::size_t out_at = plain.size();
      plain.resize(out_at + n - kChunkOverhead);
      unsigned char tag = 0;
      if (crypto_secretstream_xchacha20poly1305_pull(
              &stream, reinterpret_cast<unsigned char*>(plain.data() + out_at), nullptr, &tag,
              bytes_of(sealed) + at, n, ad, kAdBytes) != 0) {
        throw fail("the chunk at byte " + std::to_string(at) +
                   " does not authenticate: the file was altered or truncated");
      }
      at += n;
      final_seen = tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL;
      if (!final_seen && n < kChunkBytes + kChunkOverhead) {
        throw fail("truncated: the last chunk is not the final one");
      }
    }
    if (at != sealed.size()) throw fail("bytes follow the final chunk: the file was altered");
  } catch (...) {
    sodium_memzero(&stream, sizeof stream);
    sodium_memzero(plain.data(), plain.size());
    throw;
  }
  sodium_memzero(&stream, sizeof stream);
  return plain;
}

}  // namespace encryption
}  // namespace edgetune
