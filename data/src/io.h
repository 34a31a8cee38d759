// Whole-file reading and atomic writing for the data layer (internal header).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace edgetune::data::io {

// The bytes of `file`; "-" reads standard input to its end. Throws DataError naming the file
// when it cannot be opened or read.
std::string read_all(const std::filesystem::path& file);

// Name of `file` in messages: "<stdin>" for "-", else the path as given.
std::string display_name(const std::filesystem::path& file);

// Writes `bytes` to `file` through the one atomic writer (write_file_atomic of core/file_io.h), so
// that a crash leaves either the old file or the new one, never a torn one. Throws DataError
// naming the file on failure ("<file>: cannot write: <reason>"; the temporary file is removed).
void write_atomically(const std::filesystem::path& file, std::string_view bytes);

}  // namespace edgetune::data::io
