// The federated round's protocol without a transport (engine/federated.h): FedAvg against the
// weighted mean element by element, secure aggregation against plain FedAvg within the
// fixed-point budget, what the server sees of one masked upload, clipping, the DP noise, and
// clients' rounds on the small fixture model.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <utility>
#include <vector>

#include "edgetune/data/error.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/engine/federated.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

std::vector<float> random_values(std::size_t n, std::uint64_t seed, double scale) {
  data::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(scale * (2 * rng.uniform() - 1));
  return v;
}

// Pearson correlation of two equally long series.
double correlation(const std::vector<double>& a, const std::vector<double>& b) {
  const double n = static_cast<double>(a.size());
  double ma = 0, mb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ma += a[i] / n;
    mb += b[i] / n;
  }
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

// A fresh key pair for each of `clients` clients, and their public keys.
std::pair<std::vector<federated::KeyPair>, std::vector<federated::PublicKey>> key_pairs(
    int clients) {
  std::vector<federated::KeyPair> keys;
  std::vector<federated::PublicKey> publics;
  for (int i = 0; i < clients; ++i) {
    keys.push_back(federated::make_key_pair());
    publics.push_back(keys.back().public_key);
  }
  return {keys, publics};
}

// `n` labelled rows, the labels 0 and 1 alternating, or all `only` when only >= 0.
fs::path write_rows(const fs::path& path, int n, int only = -1) {
  std::ofstream f(path);
  f << "sentence\tlabel\n";
  for (int i = 0; i < n; ++i) {
    const int label = only >= 0 ? only : i % 2;
    f << (label ? "a good day number " : "a bad day number ") << i << "\t" << label << "\n";
  }
  return path;
}

}  // namespace

TEST_CASE(
    "federated: FedAvg of deltas is the weighted mean of the clients' adapters, element by element",
    "[federated]") {
  const std::size_t p = 257;
  const std::vector<float> global = random_values(p, 1, 0.5);
  const std::vector<std::vector<float>> local = {random_values(p, 2, 0.5), random_values(p, 3, 0.5),
                                                 random_values(p, 4, 0.5)};
  const std::vector<double> n = {120, 30, 7};
  std::vector<double> sum(p, 0.0);
  for (std::size_t c = 0; c < local.size(); ++c) {
    std::vector<float> d(p);
    for (std::size_t k = 0; k < p; ++k) d[k] = local[c][k] - global[k];
    federated::accumulate(sum, d, n[c]);
  }
  std::vector<float> g = global;
  federated::apply_average(g, sum, n[0] + n[1] + n[2]);
  for (std::size_t k = 0; k < p; ++k) {
    const double mean =
        (n[0] * local[0][k] + n[1] * local[1][k] + n[2] * local[2][k]) / (n[0] + n[1] + n[2]);
    // The deltas are float differences (each within half an ulp of the exact one, ulps of at most
    // 2^-24 at |x| < 1), so the mean is within 2^-24 plus the float rounding of the result.
    REQUIRE(std::fabs(g[k] - mean) <= std::ldexp(1.0, -24) + std::ldexp(std::fabs(mean), -24));
  }
  CHECK_THROWS_AS(federated::apply_average(g, sum, 0.0), std::invalid_argument);
  std::vector<double> short_sum(p - 1);
  CHECK_THROWS_AS(federated::accumulate(short_sum, local[0], 1.0), std::invalid_argument);
}

