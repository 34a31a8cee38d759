// Vocab: a WordPiece vocabulary as BERT's vocab.txt holds it (one token per line, id = line
// number counted from 0). It is only the token <-> id mapping: tokenization is WordPieceTokenizer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace edgetune::data {

// Held compactly: every token's bytes in one string, an offset per id, and an open-addressing
// index of ids (4 bytes a slot, at most half full) hashed by the token's bytes: 4 to 16 bytes per
// token beside its text, where a string per token and a hash map node per token took over 80.
class Vocab {
 public:
  // Reads vocab.txt. Line i (from 0) is the token of id i; trailing ASCII whitespace of a line
  // (a "\r" of Windows line ends included) is not part of the token, as in Hugging Face. When a
  // token appears on two lines, id(token) is the later line, as in Hugging Face; token(id) is
  // still each line's text.
  // Throws DataError when the file cannot be read or has no lines.
  static Vocab load(const std::filesystem::path& file);
  // The same from the text of a vocab.txt held in memory; `source` names it in errors.
  static Vocab parse(std::string_view text, std::string source);

  // The same from tokens in id order (tests, vocabularies built in memory).
  // `source` names the vocabulary in error messages.
  explicit Vocab(const std::vector<std::string>& tokens, std::string source = "<vocab>");

  // Id of `token`, or nothing when the vocabulary does not hold it.
  std::optional<int32_t> id(std::string_view token) const;
  // Token of `id`, valid as long as the Vocab. Requires 0 <= id < size() (else std::out_of_range).
  std::string_view token(int32_t id) const;
  // Number of ids (lines), which is V, the row count of the embedding matrix.
  int32_t size() const { return static_cast<int32_t>(offsets_.size()) - 1; }
  // Every token in id order, copied (for tools and tests: token() reads without a copy).
  std::vector<std::string> tokens() const;
  // The longest token, in bytes.
  size_t max_token_bytes() const { return max_token_bytes_; }
  // Heap bytes of the tables (the blob, the offsets, the index), for the memory accountant.
  size_t bytes() const;
  // Where the vocabulary came from (its path, or the name given), for messages.
  const std::string& source() const { return source_; }

 private:
  Vocab(std::string blob, std::vector<uint32_t> offsets, std::string source);
  void build_index();

  std::string blob_;               // the tokens' bytes, back to back
  std::vector<uint32_t> offsets_;  // (V + 1) token i is blob_[offsets_[i], offsets_[i + 1])
  std::vector<int32_t> index_;     // open addressing by hash of the bytes; -1 marks a free slot
  size_t max_token_bytes_ = 0;
  std::string source_;
};

}  // namespace edgetune::data
