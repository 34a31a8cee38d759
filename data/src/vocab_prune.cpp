// Vocabulary pruning (see vocab_prune.h).
#include "edgetune/data/vocab_prune.h"

#include <stdexcept>

#include "edgetune/data/error.h"
#include "io.h"

namespace edgetune::data {

const std::vector<std::string>& bert_special_tokens() {
  static const std::vector<std::string> specials = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  return specials;
}

bool is_single_character(std::string_view token) {
  if (token.starts_with("##")) token.remove_prefix(2);
  if (token.empty()) return false;
  // One code point: a lead byte followed only by continuation bytes (10xxxxxx), as many as the
  // lead byte announces. Anything else (two characters, a stray byte) is not one character.
  const auto lead = static_cast<unsigned char>(token[0]);
  const size_t length = lead < 0x80           ? 1
                        : (lead >> 5) == 0x6  ? 2
                        : (lead >> 4) == 0xE  ? 3
                        : (lead >> 3) == 0x1E ? 4
                                              : 1;
  if (token.size() != length) return false;
  for (size_t i = 1; i < token.size(); ++i) {
    if ((static_cast<unsigned char>(token[i]) & 0xC0) != 0x80) return false;
  }
  return true;
}

TokenUsage::TokenUsage(const WordPieceTokenizer& tokenizer)
    : tokenizer_(&tokenizer), counts_(static_cast<size_t>(tokenizer.vocab().size()), 0) {}

void TokenUsage::add_text(std::string_view text) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) continue;
    ++lines_;
    const Encoding e = tokenizer_->encode(line, std::nullopt, kNoTruncation);
    // ids[0] is [CLS] and ids.back() [SEP], added by encode, not by the text.
    for (size_t i = 1; i + 1 < e.ids.size(); ++i) {
      ++counts_[static_cast<size_t>(e.ids[i])];
      ++tokens_;
    }
  }
}

void TokenUsage::add_file(const std::filesystem::path& file) {
  add_text(io::read_all(file));
}

PrunedVocab prune_vocab(const Vocab& full, std::span<const std::int64_t> counts) {
  if (counts.size() != static_cast<size_t>(full.size())) {
    throw std::invalid_argument("prune_vocab: " + std::to_string(counts.size()) +
                                " counts for a vocabulary of " + std::to_string(full.size()) +
                                " tokens (count with a tokenizer over that vocabulary)");
  }
  PrunedVocab out;
  std::vector<bool> special(counts.size(), false);
  for (const std::string& s : bert_special_tokens()) {
    const auto id = full.id(s);
    if (!id) throw DataError(full.source(), "no " + s + " token (every BERT vocabulary has it)");
    special[static_cast<size_t>(*id)] = true;
    out.tokens.push_back(s);
    ++out.specials;
  }
  for (size_t i = 0; i < counts.size(); ++i) {
    if (special[i]) continue;
    const std::string_view token = full.token(static_cast<int32_t>(i));
    // A token written on two lines of the full vocabulary: Vocab::id maps it to the later line,
    // the only id a tokenizer can produce; keep that one line, so no token appears twice.
    if (full.id(token) != static_cast<std::int32_t>(i)) continue;
    if (counts[i] > 0) {
      ++out.used;
    } else if (is_single_character(token)) {
      ++out.characters;
    } else {
      continue;
    }
    out.tokens.emplace_back(token);
  }
  return out;
}

void save_vocab(const std::filesystem::path& file, std::span<const std::string> tokens) {
  std::string text;
  for (const std::string& t : tokens) {
    if (t.find_first_of("\n\r") != std::string::npos) {
      throw std::invalid_argument("save_vocab: a token holds a line break: '" +
                                  quote_for_message(t) + "'");
    }
    text += t;
    text += '\n';
  }
  io::write_atomically(file, text);
}

}  // namespace edgetune::data