TEST_CASE("federated: secure aggregation's sum equals plain FedAvg within the fixed-point budget",
          "[federated]") {
  const std::size_t p = 1000;
  const int clients = 4;
  const auto [keys, publics] = key_pairs(clients);
  const std::vector<double> n = {500, 20, 3, 77};
  std::vector<double> plain(p, 0.0);
  std::vector<std::vector<std::uint64_t>> uploads;
  for (int i = 0; i < clients; ++i) {
    const std::vector<float> d = random_values(p, 10 + static_cast<std::uint64_t>(i), 0.05);
    std::vector<float> u(p);
    for (std::size_t k = 0; k < p; ++k)
      u[k] = static_cast<float>(n[static_cast<std::size_t>(i)] * d[k]);
    federated::accumulate(plain, u, 1.0);
    uploads.push_back(
        federated::masked_upload(u, i, keys[static_cast<std::size_t>(i)], publics, 3));
  }
  const std::vector<double> secure = federated::unmask_sum(uploads);
  const double total = n[0] + n[1] + n[2] + n[3];
  std::vector<float> g_plain(p, 0.25f), g_secure(p, 0.25f);
  federated::apply_average(g_plain, plain, total);
  federated::apply_average(g_secure, secure, total);
  const double sum_budget = federated::fixed_point_sum_error(clients);
  REQUIRE(sum_budget == clients * std::ldexp(1.0, -25));
  for (std::size_t k = 0; k < p; ++k) {
    REQUIRE(std::fabs(secure[k] - plain[k]) <= sum_budget);
    // After dividing by the total weight and storing float32: the budget / total, plus one
    // rounding of each float32 result.
    REQUIRE(std::fabs(g_secure[k] - g_plain[k]) <= sum_budget / total + std::ldexp(1.0, -24));
  }
  // An upload missing from the sum leaves it masked: nothing near the plain sum.
  uploads.pop_back();
  const std::vector<double> partial = federated::unmask_sum(uploads);
  int near = 0;
  for (std::size_t k = 0; k < p; ++k) near += std::fabs(partial[k]) < 1e6;
  CHECK(near < 5);
}

TEST_CASE(
    "federated: the server's view of one client's masked upload is uniform and uncorrelated with "
    "the update",
    "[federated]") {
  const std::size_t p = 8192;
  const int clients = 3;
  const auto [keys, publics] = key_pairs(clients);
  // A structured update: a slow ramp, which an unmasked encoding shows plainly.
  std::vector<float> u(p);
  std::vector<double> ud(p);
  for (std::size_t k = 0; k < p; ++k)
    ud[k] = u[k] = static_cast<float>(static_cast<double>(k) / p - 0.5);
  const std::vector<std::uint64_t> m = federated::masked_upload(u, 1, keys[1], publics, 0);

  // Alone (no other client, no masks) the upload is the fixed-point encoding itself.
  const std::vector<federated::PublicKey> alone = {keys[1].public_key};
  const std::vector<std::uint64_t> bare = federated::masked_upload(u, 0, keys[1], alone, 0);
  const std::vector<double> decoded_bare = federated::unmask_sum({bare});
  for (std::size_t k = 0; k < p; ++k)
    REQUIRE(std::fabs(decoded_bare[k] - ud[k]) <= std::ldexp(1.0, -25));
  CHECK(correlation(decoded_bare, ud) > 0.999);

  // Masked: decoded as the server would decode a sum, the values carry nothing of the ramp.
  const std::vector<double> decoded = federated::unmask_sum({m});
  // |r| of independent series of n values is about N(0, 1/n): 5 / sqrt(8192) = 0.055.
  CHECK(std::fabs(correlation(decoded, ud)) < 5 / std::sqrt(static_cast<double>(p)));
  // The top 4 bits fall evenly into 16 bins: chi-square with 15 degrees of freedom, whose 99.99th
  // percentile is 44.3.
  std::vector<double> bins(16, 0.0);
  for (std::uint64_t x : m) bins[x >> 60] += 1;
  double chi2 = 0;
  const double expected = static_cast<double>(p) / 16;
  for (double b : bins) chi2 += (b - expected) * (b - expected) / expected;
  CHECK(chi2 < 44.3);
  // Each round's masks are new: the same update in the next round is uploaded as other values.
  const std::vector<std::uint64_t> next = federated::masked_upload(u, 1, keys[1], publics, 1);
  int same = 0;
  for (std::size_t k = 0; k < p; ++k) same += next[k] == m[k];
  CHECK(same == 0);
}

