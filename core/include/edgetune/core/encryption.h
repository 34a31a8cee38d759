// Encryption at rest: the key a session encrypts its files with, and the encrypted file format.
//
// A session whose Context holds a key writes every file through core's one writer (file_io.h)
// encrypted and authenticated, and read_file() decrypts what carries the header below. This file
// is the format and the key; file_io.cpp applies them.
//
// Format (version 1), libsodium's XChaCha20-Poly1305 secretstream:
//   bytes  0..7   magic "\x89ETENC\r\n" (not text, so a file cannot be mistaken for JSON or TSV)
//   byte   8      version (1)
//   bytes  9..11  zero (reserved)
//   bytes 12..27  key check: BLAKE2b-128 keyed by the key, of "edgetune key check v1", so that a
//                 wrong key is told apart from a damaged file
//   bytes 28..51  the secretstream header (its random nonce)
//   then chunks:  each the encryption of kChunkBytes bytes of plaintext (kChunkBytes + 17 bytes),
//                 the last one shorter (0 to kChunkBytes bytes of plaintext) and tagged FINAL.
// Bytes 0..27 are the additional data of every chunk, so no header byte can be changed unnoticed.
// The stream authenticates the order of the chunks, and only the last may carry the FINAL tag:
// a file cut at any byte, a chunk boundary included, fails to decrypt, as does any flipped bit.
// What it does not hide: the length of the plaintext (to 1 byte) and that two files share a key.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace edgetune {

// A 32-byte secretstream key, held in memory that libsodium allocates (guard pages, locked
// against swapping where the system allows) and wipes when freed. Immutable; share it between
// the objects of one session as shared_ptr<const EncryptionKey>.
class EncryptionKey {
 public:
  static constexpr std::size_t kBytes = 32;

  // Copies `bytes`. Throws std::invalid_argument unless bytes.size() == kBytes, and
  // std::runtime_error when libsodium cannot be initialised or the memory not allocated.
  explicit EncryptionKey(std::span<const unsigned char> bytes);
  ~EncryptionKey();
  EncryptionKey(const EncryptionKey&) = delete;
  EncryptionKey& operator=(const EncryptionKey&) = delete;

  // A key file: exactly kBytes raw bytes. Throws FileError naming `path` when it cannot be read
  // or holds another number of bytes (the message says how to make one).
  static std::shared_ptr<const EncryptionKey> from_file(const std::filesystem::path& path);

  const unsigned char* data() const { return bytes_; }

 private:
  unsigned char* bytes_ = nullptr;  // kBytes, from sodium_malloc
};

namespace encryption {

inline constexpr std::string_view kMagic{"\x89" "ETENC\r\n", 8};
inline constexpr unsigned char kVersion = 1;
inline constexpr std::size_t kHeaderBytes = 52;       // magic .. secretstream header
inline constexpr std::size_t kChunkBytes = 64 * 1024;  // plaintext per chunk (the last: fewer)
inline constexpr std::size_t kChunkOverhead = 17;      // secretstream's tag and MAC per chunk

// True when `bytes` (a file's content, or at least its first 8 bytes) starts with kMagic.
bool is_encrypted(std::string_view bytes);

// Encrypts a stream of bytes into the format above. push() may be called any number of times
// with any sizes; finish() once at the end. Each returns the ciphertext to append to the file:
// the first call the header too, push() then only whole chunks (it buffers less than one).
class Encryptor {
 public:
  // `key` must outlive the Encryptor.
  explicit Encryptor(const EncryptionKey& key);
  ~Encryptor();
  Encryptor(const Encryptor&) = delete;
  Encryptor& operator=(const Encryptor&) = delete;

  std::string push(std::string_view plain);
  std::string finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The whole encrypted image of `plain` (an Encryptor pushed once and finished).
std::string encrypt(const EncryptionKey& key, std::string_view plain);

// The plaintext of an encrypted image. Throws FileError naming `file` (the label in messages)
// when `sealed` is not in this format or version, was encrypted with another key, was altered
// (any changed byte) or is truncated (cut anywhere, chunk boundaries included); never returns
// part of a file.
std::string decrypt(const EncryptionKey& key, std::string_view sealed,
                    const std::filesystem::path& file);

}  // namespace encryption
}  // namespace edgetune
