// LabelMap: class labels as written in data files <-> class ids 0..K-1, saved as labels.json.
// Not here: reading the labels from files (reader.h), one-hot or loss code.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace edgetune::data {

struct Dataset;

class LabelMap {
 public:
  // The map for a set of labels (any order, repeats allowed), by this rule:
  //  - all labels are the integers 0..K-1 (written in decimal, no sign or leading zero): each
  //    keeps its value as id (SST-2's 0/1 stay 0/1);
  //  - all labels are integers, but not 0..K-1 (say -1/1 or 1..5): ids in numeric order;
  //  - otherwise ids in byte-wise sorted order of the labels ("ham" 0, "spam" 1).
  // A model's own order, when it has one, is given with the constructor instead.
  // Requires at least one label (else std::invalid_argument).
  static LabelMap from_labels(const std::vector<std::string>& labels);
  // The same over the labels of a dataset's examples.
  static LabelMap from_dataset(const Dataset& dataset);

  // An explicit order: id i is id2label[i] (a model config's id2label). Requires a non-empty
  // list of distinct, non-empty labels (else std::invalid_argument).
  explicit LabelMap(std::vector<std::string> id2label);

  // labels.json: {"id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}}, the
  // layout of a Hugging Face config. load() also accepts "id2label" as a JSON array and ignores
  // "label2id". Throws DataError naming the file when it is missing or malformed. labels.json
  // is a file edgetune writes: read as core's FileOrigin::Output (file_io.h), so while the current
  // context holds a key it must be encrypted with it.
  static LabelMap load(const std::filesystem::path& file);
  // Writes labels.json atomically (temporary file, flush, rename). Throws DataError on failure.
  void save(const std::filesystem::path& file) const;
  std::string to_json() const;

  std::optional<int32_t> id(std::string_view label) const;
  // Requires 0 <= id < size() (else std::out_of_range).
  const std::string& label(int32_t id) const;
  int32_t size() const { return static_cast<int32_t>(id2label_.size()); }
  const std::vector<std::string>& id2label() const { return id2label_; }

  // Sets Example::label_id of every example. Throws DataError "<file>:<line>: unknown label ..."
  // for a label not in the map.
  void assign(Dataset& dataset) const;

 private:
  std::vector<std::string> id2label_;
  std::vector<size_t> sorted_;  // indices of id2label_ in label order, for lookup
};

}  // namespace edgetune::data
