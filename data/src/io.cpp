// Whole-file reading and atomic writing (see io.h).
#include "io.h"

#include <iostream>
#include <iterator>

#include "edgetune/core/file_io.h"
#include "edgetune/data/error.h"

namespace edgetune::data::io {

std::string display_name(const std::filesystem::path& file) {
  return file == "-" ? std::string("<stdin>") : file.string();
}

std::string read_all(const std::filesystem::path& file, FileOrigin origin) {
  if (file == "-") {
    std::string bytes{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    if (std::cin.bad()) throw DataError("<stdin>", "cannot read standard input");
    return bytes;
  }
  try {
    return read_file(file, origin);
  } catch (const FileError& e) {
    throw DataError(file.string(), e.action() + ": " + e.reason());
  }
}

void write_atomically(const std::filesystem::path& file, std::string_view bytes) {
  try {
    write_file_atomic(file, bytes);
  } catch (const FileError& e) {
    throw DataError(file.string(), e.action() + ": " + e.reason());
  }
}

}  // namespace edgetune::data::io
