// Vocab: vocab.txt <-> token ids (see vocab.h).
#include "edgetune/data/vocab.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "edgetune/data/error.h"
#include "io.h"

namespace edgetune::data {

Vocab Vocab::load(const std::filesystem::path& file) {
  return parse(io::read_all(file), io::display_name(file));
}

Vocab Vocab::parse(std::string_view bytes, std::string source) {
  std::string blob;
  std::vector<uint32_t> offsets{0};
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
    blob.append(bytes, start, stop - start);
    offsets.push_back(static_cast<uint32_t>(blob.size()));
    start = end + 1;
  }
  if (offsets.size() == 1) {
    throw DataError(source, "empty vocabulary (expected one token per line)");
  }
  return Vocab(std::move(blob), std::move(offsets), std::move(source));
}

Vocab::Vocab(const std::vector<std::string>& tokens, std::string source) : source_(std::move(source)) {
  offsets_.reserve(tokens.size() + 1);
  offsets_.push_back(0);
  for (const std::string& t : tokens) {
    blob_ += t;
    offsets_.push_back(static_cast<uint32_t>(blob_.size()));
  }
  build_index();
}

Vocab::Vocab(std::string blob, std::vector<uint32_t> offsets, std::string source)
    : blob_(std::move(blob)), offsets_(std::move(offsets)), source_(std::move(source)) {
  blob_.shrink_to_fit();
  offsets_.shrink_to_fit();
  build_index();
}

namespace {
size_t hash_token(std::string_view s) { return std::hash<std::string_view>{}(s); }
}  // namespace

void Vocab::build_index() {
  if (blob_.size() > std::numeric_limits<uint32_t>::max()) {
    throw DataError(source_, "the vocabulary holds more than 4 GiB of tokens");
  }
  size_t slots = 16;
  while (slots < 2 * offsets_.size()) slots *= 2;
  index_.assign(slots, -1);
  const size_t mask = slots - 1;
  for (int32_t i = 0; i < size(); ++i) {
    const std::string_view t = token(i);
    max_token_bytes_ = std::max(max_token_bytes_, t.size());
    size_t s = hash_token(t) & mask;
    // A token on two lines: the later line takes the slot, as in HF.
    while (index_[s] >= 0 && token(index_[s]) != t) s = (s + 1) & mask;
    index_[s] = i;
  }
}

std::optional<int32_t> Vocab::id(std::string_view token_text) const {
  const size_t mask = index_.size() - 1;
  for (size_t s = hash_token(token_text) & mask; index_[s] >= 0; s = (s + 1) & mask) {
    if (token(index_[s]) == token_text) return index_[s];
  }
  return std::nullopt;
}

std::string_view Vocab::token(int32_t id) const {
  if (id < 0 || id >= size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                            std::to_string(size()) + ")");
  }
  const auto i = static_cast<size_t>(id);
  return std::string_view(blob_).substr(offsets_[i], offsets_[i + 1] - offsets_[i]);
}

std::vector<std::string> Vocab::tokens() const {
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(size()));
  for (int32_t i = 0; i < size(); ++i) out.emplace_back(token(i));
  return out;
}

size_t Vocab::bytes() const {
  return blob_.capacity() + offsets_.capacity() * sizeof(uint32_t) + index_.capacity() * sizeof(int32_t);
}

}  // namespace edgetune::data
