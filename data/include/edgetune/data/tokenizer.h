// WordPieceTokenizer: text -> BERT token ids, with the behaviour of Hugging Face's
// BertTokenizerFast (the Rust `tokenizers` library: BertNormalizer, BertPreTokenizer, WordPiece,
// BertProcessing, longest-first truncation), checked against goldens that library made
// (tests/golden/tokenizer).
//
// Not here: padding and batching (batch.h), reading data files (reader.h), the [MASK] logic of
// masked-LM pretraining, offsets back into the text.
//
// Deliberate differences from Hugging Face, all on inputs HF handles badly:
//  - invalid UTF-8 is accepted: each maximal ill-formed subsequence counts as one U+FFFD (which
//    cleaning drops, as HF does after Python's decode(errors='replace')), and the count is
//    reported in Encoding::invalid_utf8;
//  - a max_length smaller than the number of special tokens (2, or 3 for a pair) is rejected;
//    HF's release build skips truncation altogether then, through an unsigned underflow;
//  - lowercasing uses utf8proc's Unicode (15.0 for libutf8proc 2.8); the Rust standard library
//    behind HF may know newer letters (Unicode 16 added a few scripts with case): only code points
//    that utf8proc does not know as assigned can lowercase differently.
// Faithful to HF's Rust library where it differs from the older Python BertTokenizer: Greek
// capital sigma always lowercases to σ (Python's str.lower() gives ς at the end of a word), the
// character classes (control, punctuation, nonspacing mark) are those of HF's tables, which are
// older than current Unicode (bert_unicode_tables.inc, generated from the reference; HF's NFD
// likewise predates Unicode 13 and leaves U+11938 whole), and
// longest-first truncation of a pair splits the budget as HF's Rust code does, not one token at
// a time as Python did.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edgetune/data/vocab.h"

namespace edgetune::data {

struct TokenizerOptions {
  // Lowercase the text (BERT "uncased" models and bert-base-chinese).
  bool do_lower_case = true;
  // Remove accents (NFD, then drop nonspacing marks). Unset: the same as do_lower_case.
  std::optional<bool> strip_accents;
  // Put spaces around CJK ideographs so that each is its own word.
  bool tokenize_chinese_chars = true;
  // A word longer than this (in code points, after normalization) becomes [UNK].
  int max_input_chars_per_word = 100;
};

// One encoded example: [CLS] A [SEP] or [CLS] A [SEP] B [SEP]. All vectors have length T.
struct Encoding {
  std::vector<int32_t> ids;             // (T) token ids
  std::vector<int32_t> type_ids;        // (T) 0 for [CLS] A [SEP], 1 for B [SEP]
  std::vector<int32_t> attention_mask;  // (T) all 1: padding is added when batching
  int invalid_utf8 = 0;                 // ill-formed UTF-8 subsequences met in the input
  bool truncated = false;               // tokens were cut to fit max_length
};

// No truncation: encode(a, b, kNoTruncation).
inline constexpr int kNoTruncation = std::numeric_limits<int>::max();

class WordPieceTokenizer {
 public:
  // Requires the vocabulary to hold [PAD] [UNK] [CLS] [SEP] [MASK] (else DataError naming the
  // missing one) and options.max_input_chars_per_word >= 1 (else std::invalid_argument).
  WordPieceTokenizer(Vocab vocab, TokenizerOptions options = {});

  // WordPiece tokens of `text`, without [CLS] / [SEP] around them. A special token written in
  // the text ("[SEP]", exact case) is kept as that token, as HF does.
  std::vector<std::string> tokenize(std::string_view text) const;

  // The words of `text` after normalization and pre-tokenization (HF's normalize +
  // pre_tokenize_str), before WordPiece. For inspection and tests.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  // [CLS] a [SEP] (and b [SEP] when b is given), truncated to at most max_length tokens with
  // HF's longest_first strategy. For a pair, with n = max_length - 3 tokens to share: when the
  // shorter text fits in n/2 it is kept and the longer one gets the rest; else both are cut to
  // n/2, the longer one (b when they are equal) getting the extra token of an odd n.
  // Any bytes are accepted (see Encoding::invalid_utf8).
  // Requires max_length >= 2 for a single text and >= 3 for a pair (else std::invalid_argument).
  Encoding encode(std::string_view a, std::optional<std::string_view> b = {},
                  int max_length = 512) const;

  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t mask_id() const { return mask_id_; }
  const Vocab& vocab() const { return vocab_; }
  // Heap bytes of the vocabulary and the lookup tables, for the memory accountant.
  size_t bytes() const { return vocab_.bytes() + continuation_.bytes(); }
  const TokenizerOptions& options() const { return options_; }

 private:
  // Open-addressing table from token bytes to id: the hot lookup of WordPiece.
  class PieceTable {
   public:
    void insert(std::string_view key, int32_t id);
    int32_t find(std::string_view key) const;  // -1 when absent
    size_t max_key_bytes() const { return max_key_bytes_; }
    size_t bytes() const { return slots_.capacity() * sizeof(Slot) + bytes_.capacity(); }

   private:
    struct Slot {
      uint64_t hash = 0;
      uint32_t offset = 0;
      uint32_t length = 0;
      int32_t id = -1;
    };
    void grow();
    std::vector<Slot> slots_;
    std::string bytes_;
    size_t used_ = 0;
    size_t max_key_bytes_ = 0;
  };

  // Ids of the text (HF's encode without the post-processor). Adds to *invalid the count of
  // ill-formed UTF-8 subsequences.
  void append_ids(std::string_view text, std::vector<int32_t>& out, int* invalid) const;
  // Normalizes and pre-tokenizes code points [begin, end) into words, calling emit(word) for each
  // word (UTF-8).
  template <class Emit>
  void for_each_word(const char32_t* begin, const char32_t* end, Emit&& emit) const;
  void word_piece(std::string_view word, size_t chars, std::vector<int32_t>& out) const;

  Vocab vocab_;
  TokenizerOptions options_;
  bool strip_accents_;
  int32_t pad_id_, unk_id_, cls_id_, sep_id_, mask_id_;
  // Tokens "##x" under the key "x", looked up inside a word (at the start of a word the
  // vocabulary's own index is the table).
  PieceTable continuation_;
};

// The tokenizer of a Hugging Face model folder: DIR/vocab.txt and, when present,
// DIR/tokenizer_config.json (`do_lower_case`, default true; `strip_accents`, null or bool;
// `tokenize_chinese_chars`, default true). Throws DataError naming the file when one is
// missing or malformed.
WordPieceTokenizer load_tokenizer_from_model_dir(const std::filesystem::path& dir);
// The same from the texts of vocab.txt and tokenizer_config.json (empty: the defaults) held in
// memory (a compressed model file's metadata); the sources name them in errors.
WordPieceTokenizer tokenizer_from_texts(std::string_view vocab_text, std::string vocab_source,
                                        std::string_view config_json, const std::string& config_source);

}  // namespace edgetune::data
