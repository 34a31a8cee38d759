// Vocab: a WordPiece vocabulary as BERT's vocab.txt holds it (one token per line, id = line
// number counted from 0). It is only the token <-> id mapping: tokenization is WordPieceTokenizer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace edgetune::data {

class Vocab {
 public:
  // Reads vocab.txt. Line i (from 0) is the token of id i; trailing ASCII whitespace of a line
  // (a "\r" of Windows line ends included) is not part of the token, as in Hugging Face. When a
  // token appears on two lines, id(token) is the later line, as in Hugging Face; token(id) is
  // still each line's text.
  // Throws DataError when the file cannot be read or has no lines.
  static Vocab load(const std::filesystem::path& file);

  // The same from tokens in id order (tests, vocabularies built in memory).
  // `source` names the vocabulary in error messages.
  explicit Vocab(std::vector<std::string> tokens, std::string source = "<vocab>");

  // Id of `token`, or nothing when the vocabulary does not hold it.
  std::optional<int32_t> id(std::string_view token) const;
  // Token of `id`. Requires 0 <= id < size() (else std::out_of_range).
  const std::string& token(int32_t id) const;
  // Number of ids (lines), which is V, the row count of the embedding matrix.
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  const std::vector<std::string>& tokens() const { return tokens_; }
  // Where the vocabulary came from (its path, or the name given), for messages.
  const std::string& source() const { return source_; }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> ids_;
  std::string source_;
};

}  // namespace edgetune::data
