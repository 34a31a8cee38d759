// UTF-8 decoding and encoding for the data layer (internal header). Decoding never fails: each
// maximal ill-formed subsequence becomes one U+FFFD, the WHATWG / Unicode "best practice" rule
// that Python's decode(errors='replace') also follows.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace edgetune::data::utf8 {

// Appends the code points of `s` to `out`; returns how many U+FFFD were put for ill-formed
// subsequences (a well-formed U+FFFD in `s` is not counted).
size_t decode(std::string_view s, std::u32string& out);

// Appends the UTF-8 form of `cp` (a Unicode scalar value) to `out`.
inline void append(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace edgetune::data::utf8
