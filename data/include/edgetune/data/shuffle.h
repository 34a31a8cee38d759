// Deterministic randomness for data order: a seeded PRNG (xoshiro256**, seeded through
// splitmix64), Fisher-Yates shuffling and a seeded train/eval split. The same seed gives the same
// order on every platform and standard library (std::shuffle and the std distributions do not
// promise that). Not for cryptography; not the weight initialisation of other layers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace edgetune::data {

// xoshiro256** 1.0 (Blackman and Vigna), its 256-bit state filled by splitmix64 from the seed.
class Rng {
 public:
  explicit Rng(uint64_t seed);

  // The next 64 random bits.
  uint64_t next();
  // Uniform in [0, n). Requires n >= 1. Unbiased (Lemire's multiply-and-reject).
  uint64_t below(uint64_t n);
  // Uniform in [0, 1), 53 random bits.
  double uniform();

  // The whole state, to save in a checkpoint and restore on resume.
  std::array<uint64_t, 4> state() const { return s_; }
  // Requires a state from state() (all zero is not a valid state: std::invalid_argument).
  void set_state(const std::array<uint64_t, 4>& s);

 private:
  std::array<uint64_t, 4> s_;
};

// Fisher-Yates: for i from the last index down to 1, swap item i with item rng.below(i + 1).
template <class T>
void shuffle(std::span<T> items, Rng& rng) {
  for (size_t i = items.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng.below(i));
    if (j != i - 1) std::swap(items[i - 1], items[j]);
  }
}

// 0..n-1 shuffled with Rng(seed).
std::vector<size_t> permutation(size_t n, uint64_t seed);

// Row indices of a train/eval split of n rows. The rows are permuted with Rng(seed) and the first
// round(n * eval_fraction) go to eval, at least 1 and at most n - 1 when n >= 2 and
// 0 < eval_fraction < 1. Both lists are sorted ascending (the file's order); shuffle the train
// rows per epoch with shuffle(). Requires 0 <= eval_fraction <= 1 (else std::invalid_argument).
struct Split {
  std::vector<size_t> train;
  std::vector<size_t> eval;
};
Split train_eval_split(size_t n, double eval_fraction, uint64_t seed);

// A standard normal draw by Box-Muller: sqrt(-2 log(1 - u1)) cos(2 pi u2), two uniform() draws
// (1 - u1 is in (0, 1], so the log is finite). Platform-independent, as the generator.
double normal_draw(Rng& rng);

// A Gamma(shape, 1) draw (Marsaglia and Tsang 2000; shape < 1 as Gamma(shape + 1) U^(1/shape)),
// from normal draws by Box-Muller. Requires shape > 0.
double gamma_draw(Rng& rng, double shape);

// A non-IID split of labelled rows over `clients`, as federated learning benchmarks make one
// (Hsu, Qi, Brown 2019): for each label, in order of first appearance, its rows are shuffled and
// divided among the clients in proportions drawn from a symmetric Dirichlet(alpha) (normalized
// Gamma(alpha) draws); the smaller alpha, the more each client's labels are skewed. All draws come
// from Rng(seed). When a client would get no row, the whole split is drawn again (the generator
// continues), at most 1000 times. Returns each client's row indices, ascending. Throws
// std::invalid_argument for alpha <= 0 or non-finite, clients < 1 or more clients than rows, and
// std::runtime_error when no draw gave every client a row.
std::vector<std::vector<size_t>> dirichlet_split(const std::vector<std::string>& labels, int clients,
                                                 double alpha, uint64_t seed);

}  // namespace edgetune::data
