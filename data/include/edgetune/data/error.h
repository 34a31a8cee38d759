// DataError: the one exception type of the data layer for bad input (files, rows, vocabularies).
// It is not for programming errors (a wrong argument from the caller raises std::invalid_argument).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace edgetune::data {

// A problem with input data. what() is always one line:
//   "<source>:<line>: <message>"  when the line is known (line >= 1), else "<source>: <message>".
// Newlines and other control characters in the parts are shown as spaces so that the message
// stays one line, whatever bytes the input held.
class DataError : public std::runtime_error {
 public:
  DataError(std::string_view source, int64_t line, std::string_view message);
  DataError(std::string_view source, std::string_view message) : DataError(source, 0, message) {}

  const std::string& source() const { return source_; }
  int64_t line() const { return line_; }  // 0 when not tied to a line

 private:
  std::string source_;
  int64_t line_;
};

// `s` made fit for quoting inside an error message: ASCII control characters become spaces, and
// a string longer than `max_bytes` is cut on a UTF-8 boundary and ends with "...".
std::string quote_for_message(std::string_view s, size_t max_bytes = 40);

}  // namespace edgetune::data
