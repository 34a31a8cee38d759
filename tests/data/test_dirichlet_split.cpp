// The non-IID client split (shuffle.h: gamma_draw, dirichlet_split): Gamma draws with the right
// mean and variance, a split that is a partition of the rows, the same for the same seed, skewed
// for a small alpha and near-even for a large one, and refused for impossible requests.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "edgetune/data/shuffle.h"

using namespace edgetune::data;

namespace {

// 300 rows of 3 labels, 100 each, interleaved.
std::vector<std::string> three_labels() {
  std::vector<std::string> out;
  for (int i = 0; i < 300; ++i) out.push_back(std::to_string(i % 3));
  return out;
}

// The largest share one label takes of one client's rows, averaged over the clients.
double mean_top_share(const std::vector<std::vector<size_t>>& shards, const std::vector<std::string>& labels) {
  double total = 0;
  for (const auto& rows : shards) {
    std::map<std::string, double> n;
    double top = 0;
    for (size_t i : rows) top = std::max(top, ++n[labels[i]]);
    total += top / static_cast<double>(rows.size());
  }
  return total / static_cast<double>(shards.size());
}

}  // namespace

TEST_CASE("gamma draws have the mean and variance of Gamma(shape, 1)", "[dirichlet]") {
  for (double shape : {0.1, 0.5, 1.0, 3.0}) {
    INFO("shape " << shape);
    Rng rng(7);
    const int n = 40000;
    double sum = 0, sum2 = 0;
    for (int i = 0; i < n; ++i) {
      const double x = gamma_draw(rng, shape);
      REQUIRE(x >= 0);
      sum += x;
      sum2 += x * x;
    }
    const double mean = sum / n, var = sum2 / n - mean * mean;
    // Mean shape and variance shape: within 4 standard errors (the mean's is sqrt(shape / n)).
    CHECK(std::fabs(mean - shape) <= 4 * std::sqrt(shape / n));
    CHECK(std::fabs(var - shape) <= 0.1 * shape);
  }
  Rng rng(1);
  CHECK_THROWS_AS(gamma_draw(rng, 0.0), std::invalid_argument);
}

TEST_CASE("dirichlet split: a partition of the rows, the same for the same seed", "[dirichlet]") {
  const auto labels = three_labels();
  const auto shards = dirichlet_split(labels, 5, 0.5, 11);
  REQUIRE(shards.size() == 5);
  std::vector<int> seen(labels.size(), 0);
  for (const auto& rows : shards) {
    REQUIRE_FALSE(rows.empty());
    REQUIRE(std::is_sorted(rows.begin(), rows.end()));
    for (size_t i : rows) ++seen[i];
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  CHECK(dirichlet_split(labels, 5, 0.5, 11) == shards);
  CHECK(dirichlet_split(labels, 5, 0.5, 12) != shards);
}

TEST_CASE("dirichlet split: small alpha skews each client's labels, large alpha evens them", "[dirichlet]") {
  const auto labels = three_labels();
  // Evenly mixed clients have a top share of 1/3; one-label clients 1.
  const double skewed = mean_top_share(dirichlet_split(labels, 4, 0.1, 3), labels);
  const double even = mean_top_share(dirichlet_split(labels, 4, 1000.0, 3), labels);
  INFO("alpha 0.1: " << skewed << ", alpha 1000: " << even);
  CHECK(skewed > 0.75);
  CHECK(even < 0.40);
}

TEST_CASE("dirichlet split: impossible requests are refused", "[dirichlet]") {
  const auto labels = three_labels();
  CHECK_THROWS_AS(dirichlet_split(labels, 0, 0.5, 1), std::invalid_argument);
  CHECK_THROWS_AS(dirichlet_split(labels, 301, 0.5, 1), std::invalid_argument);
  CHECK_THROWS_AS(dirichlet_split(labels, 3, 0.0, 1), std::invalid_argument);
  CHECK_THROWS_AS(dirichlet_split(labels, 3, -1.0, 1), std::invalid_argument);
  // One row per client is possible only when every draw gives each client one: with 2 rows of one
  // label and alpha 1e-4, nearly every draw gives all to one client.
  CHECK_THROWS_WITH(dirichlet_split({"a", "a"}, 2, 1e-4, 1), Catch::Contains("raise alpha"));
  CHECK(dirichlet_split({"a", "b"}, 1, 0.5, 1) == std::vector<std::vector<size_t>>{{0, 1}});
}
