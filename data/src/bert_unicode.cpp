// Character classes of Hugging Face's BertNormalizer / BertPreTokenizer (see bert_unicode.h).
#include "bert_unicode.h"

#include <algorithm>
#include <iterator>

namespace edgetune::data::bert {
namespace {

struct CodePointRange {
  char32_t first, last;  // inclusive
};

#include "bert_unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodePointRange (&table)[N], char32_t cp) {
  // The first range whose last code point is >= cp; cp is in it when it starts at or before cp.
  const auto* it = std::lower_bound(std::begin(table), std::end(table), cp,
                                    [](const CodePointRange& r, char32_t c) { return r.last < c; });
  return it != std::end(table) && it->first <= cp;
}

}  // namespace

bool is_other(char32_t cp) {
  return in_ranges(kOtherRanges, cp);
}
bool is_nonspacing_mark(char32_t cp) {
  return in_ranges(kNonspacingMarkRanges, cp);
}
bool is_punctuation(char32_t cp) {
  return in_ranges(kPunctuationRanges, cp);
}
bool is_whitespace(char32_t cp) {
  return in_ranges(kWhitespaceRanges, cp);
}

}  // namespace edgetune::data::bert
