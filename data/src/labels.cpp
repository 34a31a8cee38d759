// LabelMap (see labels.h for the id rule and the labels.json layout).
#include "edgetune/data/labels.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "edgetune/data/error.h"
#include "edgetune/data/reader.h"
#include "io.h"

namespace edgetune::data {
namespace {

// The value of a label written as a decimal integer ("-12", "0", "7"; no "+", no leading zero,
// fits in 64 bits), or nothing.
std::optional<int64_t> as_integer(std::string_view s) {
  std::string_view digits = s;
  if (!digits.empty() && digits.front() == '-') digits.remove_prefix(1);
  if (digits.empty() || (digits.size() > 1 && digits.front() == '0')) return std::nullopt;
  if (s == "-0") return std::nullopt;
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

}  // namespace

LabelMap LabelMap::from_labels(const std::vector<std::string>& labels) {
  if (labels.empty()) throw std::invalid_argument("LabelMap::from_labels: no labels");
  std::vector<std::string> distinct = labels;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());

  std::vector<std::pair<int64_t, std::string>> numeric;
  for (const std::string& l : distinct) {
    const auto v = as_integer(l);
    if (!v) break;
    numeric.emplace_back(*v, l);
  }
  if (numeric.size() == distinct.size()) {
    std::sort(numeric.begin(), numeric.end());
    distinct.clear();
    for (auto& [value, text] : numeric) distinct.push_back(std::move(text));
    // 0..K-1 in numeric order is exactly "id = value".
  }
  return LabelMap(std::move(distinct));
}

LabelMap LabelMap::from_dataset(const Dataset& dataset) {
  std::vector<std::string> labels;
  labels.reserve(dataset.examples.size());
  for (const Example& e : dataset.examples) labels.push_back(e.label);
  if (labels.empty())
    throw DataError(dataset.source, "no labelled rows to build the label map from");
  return from_labels(labels);
}

LabelMap::LabelMap(std::vector<std::string> id2label) : id2label_(std::move(id2label)) {
  if (id2label_.empty()) throw std::invalid_argument("LabelMap: no labels");
  sorted_.resize(id2label_.size());
  for (size_t i = 0; i < sorted_.size(); ++i) sorted_[i] = i;
  std::sort(sorted_.begin(), sorted_.end(),
            [&](size_t a, size_t b) { return id2label_[a] < id2label_[b]; });
  for (size_t i = 0; i < sorted_.size(); ++i) {
    if (id2label_[sorted_[i]].empty()) throw std::invalid_argument("LabelMap: an empty label");
    if (i > 0 && id2label_[sorted_[i]] == id2label_[sorted_[i - 1]]) {
      throw std::invalid_argument("LabelMap: label \"" + quote_for_message(id2label_[sorted_[i]]) +
                                  "\" appears twice");
    }
  }
}

std::optional<int32_t> LabelMap::id(std::string_view label) const {
  const auto it = std::lower_bound(sorted_.begin(), sorted_.end(), label,
                                   [&](size_t i, std::string_view l) { return id2label_[i] < l; });
  if (it == sorted_.end() || id2label_[*it] != label) return std::nullopt;
  return static_cast<int32_t>(*it);
}

const std::string& LabelMap::label(int32_t id) const {
  if (id < 0 || id >= size()) {
    throw std::out_of_range("label id " + std::to_string(id) + " is outside the label map (size " +
                            std::to_string(size()) + ")");
  }
  return id2label_[static_cast<size_t>(id)];
}

void LabelMap::assign(Dataset& dataset) const {
  for (Example& e : dataset.examples) {
    const auto i = id(e.label);
    if (!i) {
      std::string known;
      for (size_t k = 0; k < id2label_.size() && k < 10; ++k) {
        known += (k ? ", " : "") + quote_for_message(id2label_[k], 30);
      }
      throw DataError(dataset.source, e.line,
                      "unknown label \"" + quote_for_message(e.label) + "\" (expected one of: " +
                          known + (id2label_.size() > 10 ? ", ..." : "") + ")");
    }
    e.label_id = *i;
  }
}

std::string LabelMap::to_json() const {
  nlohmann::ordered_json j;
  nlohmann::ordered_json id2label = nlohmann::ordered_json::object();
  nlohmann::ordered_json label2id = nlohmann::ordered_json::object();
  for (size_t i = 0; i < id2label_.size(); ++i) {
    id2label[std::to_string(i)] = id2label_[i];
    label2id[id2label_[i]] = static_cast<int64_t>(i);
  }
  j["id2label"] = std::move(id2label);
  j["label2id"] = std::move(label2id);
  // Labels come from data files and may hold invalid UTF-8: write it replaced, never throw.
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

void LabelMap::save(const std::filesystem::path& file) const {
  io::write_atomically(file, to_json());
}

LabelMap LabelMap::load(const std::filesystem::path& file) {
  const std::string name = io::display_name(file);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::read_all(file, FileOrigin::Output));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(name, std::string("invalid JSON: ") + e.what());
  }
  const auto it = j.is_object() ? j.find("id2label") : j.end();
  if (it == j.end()) throw DataError(name, "expected an object with \"id2label\"");
  std::vector<std::string> labels;
  if (it->is_array()) {
    for (const auto& v : *it) {
      if (!v.is_string()) throw DataError(name, "expected \"id2label\" to hold strings");
      labels.push_back(v.get<std::string>());
    }
  } else if (it->is_object()) {
    labels.resize(it->size());
    std::vector<bool> seen(it->size(), false);
    for (const auto& [key, v] : it->items()) {
      const auto index = as_integer(key);
      if (!index || *index < 0 || static_cast<size_t>(*index) >= labels.size() ||
          seen[static_cast<size_t>(*index)] || !v.is_string()) {
        throw DataError(
            name, "expected \"id2label\" to map each id 0.." + std::to_string(labels.size() - 1) +
                      " to a label string; bad entry \"" + quote_for_message(key) + "\"");
      }
      seen[static_cast<size_t>(*index)] = true;
      labels[static_cast<size_t>(*index)] = v.get<std::string>();
    }
  } else {
    throw DataError(name, "expected \"id2label\" to be an object or an array");
  }
  try {
    return LabelMap(std::move(labels));
  } catch (const std::invalid_argument& e) {
    throw DataError(name, e.what());
  }
}

}  // namespace edgetune::data
