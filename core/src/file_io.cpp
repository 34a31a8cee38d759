// Whole-file reading and the atomic writer (see file_io.h).
#include "edgetune/core/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "edgetune/core/context.h"
#include "edgetune/core/encryption.h"

namespace edgetune {

namespace {
constexpr std::string_view kUntouched = "; the file was left as it was";

std::string errno_text() {
  return std::strerror(errno);
}

// True when `name` ends with `marker` followed by one or more decimal digits, with something
// before the marker.
bool ends_with_marker_and_digits(std::string_view name, std::string_view marker) {
  const std::size_t at = name.rfind(marker);
  if (at == std::string_view::npos || at == 0) return false;
  const std::string_view digits = name.substr(at + marker.size());
  return !digits.empty() &&
         std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
}
}  // namespace

FileError::FileError(std::filesystem::path path, std::string action, std::string reason,
                     std::string_view note)
    : std::runtime_error(path.string() + ": " + action + " (" + reason + ")" + std::string(note)),
      path_(std::move(path)),
      action_(std::move(action)),
      reason_(std::move(reason)) {}

std::filesystem::path temporary_path(const std::filesystem::path& path) {
  std::filesystem::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  return tmp;
}

bool is_temporary_name(std::string_view filename) {
  return ends_with_marker_and_digits(filename, ".tmp-") ||
         ends_with_marker_and_digits(filename, ".tmp.");
}

AtomicFile::AtomicFile(std::filesystem::path path)
    : path_(std::move(path)), tmp_(temporary_path(path_)), key_(current_context().key) {
  if (key_) encryptor_ = std::make_unique<encryption::Encryptor>(*key_);
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FileError(path_, "cannot create a temporary file beside it", errno_text());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::fail(const std::string& action) {
  const std::string reason = errno_text();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  throw FileError(path_, action, reason, kUntouched);
}

void AtomicFile::write(const void* data, std::size_t bytes) {
  std::string_view plain(static_cast<const char*>(data), bytes);
  if (!encryptor_) {
    write_raw(plain);
    return;
  }
  // A slice at a time, so a large tensor written at once is not doubled in memory as ciphertext.
  constexpr std::size_t kSlice = 16 * encryption::kChunkBytes;
  while (!plain.empty()) {
    const std::size_t n = std::min(plain.size(), kSlice);
    write_raw(encryptor_->push(plain.substr(0, n)));
    plain.remove_prefix(n);
  }
}

void AtomicFile::write_raw(std::string_view text) {
  const char* p = text.data();
  std::size_t bytes = text.size();
  while (bytes > 0) {
    const ssize_t w = ::write(fd_, p, bytes);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("cannot write");
    }
    p += w;
    bytes -= static_cast<std::size_t>(w);
  }
}

void AtomicFile::commit() {
  if (encryptor_) write_raw(encryptor_->finish());
  if (::fsync(fd_) != 0) fail("cannot flush to disk");
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("cannot close");
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("cannot rename the temporary file over it");
  // Make the rename durable too. Some file systems cannot fsync a folder (EINVAL): the file is
  // complete either way, so only a real I/O error is reported.
  const std::filesystem::path dir = path_.has_parent_path() ? path_.parent_path() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    const int synced = ::fsync(dfd);
    const int err = errno;
    ::close(dfd);
    if (synced != 0 && err == EIO) {
      throw FileError(path_, "written, but syncing its directory failed", std::strerror(err));
    }
  }
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

namespace {
std::string read_plain(const std::filesystem::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw FileError(path, "cannot open", errno_text());
  std::string bytes;
  char buffer[1 << 16];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) bytes.append(buffer, n);
  const bool failed = std::ferror(f) != 0;
  const std::string reason = failed ? errno_text() : std::string();
  std::fclose(f);
  if (failed) throw FileError(path, "cannot read", reason);
  return bytes;
}
}  // namespace

std::optional<std::string> read_if_encrypted(const std::filesystem::path& path,
                                             FileOrigin origin) {
  char head[encryption::kMagic.size()];
  std::size_t got = 0;
  {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw FileError(path, "cannot open", errno_text());
    got = std::fread(head, 1, sizeof head, f);
    std::fclose(f);
  }
  const std::shared_ptr<const EncryptionKey>& key = current_context().key;
  if (!encryption::is_encrypted(std::string_view(head, got))) {
    if (origin == FileOrigin::Output && key) {
      throw FileError(path, "cannot read",
                      "not encrypted, but a key is set: it was written without a key, or its "
                      "header was altered");
    }
    return std::nullopt;
  }
  if (!key) {
    throw FileError(path, "cannot read",
                    "it is encrypted: give the key it was written with, --key-file FILE");
  }
  return encryption::decrypt(*key, read_plain(path), path);
}

std::string read_file(const std::filesystem::path& path, FileOrigin origin) {
  std::optional<std::string> plain = read_if_encrypted(path, origin);
  return plain ? std::move(*plain) : read_plain(path);
}

std::size_t remove_stale_temporaries(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::size_t removed = 0;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::error_code kind;
    if (is_temporary_name(it->path().filename().string()) && it->is_regular_file(kind) &&
        fs::remove(it->path(), kind)) {
      ++removed;
    }
  }
  if (ec) throw FileError(dir, "cannot list the folder", ec.message());
  return removed;
}

}  // namespace edgetune