TEST_CASE(
    "federated: masked uploads refuse values outside the fixed-point range and bad client ids",
    "[federated]") {
  const federated::KeyPair k = federated::make_key_pair();
  const std::vector<federated::PublicKey> publics = {k.public_key};
  const std::vector<float> big = {1.0f, 4.3e9f};
  CHECK_THROWS_AS(federated::masked_upload(big, 0, k, publics, 0), std::range_error);
  const std::vector<float> nan = {std::nanf("")};
  CHECK_THROWS_AS(federated::masked_upload(nan, 0, k, publics, 0), std::range_error);
  const std::vector<float> ok = {1.0f};
  CHECK_THROWS_AS(federated::masked_upload(ok, 1, k, publics, 0), std::invalid_argument);
}

TEST_CASE("federated: clipping scales a delta to the norm and leaves a shorter one alone",
          "[federated]") {
  std::vector<float> d = {3, 4};
  CHECK(federated::clip_to_norm(d, 1.0) == 5.0);
  CHECK(d[0] == Approx(0.6f));
  CHECK(d[1] == Approx(0.8f));
  std::vector<float> e = {0.3f, 0.4f};
  CHECK(federated::clip_to_norm(e, 1.0) == Approx(0.5));
  CHECK(e[0] == 0.3f);
  CHECK_THROWS_AS(federated::clip_to_norm(e, 0.0), std::invalid_argument);
}

TEST_CASE("federated: the DP noise has mean 0 and standard deviation noise multiplier x clip",
          "[federated]") {
  const std::size_t n = 200000;
  std::vector<double> s(n, 0.0);
  federated::add_gaussian_noise(s, 1.5, 0.2, 7);
  double mean = 0, sq = 0;
  for (double x : s) mean += x / n;
  for (double x : s) sq += (x - mean) * (x - mean) / (n - 1);
  // Standard errors: sd / sqrt(n) = 6.7e-4 for the mean, about sd / sqrt(2n) = 4.7e-4 for the sd.
  CHECK(std::fabs(mean) < 5 * 0.3 / std::sqrt(static_cast<double>(n)));
  CHECK(std::fabs(std::sqrt(sq) - 0.3) < 5 * 0.3 / std::sqrt(2.0 * n));
  std::vector<double> again(n, 0.0);
  federated::add_gaussian_noise(again, 1.5, 0.2, 7);
  CHECK(again == s);
}

TEST_CASE(
    "federated: clients' rounds from one initial adapter, a one-class shard among them, averaged "
    "and evaluated",
    "[federated]") {
  test::TempDir dir("federated");
  TrainConfig c;
  c.model_dir = test::golden_dir() / "bert" / "small";
  c.quant = DType::Q4;
  c.batch_size = 4;
  c.max_steps = 3;
  c.threads = 1;
  c.eval_file = write_rows(dir.path / "eval.tsv", 16);
  federated::write_initial_adapter(c, {"0", "1"}, dir.path / "global");
  federated::Adapter global = federated::read_adapter(dir.path / "global");
  REQUIRE(global.labels == std::vector<std::string>{"0", "1"});
  const std::size_t p = federated::value_count(global);
  REQUIRE(p > 0);

  std::vector<federated::ClientUpdate> updates;
  const std::vector<fs::path> shards = {write_rows(dir.path / "a.tsv", 24),
                                        write_rows(dir.path / "b.tsv", 8, 1)};
  for (std::size_t i = 0; i < shards.size(); ++i) {
    TrainConfig ci = c;
    ci.eval_file.clear();
    ci.train_file = shards[i];
    ci.init_adapter = dir.path / "global";
    ci.out = dir.path / ("client-" + std::to_string(i));
    updates.push_back(federated::client_round(ci));
    REQUIRE(updates.back().delta.size() == p);
    // The trained adapter is the global one plus the delta.
    const std::vector<float> local = federated::values(federated::read_adapter(ci.out));
    const std::vector<float> g = federated::values(global);
    double moved = 0;
    for (std::size_t k = 0; k < p; ++k) {
      REQUIRE(g[k] + updates.back().delta[k] == Approx(local[k]).margin(1e-6));
      moved += std::fabs(updates.back().delta[k]);
    }
    CHECK(moved > 0);
  }
  CHECK(updates[0].examples == 24);
  CHECK(updates[1].examples == 8);
  // The one-class shard trained the head of both classes: its labels are the global adapter's.
  CHECK(federated::read_adapter(dir.path / "client-1").labels == global.labels);

  std::vector<double> sum(p, 0.0);
  for (const auto& u : updates)
    federated::accumulate(sum, u.delta, static_cast<double>(u.examples));
  std::vector<float> g = federated::values(global);
  federated::apply_average(g, sum, 32.0);
  federated::set_values(global, g);
  federated::write_adapter(global, dir.path / "round-1");
  const EvalReport r = federated::evaluate_adapter(c, dir.path / "round-1");
  CHECK(r.accuracy >= 0.0);
  CHECK(r.accuracy <= 1.0);
  CHECK(r.rows == 16);

  // A shard whose training fails (a label the global adapter does not have) throws.
  TrainConfig bad = c;
  bad.eval_file.clear();
  {
    std::ofstream f(dir.path / "bad.tsv");
    f << "sentence\tlabel\nfine\t0\nodd\t7\n";
  }
  bad.train_file = dir.path / "bad.tsv";
  bad.init_adapter = dir.path / "global";
  bad.out = dir.path / "client-bad";
  CHECK_THROWS_AS(federated::client_round(bad), data::DataError);
}

