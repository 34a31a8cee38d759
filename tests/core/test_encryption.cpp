// Encryption at rest (core/encryption.h, and file_io.h under a context with a key): a round trip
// gives the bytes back for every chunk layout; a wrong key, any flipped bit and any truncation is
// a FileError naming the file, never a part of it; a key belongs to the context that holds it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "edgetune/core/context.h"
#include "edgetune/core/encryption.h"
#include "edgetune/core/file_io.h"
#include "test_support.h"

using namespace edgetune;
using edgetune::test::TempDir;
using edgetune::test::error_of;
namespace fs = std::filesystem;
namespace enc = edgetune::encryption;

namespace {

std::shared_ptr<const EncryptionKey> key_of(unsigned char seed) {
  std::vector<unsigned char> bytes(EncryptionKey::kBytes);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(seed + 7 * i);
  return std::make_shared<const EncryptionKey>(bytes);
}

// `n` bytes of seeded noise: plaintext that would show if a chunk leaked.
std::string noise(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(g() & 0xff);
  return s;
}

void put(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

std::string raw(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The sizes of a file holding `plain` bytes: header, full chunks, the final chunk.
std::size_t sealed_size(std::size_t plain) {
  const std::size_t full = plain / enc::kChunkBytes;
  return enc::kHeaderBytes + full * (enc::kChunkBytes + enc::kChunkOverhead) +
         (plain - full * enc::kChunkBytes) + enc::kChunkOverhead;
}

}  // namespace

TEST_CASE("encryption: round trip for every chunk layout, and the format's sizes", "[encryption]") {
  const auto key = key_of(1);
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, enc::kChunkBytes - 1, enc::kChunkBytes,
                        enc::kChunkBytes + 1, 3 * enc::kChunkBytes + 5}) {
    INFO(n);
    const std::string plain = noise(n, static_cast<unsigned>(n));
    const std::string sealed = enc::encrypt(*key, plain);
    CHECK(enc::is_encrypted(sealed));
    CHECK(sealed.size() == sealed_size(n));
    CHECK(enc::decrypt(*key, sealed, "f") == plain);
    // Nothing of the plaintext shows through (a 16-byte window of it, which noise never repeats).
    if (n >= 16) CHECK(sealed.find(plain.substr(n / 2, 16)) == std::string::npos);
  }
  // Two encryptions of the same bytes differ (a fresh nonce each time).
  CHECK(enc::encrypt(*key, "same") != enc::encrypt(*key, "same"));
}

TEST_CASE("encryption: an Encryptor fed in odd pieces writes what one push would", "[encryption]") {
  const auto key = key_of(2);
  const std::string plain = noise(2 * enc::kChunkBytes + 333, 9);
  enc::Encryptor e(*key);
  std::string sealed;
  std::size_t at = 0, step = 1;
  while (at < plain.size()) {
    const std::size_t n = std::min(step, plain.size() - at);
    sealed += e.push(std::string_view(plain).substr(at, n));
    at += n;
    step = step * 3 + 1;
  }
  sealed += e.finish();
  CHECK(sealed.size() == sealed_size(plain.size()));
  CHECK(enc::decrypt(*key, sealed, "f") == plain);
}

TEST_CASE("encryption: the writer encrypts under a context with a key, read_file decrypts",
          "[encryption][file_io]") {
  TempDir dir("core_enc_writer");
  const fs::path p = dir.path / "run.json";
  const std::string text = "{\"learning_rate\": 0.001, \"train\": \"secret diary.tsv\"}\n";
  Context keyed;
  keyed.key = key_of(3);
  {
    const ContextScope scope(keyed);
    AtomicFile f(p);
    f.write(text.substr(0, 10));
    f.write(text.substr(10));
    f.commit();
    CHECK(read_file(p) == text);
    CHECK(read_file(p, FileOrigin::Output) == text);
    REQUIRE(read_if_encrypted(p).has_value());
  }
  const std::string bytes = raw(p);
  CHECK(enc::is_encrypted(bytes));
  CHECK(bytes.find("learning_rate") == std::string::npos);
  CHECK(bytes.find("secret") == std::string::npos);
  // Without a key: it says what the file is and what is needed.
  const std::string e = error_of<FileError>([&] { read_file(p); });
  CHECK(e.starts_with(p.string() + ": "));
  CHECK(e.find("encrypted") != std::string::npos);
  CHECK(e.find("--key-file") != std::string::npos);
  // Another thread, with no scope of its own, does not see this context's key: it writes plain.
  std::thread([&] { write_file_atomic(dir.path / "plain.json", text); }).join();
  CHECK(raw(dir.path / "plain.json") == text);
}

