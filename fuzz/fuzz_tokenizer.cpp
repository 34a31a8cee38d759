// libFuzzer target: the WordPiece tokenizer on arbitrary bytes. The first byte picks the options
// (lowercase, accents, CJK spacing, a pair), the second the max_length; the rest is the text (cut
// in two for a pair). Checks: ids within the vocabulary, [CLS] first and [SEP] last, lengths
// within max_length, type ids and mask the same length, and encode == [CLS] tokenize [SEP] when
// nothing was truncated.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "edgetune/data/tokenizer.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

const edgetune::data::Vocab& vocab() {
  static const auto* v =
      new edgetune::data::Vocab(edgetune::data::Vocab::load(EDGETUNE_FUZZ_VOCAB));
  return *v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace edgetune::data;
  if (size < 2) return 0;
  const uint8_t flags = data[0];
  // One tokenizer per combination of option bits, made on first use (building one per input
  // would spend most of the time copying the vocabulary).
  static std::unique_ptr<WordPieceTokenizer> tokenizers[256];
  const uint8_t key = flags & 0xEF;
  if (!tokenizers[key]) {
    TokenizerOptions options;
    options.do_lower_case = flags & 1;
    if (flags & 2) options.strip_accents = (flags & 4) != 0;
    options.tokenize_chinese_chars = (flags & 8) == 0;
    options.max_input_chars_per_word = 1 + (flags >> 5) * 20;
    tokenizers[key] = std::make_unique<WordPieceTokenizer>(vocab(), options);
  }
  const WordPieceTokenizer& tok = *tokenizers[key];
  const bool pair = flags & 16;
  const int max_length = 3 + data[1];
  const std::string_view text(reinterpret_cast<const char*>(data) + 2, size - 2);
  const std::string_view a = pair ? text.substr(0, text.size() / 2) : text;
  const std::optional<std::string_view> b =
      pair ? std::optional<std::string_view>(text.substr(text.size() / 2)) : std::nullopt;

  const Encoding e = tok.encode(a, b, max_length);
  check(e.ids.size() >= 2 && e.ids.size() <= static_cast<size_t>(max_length));
  check(e.ids.front() == tok.cls_id() && e.ids.back() == tok.sep_id());
  check(e.type_ids.size() == e.ids.size() && e.attention_mask.size() == e.ids.size());
  for (const int32_t id : e.ids) check(id >= 0 && id < tok.vocab().size());
  check(e.invalid_utf8 >= 0 && static_cast<size_t>(e.invalid_utf8) <= text.size());

  if (!pair) {
    const Encoding full = tok.encode(a, std::nullopt, kNoTruncation);
    const auto tokens = tok.tokenize(a);
    check(full.ids.size() == tokens.size() + 2);
    for (size_t i = 0; i < tokens.size(); ++i)
      check(tok.vocab().token(full.ids[i + 1]) == tokens[i]);
    check(e.truncated == (full.ids.size() > static_cast<size_t>(max_length)));
    for (const auto& word : tok.pre_tokenize(a)) check(!word.empty());
  }
  return 0;
}
