// The replay buffer of continual updates: a bounded, uniform random sample of every labelled
// example a run has trained on, kept in the run folder (replay.json) so that a later update
// rehearses what came before. Not here: mixing it into an update's rows (engine/update.h).
//
// Sampling is Vitter's Algorithm R with a capacity of k examples: the i-th example seen (from 0)
// is kept while fewer than k are held; after that it replaces held example j when j < k, for j
// uniform in [0, i]. Every example seen is then held with probability k / seen. The draw for the
// i-th example depends only on (seed, i), so the buffer is the same for the same seed and the same
// examples in the same order, whether they came in one call or over many updates.
//
// A limit in bytes (of text, text pair and label) bounds it too: when an addition takes the held
// bytes over it, held examples drawn uniformly (from (seed, i)) are dropped until it fits, and k
// shrinks to what is left. Dropping uniformly from a uniform sample leaves a uniform sample, so the
// inclusion probability stays k / seen with the smaller k. An example longer than the byte limit
// by itself is counted as seen and never held.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "edgetune/data/reader.h"

namespace edgetune::data {

class ReplayBuffer {
 public:
  // An empty buffer holding at most max_examples examples (0 keeps none) and max_bytes bytes.
  ReplayBuffer(std::size_t max_examples, std::size_t max_bytes, std::uint64_t seed);

  // One step of Algorithm R for `example` (its text, text pair and label are kept; label_id and
  // line are not meaningful in the buffer and are reset to -1 and 0).
  void add(const Example& example);

  const std::vector<Example>& examples() const { return held_; }
  std::size_t size() const { return held_.size(); }
  std::uint64_t seen() const { return seen_; }       // examples ever offered to add()
  std::size_t bytes() const { return bytes_; }        // sum of example_bytes over the held ones
  std::size_t capacity() const { return capacity_; }  // k: max_examples, or less after byte drops
  std::size_t max_examples() const { return max_examples_; }
  std::size_t max_bytes() const { return max_bytes_; }
  std::uint64_t seed() const { return seed_; }
  // Updates applied to the run so far (the engine counts them here, beside the examples).
  std::uint64_t updates() const { return updates_; }
  void set_updates(std::uint64_t n) { updates_ = n; }

  // n held examples drawn without replacement (a seeded partial Fisher-Yates), in draw order.
  // Requires n <= size() (else std::invalid_argument).
  std::vector<Example> sample(std::size_t n, std::uint64_t seed) const;

  // replay.json: {"format": "edgetune-replay", "version": 1, "seed", "seen", "updates",
  // "max_examples", "max_bytes", "capacity", "examples": [{"text", "text_pair"?, "label"}]},
  // written through core's atomic writer. load() reads it through core's read_file and throws
  // DataError naming the file and what was expected.
  void save(const std::filesystem::path& file) const;
  static ReplayBuffer load(const std::filesystem::path& file);

  // The bytes an example counts for: text, text pair and label.
  static std::size_t example_bytes(const Example& example);

 private:
  std::size_t max_examples_, max_bytes_;
  std::uint64_t seed_;
  std::size_t capacity_;
  std::uint64_t seen_ = 0;
  std::uint64_t updates_ = 0;
  std::size_t bytes_ = 0;
  std::vector<Example> held_;
};

}  // namespace edgetune::data
