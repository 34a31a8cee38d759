// Rng (xoshiro256** seeded by splitmix64), permutations and the train/eval split (see shuffle.h).
#include "edgetune/data/shuffle.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace edgetune::data {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

}  // namespace

Rng::Rng(uint64_t seed) {
  for (uint64_t& word : s_) word = splitmix64(seed);
}

void Rng::set_state(const std::array<uint64_t, 4>& s) {
  if ((s[0] | s[1] | s[2] | s[3]) == 0) throw std::invalid_argument("Rng: all-zero state");
  s_ = s;
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

uint64_t Rng::below(uint64_t n) {
  if (n == 0) throw std::invalid_argument("Rng::below: n must be >= 1");
  // Lemire, "Fast random integer generation in an interval" (2019): the high word of x * n is
  // uniform once the low word is outside the first (2^64 mod n) values.
  unsigned __int128 m = static_cast<unsigned __int128>(next()) * n;
  auto low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(next()) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

double Rng::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::vector<size_t> permutation(size_t n, uint64_t seed) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  Rng rng(seed);
  shuffle(std::span<size_t>(order), rng);
  return order;
}

Split train_eval_split(size_t n, double eval_fraction, uint64_t seed) {
  if (!(eval_fraction >= 0.0 && eval_fraction <= 1.0)) {
    throw std::invalid_argument("train_eval_split: eval_fraction must be in [0, 1]");
  }
  size_t n_eval = static_cast<size_t>(std::llround(static_cast<double>(n) * eval_fraction));
  if (n >= 2 && eval_fraction > 0.0 && eval_fraction < 1.0)
    n_eval = std::clamp<size_t>(n_eval, 1, n - 1);
  n_eval = std::min(n_eval, n);
  const std::vector<size_t> order = permutation(n, seed);
  Split split;
  split.eval.assign(order.begin(), order.begin() + static_cast<long>(n_eval));
  split.train.assign(order.begin() + static_cast<long>(n_eval), order.end());
  std::sort(split.eval.begin(), split.eval.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

}  // namespace edgetune::data
