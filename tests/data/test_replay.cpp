// The replay buffer: Algorithm R's bound and uniformity, determinism for a seed across calls and
// across a save and load, the byte limit, and replay.json's refusals.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "edgetune/data/error.h"
#include "edgetune/data/replay.h"

using namespace edgetune::data;
namespace fs = std::filesystem;

namespace {

Example row(int i, std::size_t length = 0) {
  std::string text = "row " + std::to_string(i);
  if (length > text.size()) text.resize(length, 'x');
  return Example{text, std::nullopt, i % 2 ? "pos" : "neg", -1, 0};
}

std::vector<std::string> texts(const ReplayBuffer& b) {
  std::vector<std::string> out;
  for (const Example& e : b.examples()) out.push_back(e.text);
  return out;
}

fs::path scratch(const char* name) {
  const fs::path dir = fs::temp_directory_path() / ("edgetune-replay-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

}  // namespace

TEST_CASE("replay: the buffer never holds more than its capacity and counts every example seen",
          "[replay]") {
  ReplayBuffer b(50, std::size_t{1} << 20, 7);
  for (int i = 0; i < 10000; ++i) {
    b.add(row(i));
    REQUIRE(b.size() == std::min<std::size_t>(static_cast<std::size_t>(i) + 1, 50));
  }
  REQUIRE(b.seen() == 10000);
  REQUIRE(b.capacity() == 50);
  ReplayBuffer none(0, 1000, 7);
  none.add(row(1));
  REQUIRE(none.size() == 0);
  REQUIRE(none.seen() == 1);
}

TEST_CASE("replay: each example is kept with probability k / n over many seeds (within 5 sigma)",
          "[replay]") {
  // n = 100 examples, k = 10, S = 4000 seeds: each example's count of seeds keeping it is
  // Binomial(S, k/n), mean 400 and sigma sqrt(S p (1-p)) = 18.97. Every one of the 100 counts
  // lies within 5 sigma unless the sampling is biased (chance of a fluke: under 1e-4).
  const int n = 100, seeds = 4000;
  const std::size_t k = 10;
  const double p = static_cast<double>(k) / n;
  const double mean = seeds * p, sigma = std::sqrt(seeds * p * (1 - p));
  std::vector<int> kept(n, 0);
  for (int s = 0; s < seeds; ++s) {
    ReplayBuffer b(k, std::size_t{1} << 20, static_cast<std::uint64_t>(s));
    for (int i = 0; i < n; ++i) b.add(row(i));
    for (const Example& e : b.examples()) ++kept[std::stoi(e.text.substr(4))];
  }
  for (int i = 0; i < n; ++i) {
    INFO("example " << i << " kept by " << kept[i] << " of " << seeds << " seeds");
    REQUIRE(std::abs(kept[i] - mean) <= 5 * sigma);
  }
}

TEST_CASE("replay: the same seed and examples give the same buffer, in one call or across a save",
          "[replay]") {
  const fs::path file = scratch("replay.json");
  ReplayBuffer one(20, std::size_t{1} << 20, 11), split(20, std::size_t{1} << 20, 11), other(20, std::size_t{1} << 20, 12);
  for (int i = 0; i < 500; ++i) {
    one.add(row(i));
    other.add(row(i));
  }
  for (int i = 0; i < 250; ++i) split.add(row(i));
  split.set_updates(3);
  split.save(file);
  ReplayBuffer loaded = ReplayBuffer::load(file);
  REQUIRE(loaded.seen() == 250);
  REQUIRE(loaded.updates() == 3);
  for (int i = 250; i < 500; ++i) loaded.add(row(i));
  REQUIRE(texts(loaded) == texts(one));
  REQUIRE(loaded.bytes() == one.bytes());
  REQUIRE(texts(other) != texts(one));
  // A draw from it is seeded too, without repeats.
  const auto a = one.sample(10, 5), b = one.sample(10, 5);
  REQUIRE(a.size() == 10);
  std::vector<std::string> ta, tb;
  for (const auto& e : a) ta.push_back(e.text);
  for (const auto& e : b) tb.push_back(e.text);
  REQUIRE(ta == tb);
  std::sort(ta.begin(), ta.end());
  REQUIRE(std::unique(ta.begin(), ta.end()) == ta.end());
  REQUIRE_THROWS_AS(one.sample(21, 5), std::invalid_argument);
  fs::remove_all(file.parent_path());
}

TEST_CASE("replay: the byte limit bounds the held bytes, shrinking the capacity", "[replay]") {
  ReplayBuffer b(100, 2000, 3);
  for (int i = 0; i < 1000; ++i) {
    b.add(row(i, 40 + static_cast<std::size_t>(i % 7) * 20));
    std::size_t sum = 0;
    for (const Example& e : b.examples()) sum += ReplayBuffer::example_bytes(e);
    REQUIRE(sum == b.bytes());
    REQUIRE(b.bytes() <= 2000);
  }
  REQUIRE(b.capacity() < 100);
  REQUIRE(b.size() >= 2000 / (40 + 6 * 20 + 3));
  // An example longer than the limit by itself is seen but never held.
  ReplayBuffer small(10, 30, 3);
  small.add(row(1, 100));
  REQUIRE(small.seen() == 1);
  REQUIRE(small.size() == 0);
  REQUIRE(small.capacity() == 10);
}

TEST_CASE("replay: a bad replay.json is refused naming the file", "[replay]") {
  const fs::path file = scratch("bad.json");
  auto refused = [&](const std::string& content, const std::string& expected) {
    std::ofstream(file) << content;
    try {
      ReplayBuffer::load(file);
      FAIL("loaded " << content);
    } catch (const DataError& e) {
      const std::string what = e.what();
      INFO(what);
      REQUIRE(what.find(file.string()) != std::string::npos);
      REQUIRE(what.find(expected) != std::string::npos);
      REQUIRE(what.find('\n') == std::string::npos);
    }
  };
  refused("{\"format\": ", "invalid JSON");
  refused("{\"format\": \"other\"}", "expected a replay buffer");
  refused("{\"format\": \"edgetune-replay\", \"version\": 1, \"seed\": 1}", "to be a non-negative integer");
  refused("{\"format\": \"edgetune-replay\", \"version\": 1, \"seed\": 1, \"seen\": 1, \"updates\": 0, "
          "\"max_examples\": 1, \"max_bytes\": 100, \"capacity\": 1, \"examples\": [{\"text\": 3}]}",
          "example 0");
  refused("{\"format\": \"edgetune-replay\", \"version\": 1, \"seed\": 1, \"seen\": 1, \"updates\": 0, "
          "\"max_examples\": 1, \"max_bytes\": 100, \"capacity\": 1, \"examples\": [{\"text\": \"a\", "
          "\"label\": \"b\"}, {\"text\": \"c\", \"label\": \"d\"}]}",
          "beyond its capacity");
  fs::remove(file);
  try {
    ReplayBuffer::load(file);
    FAIL("loaded a missing file");
  } catch (const DataError& e) {
    REQUIRE(std::string(e.what()).find(file.string()) != std::string::npos);
  }
  fs::remove_all(file.parent_path());
}
