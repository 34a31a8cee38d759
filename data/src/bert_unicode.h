// Character classes of Hugging Face's BertNormalizer and BertPreTokenizer (internal header).
// HF takes control / punctuation / nonspacing-mark categories from tables older than current
// Unicode, so these come from bert_unicode_tables.inc (generated from the reference), not from
// utf8proc; NFD, canonical combining classes and lowercasing do come from utf8proc.
#pragma once

#include <cstdint>

namespace edgetune::data::bert {

// Removed by clean_text (besides U+0000 and U+FFFD): Cc, Cf, Co, except \t \n \r.
bool is_other(char32_t cp);
// Removed by strip_accents after NFD (Mn).
bool is_nonspacing_mark(char32_t cp);
// Split off as a word of its own: ASCII punctuation (33-47, 58-64, 91-96, 123-126) and P*.
bool is_punctuation(char32_t cp);
// Unicode White_Space (as Rust's char::is_whitespace): a word boundary; clean_text makes the
// ones it keeps a plain space.
bool is_whitespace(char32_t cp);

// A CJK ideograph in HF's sense: the code point ranges of BertNormalizer, which differ from
// Google's original BERT in one place (Extension C starts at U+2B920 there, leaving
// U+2B820..U+2B91F out).
inline bool is_chinese(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

}  // namespace edgetune::data::bert
