// Vocabulary pruning: a WordPiece vocabulary (bert-base-uncased's 30,522 tokens) cut down to the
// tokens a corpus uses, so that a small model does not spend most of its bytes on embedding rows
// it never trains.
//
// What is kept, in this order (ids of the pruned vocabulary):
//   1. the specials [PAD] [UNK] [CLS] [SEP] [MASK], first, so [PAD] = 0 (BERT's padding id);
//   2. in the full vocabulary's relative order, every other token that is
//      - used: produced when the corpus is tokenized with the full vocabulary, or
//      - a single character ("x", one code point) or a single continuation character ("##x").
// Why the single characters: with every "x" and "##x" of the full vocabulary kept, any word the
// full vocabulary can spell still tokenizes (character by character at worst), so text unlike the
// corpus does not fall to [UNK] more often than with the full vocabulary.
// Why the corpus tokenizes exactly as before: WordPiece takes the longest piece of the vocabulary
// at each position of a word. The pruned vocabulary is a subset of the full one holding every piece
// the full one chose on the corpus, so at each position the longest piece present is still the one
// the full vocabulary chose, and a word that was [UNK] (no spelling) stays [UNK].
//
// What this is not: a vocabulary learner (no new merges or pieces), and not frequency-based: a
// token used once is kept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "edgetune/data/tokenizer.h"
#include "edgetune/data/vocab.h"

namespace edgetune::data {

// The specials of BERT, in the order a pruned vocabulary starts with.
const std::vector<std::string>& bert_special_tokens();  // [PAD] [UNK] [CLS] [SEP] [MASK]

// True for a token of one code point ("a", "é", "中") or "##" and one code point ("##a").
// Ill-formed UTF-8 counts each byte as one character.
bool is_single_character(std::string_view token);

// Counts how often each id of a tokenizer's vocabulary appears when texts are tokenized with it
// ([CLS] and [SEP] not counted: they are not in the text).
class TokenUsage {
 public:
  explicit TokenUsage(const WordPieceTokenizer& tokenizer);

  // Tokenizes `text` line by line (WordPiece never joins across whitespace, so the lines give the
  // same tokens as the whole text) and counts the ids.
  void add_text(std::string_view text);
  // add_text of a file's bytes. Throws DataError naming the file when it cannot be read.
  void add_file(const std::filesystem::path& file);

  // (V) uses of each id.
  const std::vector<std::int64_t>& counts() const { return counts_; }
  std::int64_t tokens() const { return tokens_; }  // tokens counted
  std::int64_t lines() const { return lines_; }    // non-empty lines tokenized

 private:
  const WordPieceTokenizer* tokenizer_;
  std::vector<std::int64_t> counts_;
  std::int64_t tokens_ = 0;
  std::int64_t lines_ = 0;
};

struct PrunedVocab {
  std::vector<std::string> tokens;  // the pruned vocabulary, in id order
  // Why each token was kept (each counted once, under the first reason that holds):
  std::int32_t specials = 0;    // the five specials
  std::int32_t used = 0;        // used by the corpus
  std::int32_t characters = 0;  // unused single characters and "##" single characters
};

// The pruned vocabulary of `full` for the per-id use counts `counts` (TokenUsage::counts() of a
// tokenizer over `full`). Requires counts.size() == full.size() (else std::invalid_argument) and
// every special in `full` (else DataError naming the vocabulary and the missing token).
PrunedVocab prune_vocab(const Vocab& full, std::span<const std::int64_t> counts);

// Writes tokens as vocab.txt (one per line, "\n" after each), atomically. Throws DataError naming
// the file on failure, and std::invalid_argument for a token holding a line break (it would not
// read back as one token).
void save_vocab(const std::filesystem::path& file, std::span<const std::string> tokens);

}  // namespace edgetune::data
