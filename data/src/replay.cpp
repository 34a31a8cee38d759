// The replay buffer: Algorithm R with a byte limit, and replay.json (see replay.h).
#include "edgetune/data/replay.h"

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>

#include "edgetune/core/file_io.h"
#include "edgetune/data/error.h"
#include "edgetune/data/shuffle.h"
#include "io.h"

namespace edgetune::data {

namespace {

constexpr const char* kFormat = "edgetune-replay";

// The generator of the draws for the i-th example seen: a function of (seed, i, purpose) only.
Rng draw_rng(std::uint64_t seed, std::uint64_t i, std::uint64_t purpose) {
  return Rng(seed ^ (0x9E3779B97F4A7C15ULL * (i + 1)) ^ (0xC2B2AE3D27D4EB4FULL * purpose));
}

}  // namespace

ReplayBuffer::ReplayBuffer(std::size_t max_examples, std::size_t max_bytes, std::uint64_t seed)
    : max_examples_(max_examples), max_bytes_(max_bytes), seed_(seed), capacity_(max_examples) {}

std::size_t ReplayBuffer::example_bytes(const Example& e) {
  return e.text.size() + (e.text_pair ? e.text_pair->size() : 0) + e.label.size();
}

void ReplayBuffer::add(const Example& example) {
  const std::uint64_t i = seen_++;
  const std::size_t b = example_bytes(example);
  if (b > max_bytes_ || capacity_ == 0) return;
  Example kept{example.text, example.text_pair, example.label, -1, 0};
  if (held_.size() < capacity_) {
    held_.push_back(std::move(kept));
    bytes_ += b;
  } else {
    Rng rng = draw_rng(seed_, i, 0);
    const std::uint64_t j = rng.below(i + 1);
    if (j >= capacity_) return;
    bytes_ = bytes_ - example_bytes(held_[j]) + b;
    held_[j] = std::move(kept);
  }
  if (bytes_ <= max_bytes_) return;
  Rng rng = draw_rng(seed_, i, 1);
  while (bytes_ > max_bytes_) {
    const auto j = static_cast<std::size_t>(rng.below(held_.size()));
    bytes_ -= example_bytes(held_[j]);
    std::swap(held_[j], held_.back());
    held_.pop_back();
  }
  capacity_ = held_.size();
}

std::vector<Example> ReplayBuffer::sample(std::size_t n, std::uint64_t seed) const {
  if (n > held_.size()) {
    throw std::invalid_argument("replay buffer: " + std::to_string(n) + " examples asked of " +
                                std::to_string(held_.size()));
  }
  std::vector<std::size_t> index(held_.size());
  for (std::size_t i = 0; i < index.size(); ++i) index[i] = i;
  Rng rng(seed);
  std::vector<Example> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto j = i + static_cast<std::size_t>(rng.below(index.size() - i));
    std::swap(index[i], index[j]);
    out.push_back(held_[index[i]]);
  }
  return out;
}

void ReplayBuffer::save(const std::filesystem::path& file) const {
  nlohmann::json examples = nlohmann::json::array();
  for (const Example& e : held_) {
    nlohmann::json row = {{"text", e.text}, {"label", e.label}};
    if (e.text_pair) row["text_pair"] = *e.text_pair;
    examples.push_back(std::move(row));
  }
  const nlohmann::json j = {{"format", kFormat},        {"version", 1},
                            {"seed", seed_},            {"seen", seen_},
                            {"updates", updates_},      {"max_examples", max_examples_},
                            {"max_bytes", max_bytes_},  {"capacity", capacity_},
                            {"examples", std::move(examples)}};
  // Texts come from data files and may hold invalid UTF-8: write it replaced, never throw.
  io::write_atomically(file, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

ReplayBuffer ReplayBuffer::load(const std::filesystem::path& file) {
  const std::string name = file.string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(file, FileOrigin::Output));
  } catch (const FileError& e) {
    throw DataError(name, e.action() + " (" + e.reason() + ")");
  } catch (const nlohmann::json::exception& e) {
    throw DataError(name, std::string("invalid JSON: ") + e.what());
  }
  if (!j.is_object() || j.value("format", "") != kFormat || j.value("version", 0) != 1) {
    throw DataError(name, std::string("expected a replay buffer (\"format\": \"") + kFormat +
                              "\", \"version\": 1)");
  }
  auto count = [&](const char* key) -> std::uint64_t {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number_unsigned()) {
      throw DataError(name, std::string("expected \"") + key + "\" to be a non-negative integer");
    }
    return it->get<std::uint64_t>();
  };
  ReplayBuffer r(static_cast<std::size_t>(count("max_examples")), static_cast<std::size_t>(count("max_bytes")),
                 count("seed"));
  r.seen_ = count("seen");
  r.updates_ = count("updates");
  r.capacity_ = static_cast<std::size_t>(count("capacity"));
  const auto ex = j.find("examples");
  if (ex == j.end() || !ex->is_array()) throw DataError(name, "expected \"examples\" to be an array");
  for (std::size_t i = 0; i < ex->size(); ++i) {
    const nlohmann::json& row = (*ex)[i];
    const auto text = row.is_object() ? row.find("text") : row.end();
    const auto label = row.is_object() ? row.find("label") : row.end();
    if (text == row.end() || !text->is_string() || label == row.end() || !label->is_string()) {
      throw DataError(name, "example " + std::to_string(i) + ": expected {\"text\": string, \"label\": string}");
    }
    Example e{text->get<std::string>(), std::nullopt, label->get<std::string>(), -1, 0};
    if (const auto pair = row.find("text_pair"); pair != row.end()) {
      if (!pair->is_string()) throw DataError(name, "example " + std::to_string(i) + ": expected \"text_pair\" to be a string");
      e.text_pair = pair->get<std::string>();
    }
    r.bytes_ += example_bytes(e);
    r.held_.push_back(std::move(e));
  }
  if (r.held_.size() > r.capacity_ || r.capacity_ > r.max_examples_ || r.bytes_ > r.max_bytes_ ||
      r.held_.size() > r.seen_) {
    throw DataError(name, "holds " + std::to_string(r.held_.size()) + " examples (" + std::to_string(r.bytes_) +
                              " bytes) of " + std::to_string(r.seen_) +
                              " seen, beyond its capacity or limits: the file was changed by hand?");
  }
  return r;
}

}  // namespace edgetune::data
