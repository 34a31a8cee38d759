// Whole-file reading and atomic writing (see io.h).
#include "io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>

#include "edgetune/data/error.h"

namespace edgetune::data::io {

std::string display_name(const std::filesystem::path& file) {
  return file == "-" ? std::string("<stdin>") : file.string();
}

std::string read_all(const std::filesystem::path& file) {
  if (file == "-") {
    std::string bytes{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    if (std::cin.bad()) throw DataError("<stdin>", "cannot read standard input");
    return bytes;
  }
  std::FILE* f = std::fopen(file.c_str(), "rb");
  if (!f) throw DataError(file.string(), std::string("cannot open: ") + std::strerror(errno));
  std::string bytes;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) bytes.append(buffer, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw DataError(file.string(), "cannot read (I/O error)");
  return bytes;
}

void write_atomically(const std::filesystem::path& file, std::string_view bytes) {
  std::filesystem::path tmp = file;
  tmp += ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw DataError(file.string(), std::string("cannot create a temporary file beside it: ") +
                                       std::strerror(errno));
  }
  auto fail = [&](const char* what) {
    const std::string reason = std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    throw DataError(file.string(), std::string(what) + ": " + reason);
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("cannot write");
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) fail("cannot flush to disk");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw DataError(file.string(), std::string("cannot close: ") + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), file.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw DataError(file.string(), "cannot rename the temporary file over it: " + reason);
  }
}

}  // namespace edgetune::data::io
