// Whole-file reading and the atomic writer (see file_io.h).
#include "edgetune/core/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

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
    : path_(std::move(path)), tmp_(temporary_path(path_)) {
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
  const char* p = static_cast<const char*>(data);
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

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "cannot open", errno_text());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
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
