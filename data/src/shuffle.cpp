// Rng (xoshiro256** seeded by splitmix64), permutations and the train/eval split (see shuffle.h).
#include "edgetune/data/shuffle.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>

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

double normal_draw(Rng& rng) {
  const double u1 = rng.uniform();
  const double u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);
}

double gamma_draw(Rng& rng, double shape) {
  if (!(shape > 0.0) || !std::isfinite(shape)) throw std::invalid_argument("gamma_draw: shape must be > 0");
  if (shape < 1.0) return gamma_draw(rng, shape + 1.0) * std::pow(rng.uniform(), 1.0 / shape);
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    const double x = normal_draw(rng);
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    const double u = rng.uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

std::vector<std::vector<size_t>> dirichlet_split(const std::vector<std::string>& labels, int clients,
                                                 double alpha, uint64_t seed) {
  if (!(alpha > 0.0) || !std::isfinite(alpha)) {
    std::ostringstream m;
    m << "the Dirichlet concentration must be a positive number, got " << alpha;
    throw std::invalid_argument(m.str());
  }
  if (clients < 1 || static_cast<size_t>(clients) > labels.size()) {
    throw std::invalid_argument(std::to_string(clients) + " clients for " + std::to_string(labels.size()) +
                                " rows (at least 1 client, at most one per row)");
  }
  // Rows of each label, labels in order of first appearance.
  std::vector<std::vector<size_t>> by_label;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto [it, added] = index.emplace(labels[i], by_label.size());
    if (added) by_label.emplace_back();
    by_label[it->second].push_back(i);
  }
  const size_t k = static_cast<size_t>(clients);
  Rng rng(seed);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    std::vector<std::vector<size_t>> out(k);
    for (std::vector<size_t> rows : by_label) {
      shuffle(std::span<size_t>(rows), rng);
      std::vector<double> p(k);
      double sum = 0;
      for (double& x : p) sum += (x = gamma_draw(rng, alpha));
      if (!(sum > 0.0)) {
        // Every draw underflowed (a tiny alpha): the limit of the Dirichlet as alpha -> 0, all
        // rows of the label to one client.
        p.assign(k, 0.0);
        p[static_cast<size_t>(rng.below(k))] = 1.0;
        sum = 1.0;
      }
      double cum = 0;
      size_t begin = 0;
      for (size_t c = 0; c < k; ++c) {
        cum += p[c];
        const size_t end = c + 1 == k ? rows.size()
                                      : std::min(rows.size(), static_cast<size_t>(std::llround(
                                                                  cum / sum * static_cast<double>(rows.size()))));
        out[c].insert(out[c].end(), rows.begin() + static_cast<long>(begin), rows.begin() + static_cast<long>(end));
        begin = std::max(begin, end);
      }
    }
    if (std::all_of(out.begin(), out.end(), [](const auto& rows) { return !rows.empty(); })) {
      for (auto& rows : out) std::sort(rows.begin(), rows.end());
      return out;
    }
  }
  throw std::runtime_error("dirichlet_split: in 1000 draws some client always got no row (alpha " +
                           std::to_string(alpha) + ", " + std::to_string(clients) + " clients, " +
                           std::to_string(labels.size()) + " rows): raise alpha or use fewer clients");
}

}  // namespace edgetune::data
