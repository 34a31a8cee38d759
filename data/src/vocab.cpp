// Vocab: vocab.txt <-> token ids (see vocab.h).
#include "edgetune/data/vocab.h"

#include <stdexcept>

#include "edgetune/data/error.h"
#include "io.h"

namespace edgetune::data {

Vocab Vocab::load(const std::filesystem::path& file) {
  const std::string bytes = io::read_all(file);
  std::vector<std::string> tokens;
  size_t start = 0;
  while (start < bytes.size()) {
    size_t end = bytes.find('\n', start);
    if (end == std::string::npos) end = bytes.size();
    size_t stop = end;
    while (stop > start &&
           (bytes[stop - 1] == ' ' || bytes[stop - 1] == '\t' || bytes[stop - 1] == '\r' ||
            bytes[stop - 1] == '\v' || bytes[stop - 1] == '\f')) {
      --stop;
    }
    tokens.emplace_back(bytes, start, stop - start);
    start = end + 1;
  }
  if (tokens.empty()) {
    throw DataError(io::display_name(file), "empty vocabulary (expected one token per line)");
  }
  return Vocab(std::move(tokens), io::display_name(file));
}

Vocab::Vocab(std::vector<std::string> tokens, std::string source)
    : tokens_(std::move(tokens)), source_(std::move(source)) {
  ids_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) ids_[tokens_[i]] = static_cast<int32_t>(i);
}

std::optional<int32_t> Vocab::id(std::string_view token) const {
  const auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const std::string& Vocab::token(int32_t id) const {
  if (id < 0 || id >= size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                            std::to_string(size()) + ")");
  }
  return tokens_[static_cast<size_t>(id)];
}

}  // namespace edgetune::data
