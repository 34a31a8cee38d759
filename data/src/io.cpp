// Whole-file reading and atomic writing (see io.h).
#include "io.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>

#include "edgetune/core/file_io.h"
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
  try {
    write_file_atomic(file, bytes);
  } catch (const FileError& e) {
    throw DataError(file.string(), e.action() + ": " + e.reason());
  }
}

}  // namespace edgetune::data::io