TEST_CASE("encryption: plain files under a key: inputs are read as they are, outputs refused",
          "[encryption][file_io]") {
  TempDir dir("core_enc_plain");
  const fs::path p = dir.path / "labels.json";
  put(p, "{\"id2label\": [\"a\"]}");
  Context keyed;
  keyed.key = key_of(4);
  const ContextScope scope(keyed);
  CHECK(read_file(p) == "{\"id2label\": [\"a\"]}");
  CHECK_FALSE(read_if_encrypted(p).has_value());
  const std::string e = error_of<FileError>([&] { read_file(p, FileOrigin::Output); });
  CHECK(e.starts_with(p.string() + ": "));
  CHECK(e.find("not encrypted, but a key is set") != std::string::npos);
}

TEST_CASE("encryption: a wrong key is named as such", "[encryption]") {
  TempDir dir("core_enc_wrong");
  const fs::path p = dir.path / "adapter_config.json";
  Context a, b;
  a.key = key_of(5);
  b.key = key_of(6);
  {
    const ContextScope scope(a);
    write_file_atomic(p, "{\"r\": 8}");
  }
  const ContextScope scope(b);
  const std::string e = error_of<FileError>([&] { read_file(p, FileOrigin::Output); });
  CHECK(e == p.string() + ": cannot decrypt (encrypted with another key, or its header was altered)");
}

TEST_CASE("encryption: one flipped bit at every bit of a small file is an error naming it",
          "[encryption]") {
  TempDir dir("core_enc_flip");
  const fs::path p = dir.path / "labels.json";
  Context keyed;
  keyed.key = key_of(7);
  const ContextScope scope(keyed);
  const std::string plain = noise(200, 1);
  write_file_atomic(p, plain);
  const std::string good = raw(p);
  REQUIRE(good.size() == sealed_size(200));
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      put(p, bad);
      INFO("byte " << i << " bit " << bit);
      const std::string e = error_of<FileError>([&] { read_file(p, FileOrigin::Output); });
      CHECK(e.starts_with(p.string() + ": cannot "));
    }
  }
}

TEST_CASE("encryption: flipped bits in a file of several chunks, every 61st byte and the "
          "header and chunk edges",
          "[encryption]") {
  const auto key = key_of(8);
  const std::string plain = noise(2 * enc::kChunkBytes + 100, 2);
  const std::string good = enc::encrypt(*key, plain);
  std::vector<std::size_t> at;
  for (std::size_t i = 0; i < enc::kHeaderBytes + 4; ++i) at.push_back(i);
  for (std::size_t i = enc::kHeaderBytes; i < good.size(); i += 61) at.push_back(i);
  for (std::size_t c = 1; c <= 2; ++c) {
    const std::size_t edge = enc::kHeaderBytes + c * (enc::kChunkBytes + enc::kChunkOverhead);
    for (std::size_t i = edge - 3; i < edge + 3; ++i) at.push_back(i);
  }
  for (std::size_t i = good.size() - 20; i < good.size(); ++i) at.push_back(i);
  for (std::size_t i : at) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    INFO("byte " << i);
    CHECK_THROWS_AS(enc::decrypt(*key, bad, "f"), FileError);
  }
}

