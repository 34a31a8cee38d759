// UTF-8 decoding with replacement of ill-formed subsequences (see utf8.h).
#include "utf8.h"

namespace edgetune::data::utf8 {

size_t decode(std::string_view s, std::u32string& out) {
  size_t bad = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    // Lead byte: how many continuation bytes follow and the allowed range of the first one,
    // which excludes overlong forms, surrogates and code points above U+10FFFF.
    int need;
    char32_t cp;
    unsigned char lower = 0x80, upper = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
      cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      cp = b & 0x0F;
      if (b == 0xE0) lower = 0xA0;
      if (b == 0xED) upper = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      cp = b & 0x07;
      if (b == 0xF0) lower = 0x90;
      if (b == 0xF4) upper = 0x8F;
    } else {
      out.push_back(0xFFFD);
      ++bad;
      ++i;
      continue;
    }
    size_t j = i + 1;
    int got = 0;
    while (got < need && j < n && p[j] >= lower && p[j] <= upper) {
      cp = (cp << 6) | (p[j] & 0x3F);
      lower = 0x80;
      upper = 0xBF;
      ++j;
      ++got;
    }
    if (got < need) {
      // The lead byte and the valid continuation bytes after it are one maximal ill-formed
      // subsequence; the byte that broke it is read again as the start of what follows.
      out.push_back(0xFFFD);
      ++bad;
    } else {
      out.push_back(cp);
    }
    i = j;
  }
  return bad;
}

}  // namespace edgetune::data::utf8
