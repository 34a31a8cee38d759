// Whole-file reading and atomic writing for the data layer (internal header).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "edgetune/core/file_io.h"

namespace edgetune::data::io {

// The bytes of `file`, decrypted when edgetune wrote it encrypted (core's read_file, with the
// current context's key; `origin` as there); "-" reads standard input to its end. Throws
// DataError naming the file when it cannot be opened, read or decrypted.
std::string read_all(const std::filesystem::path& file, FileOrigin origin = FileOrigin::Input);

// Name of `file` in messages: "<stdin>" for "-", else the path as given.
std::string display_name(const std::filesystem::path& file);

// Writes `bytes` to `file` through the one atomic writer (write_file_atomic of core/file_io.h), so
// that a crash leaves either the old file or the new one, never a torn one. Throws DataError
// naming the file on failure ("<file>: cannot write: <reason>"; the temporary file is removed).
void write_atomically(const std::filesystem::path& file, std::string_view bytes);

}  // namespace edgetune::data::io