TEST_CASE("encryption: truncation at every chunk boundary and inside chunks is detected",
          "[encryption]") {
  const auto key = key_of(9);
  const std::string plain = noise(3 * enc::kChunkBytes, 3);  // three full chunks and an empty final
  const std::string good = enc::encrypt(*key, plain);
  std::vector<std::size_t> cuts;
  const std::size_t chunk = enc::kChunkBytes + enc::kChunkOverhead;
  for (std::size_t c = 0; c <= 3; ++c) {
    const std::size_t boundary = enc::kHeaderBytes + c * chunk;
    cuts.push_back(boundary);                                      // at the boundary
    if (boundary > 0) cuts.push_back(boundary - 1);                // just before it
    cuts.push_back(boundary + 1);                                  // just after it
    if (c < 3) cuts.push_back(boundary + chunk / 2);               // inside the chunk
  }
  for (std::size_t n = 0; n < enc::kHeaderBytes; n += 5) cuts.push_back(n);  // inside the header
  cuts.push_back(good.size() - 1);
  for (std::size_t n : cuts) {
    INFO("cut at " << n << " of " << good.size());
    REQUIRE(n < good.size());
    const std::string cut = good.substr(0, n);
    std::string e;
    try {
      enc::decrypt(*key, cut, "metrics.jsonl");
    } catch (const FileError& error) {
      e = error.what();
    }
    CHECK(e.starts_with("metrics.jsonl: cannot decrypt ("));
  }
  // Cut exactly after a full chunk: the stream ended without its final chunk.
  const std::string at_boundary = good.substr(0, enc::kHeaderBytes + 2 * chunk);
  CHECK_THROWS_WITH(enc::decrypt(*key, at_boundary, "f"),
                    "f: cannot decrypt (truncated: the final chunk is missing)");
  // Bytes appended after the final chunk are refused too.
  CHECK_THROWS_AS(enc::decrypt(*key, good + std::string(1, '\0'), "f"), FileError);
  CHECK_THROWS_AS(enc::decrypt(*key, good + good.substr(enc::kHeaderBytes, chunk), "f"), FileError);
}

TEST_CASE("encryption: every truncation of a small file is detected", "[encryption]") {
  const auto key = key_of(10);
  const std::string good = enc::encrypt(*key, noise(300, 4));
  for (std::size_t n = 0; n < good.size(); ++n) {
    INFO("cut at " << n);
    CHECK_THROWS_AS(enc::decrypt(*key, good.substr(0, n), "f"), FileError);
  }
}

TEST_CASE("encryption: key files and key sizes", "[encryption]") {
  TempDir dir("core_enc_keyfile");
  const fs::path good = dir.path / "good.key", bad = dir.path / "bad.key";
  put(good, noise(32, 5));
  put(bad, noise(31, 6));
  const auto key = EncryptionKey::from_file(good);
  const auto same = std::make_shared<const EncryptionKey>(
      std::span(reinterpret_cast<const unsigned char*>(noise(32, 5).data()), 32));
  CHECK(enc::decrypt(*same, enc::encrypt(*key, "x"), "f") == "x");
  CHECK(error_of<FileError>([&] { EncryptionKey::from_file(bad); }) ==
        bad.string() +
            ": not a key file (holds 31 bytes, expected exactly 32 raw bytes, e.g. from head -c 32 "
            "/dev/urandom)");
  CHECK(error_of<FileError>([&] { EncryptionKey::from_file(dir.path / "none.key"); })
            .starts_with((dir.path / "none.key").string() + ": cannot read the key file ("));
  const std::vector<unsigned char> short_key(16);
  CHECK_THROWS_AS(EncryptionKey(short_key), std::invalid_argument);
}

TEST_CASE("encryption: a file of another format version is refused by name", "[encryption]") {
  const auto key = key_of(11);
  std::string sealed = enc::encrypt(*key, "x");
  sealed[8] = 2;
  CHECK_THROWS_WITH(enc::decrypt(*key, sealed, "f"),
                    "f: cannot decrypt (encrypted in format version 2, this build reads 1, or the "
                    "file was altered)");
}
