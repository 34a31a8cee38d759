// DataError and the helpers that keep its messages to one line.
#include "edgetune/data/error.h"

namespace edgetune::data {
namespace {

std::string one_line(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  return out;
}

std::string format(std::string_view source, int64_t line, std::string_view message) {
  std::string out = one_line(source);
  if (line >= 1) {
    out += ':';
    out += std::to_string(line);
  }
  out += ": ";
  out += one_line(message);
  return out;
}

}  // namespace

DataError::DataError(std::string_view source, int64_t line, std::string_view message)
    : std::runtime_error(format(source, line, message)), source_(source), line_(line) {}

std::string quote_for_message(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return one_line(s);
  size_t cut = max_bytes;
  // Back up to the first byte of a UTF-8 sequence so that the cut never splits a character.
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return one_line(s.substr(0, cut)) + "...";
}

}  // namespace edgetune::data