TEST_CASE("federated: the server optimizer is FedAvg at lr 1 without momentum, FedAvgM with it",
          "[federated]") {
  const std::size_t p = 33;
  const std::vector<float> global = random_values(p, 11, 0.5);
  std::vector<double> sum1(p), sum2(p);
  for (std::size_t k = 0; k < p; ++k) {
    sum1[k] = 40.0 * random_values(p, 12, 0.1)[k];
    sum2[k] = 40.0 * random_values(p, 13, 0.1)[k];
  }
  // lr 1, momentum 0: apply_average's result to the bit, round after round.
  std::vector<float> plain = global, server = global;
  federated::ServerOptimizer fedavg(1.0, 0.0);
  for (const auto* s : {&sum1, &sum2}) {
    federated::apply_average(plain, *s, 40.0);
    fedavg.step(server, *s, 40.0);
    REQUIRE(plain == server);
  }
  // lr 0.5, momentum 0.9 over two rounds, by hand: v1 = m1, g1 = g0 + 0.5 v1;
  // v2 = 0.9 v1 + m2, g2 = g1 + 0.5 v2 (m the round's mean delta), g rounded to float. A fused
  // multiply-add (ARM64) may round v differently by an ulp of double; g then by one float ulp.
  std::vector<float> g = global;
  federated::ServerOptimizer fedavgm(0.5, 0.9);
  fedavgm.step(g, sum1, 40.0);
  fedavgm.step(g, sum2, 40.0);
  for (std::size_t k = 0; k < p; ++k) {
    const double v1 = sum1[k] / 40.0;
    const float g1 = static_cast<float>(static_cast<double>(global[k]) + 0.5 * v1);
    const double v2 = 0.9 * v1 + sum2[k] / 40.0;
    const float g2 = static_cast<float>(static_cast<double>(g1) + 0.5 * v2);
    REQUIRE(std::fabs(g[k] - g2) <= std::ldexp(std::fabs(g2), -23));
    REQUIRE(std::fabs(fedavgm.velocity()[k] - v2) <= 4 * std::ldexp(std::fabs(v2), -52));
  }
  CHECK_THROWS_AS(federated::ServerOptimizer(0.0, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(federated::ServerOptimizer(1.0, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(fedavgm.step(g, sum1, 0.0), std::invalid_argument);
  std::vector<double> short_sum(p - 1);
  CHECK_THROWS_AS(fedavgm.step(g, short_sum, 1.0), std::invalid_argument);
}
