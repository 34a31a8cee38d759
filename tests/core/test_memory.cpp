// The memory accountant: categories, peaks, the hard budget, the reuse cache, byte parsing.
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <vector>

#include "edgetune/core/memory.h"

using namespace edgetune;

TEST_CASE("accountant counts live and peak bytes per category", "[memory]") {
  Accountant acc;
  void* a = acc.allocate(MemCategory::Activations, 1000);
  void* b = acc.allocate(MemCategory::Grads, 64);
  MemoryStats s = acc.stats();
  REQUIRE(s.live[static_cast<int>(MemCategory::Activations)] == 1024);  // 64-byte blocks
  REQUIRE(s.live[static_cast<int>(MemCategory::Grads)] == 64);
  REQUIRE(s.live_total == 1088);
  acc.release(MemCategory::Activations, a, 1000);
  s = acc.stats();
  REQUIRE(s.live_total == 64);
  REQUIRE(s.peak_total == 1088);
  REQUIRE(s.peak[static_cast<int>(MemCategory::Activations)] == 1024);
  REQUIRE(s.at_total_peak[static_cast<int>(MemCategory::Grads)] == 64);
  acc.release(MemCategory::Grads, b, 64);
}

TEST_CASE("a budget is a hard limit raised before anything is allocated", "[memory][budget]") {
  Accountant acc;
  acc.set_budget(4096);
  void* a = acc.allocate(MemCategory::Trainable, 3000);
  try {
    acc.allocate(MemCategory::Activations, 2000);
    FAIL("expected BudgetExceeded");
  } catch (const BudgetExceeded& e) {
    REQUIRE(e.category == MemCategory::Activations);
    REQUIRE(e.asked == 2000);
    REQUIRE(e.live == 3008);
    REQUIRE(e.budget == 4096);
    REQUIRE_THAT(e.what(), Catch::Contains("activations") && Catch::Contains("budget"));
  }
  // Nothing was counted for the failed request.
  REQUIRE(acc.live_total() == 3008);
  acc.release(MemCategory::Trainable, a, 3000);
}

TEST_CASE("freed blocks are reused for the next request of the same size", "[memory]") {
  Accountant acc;
  void* a = acc.allocate(MemCategory::Activations, 4096);
  acc.release(MemCategory::Activations, a, 4096);
  REQUIRE(acc.stats().cached == 4096);
  void* b = acc.allocate(MemCategory::Workspace, 4096);
  REQUIRE(b == a);
  MemoryStats s = acc.stats();
  REQUIRE(s.cache_hits == 1);
  REQUIRE(s.allocations == 1);
  REQUIRE(s.cached == 0);
  acc.release(MemCategory::Workspace, b, 4096);
}

TEST_CASE("cached blocks count against the budget and are dropped to make room", "[memory][budget]") {
  Accountant acc;
  acc.set_budget(8192);
  void* a = acc.allocate(MemCategory::Activations, 6000);
  acc.release(MemCategory::Activations, a, 6000);
  // 6016 cached + 4096 asked > 8192: the cache is emptied and the request succeeds.
  void* b = acc.allocate(MemCategory::Activations, 4096);
  REQUIRE(acc.stats().cached == 0);
  acc.release(MemCategory::Activations, b, 4096);
}

TEST_CASE("byte counts parse and format in binary units", "[memory]") {
  REQUIRE(parse_bytes("128M") == 128u << 20);
  REQUIRE(parse_bytes("128MiB") == 128u << 20);
  REQUIRE(parse_bytes("1.5G") == 3u << 29);
  REQUIRE(parse_bytes("512k") == 512u << 10);
  REQUIRE(parse_bytes("65536") == 65536u);
  REQUIRE_THROWS_WITH(parse_bytes("lots"), Catch::Contains("expected a byte count"));
  REQUIRE_THROWS_AS(parse_bytes("12Q"), std::invalid_argument);
  REQUIRE(format_bytes(97u << 20) == "97.0 MiB");
  REQUIRE(format_bytes(512) == "512 B");
}

TEST_CASE("the process peak resident set is readable", "[memory]") {
  REQUIRE(process_peak_rss() > 0);
  REQUIRE(process_rss() > 0);
  REQUIRE(process_peak_rss() >= process_rss());
}

TEST_CASE("the heap's free bytes count the holes freed small blocks leave", "[memory]") {
#if defined(__SANITIZE_ADDRESS__)
  // The sanitizer's allocator serves malloc here; the C library's heap, which the figure reads,
  // holds none of these blocks.
  WARN("process_heap_free() reads glibc's heap, which AddressSanitizer replaces: nothing to check");
  SUCCEED();
#elif defined(__GLIBC__)
  // 8 MiB in 1 KiB blocks, then one block above them that keeps the heap from shrinking back.
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int i = 0; i < 8192; ++i) {
    blocks.emplace_back(new char[1000]);
    blocks.back()[0] = 1;
  }
  std::unique_ptr<char[]> pin(new char[1000]);
  pin[0] = 1;
  const std::size_t before = process_heap_free();
  blocks.clear();
  const std::size_t after = process_heap_free();
  REQUIRE(after >= before + 7u * 1000 * 1024);
  (void)pin;
#else
  REQUIRE(process_heap_free() == 0);
#endif
}

TEST_CASE("the cache never raises the footprint above the live peak", "[memory]") {
  Accountant acc;
  // A step of 3 blocks of 1 MiB, freed; then a step of blocks of another size.
  std::vector<void*> a;
  for (int i = 0; i < 3; ++i) a.push_back(acc.allocate(MemCategory::Activations, 1 << 20));
  for (void* p : a) acc.release(MemCategory::Activations, p, 1 << 20);
  REQUIRE(acc.stats().cached == 3u << 20);
  std::vector<void*> b;
  for (int i = 0; i < 3; ++i) b.push_back(acc.allocate(MemCategory::Activations, (1 << 20) + 4096));
  const MemoryStats s = acc.stats();
  // Without eviction the total would be 6 MiB; it stays within the new live peak.
  REQUIRE(s.peak_total <= s.peak_live);
  REQUIRE(s.peak_live == 3u * ((1 << 20) + 4096));
  for (void* p : b) acc.release(MemCategory::Activations, p, (1 << 20) + 4096);
}

// One "forward pass" of inference: each op's output of its own size is allocated, then the input
// freed, so at most two blocks are live at once but four sizes cycle through.
static void inference_pass(Accountant& acc) {
  const std::size_t sizes[] = {1u << 20, 2u << 20, 3u << 20, 4u << 20};
  void* in = acc.allocate(MemCategory::Activations, sizes[0]);
  std::size_t in_size = sizes[0];
  for (int layer = 0; layer < 3; ++layer) {
    for (std::size_t s : sizes) {
      void* out = acc.allocate(MemCategory::Activations, s);
      acc.release(MemCategory::Activations, in, in_size);
      in = out;
      in_size = s;
    }
  }
  acc.release(MemCategory::Activations, in, in_size);
}

TEST_CASE("in an inference scope the cache keeps a forward pass's blocks, within one more activation peak",
          "[memory]") {
  // Held to the live peak (7 MiB: two blocks), the cache cannot keep the four sizes (10 MiB): every
  // pass maps blocks again.
  Accountant plain;
  inference_pass(plain);
  const std::size_t first = plain.stats().allocations;
  inference_pass(plain);
  REQUIRE(plain.stats().allocations > first);
  REQUIRE(plain.stats().peak_total <= plain.stats().peak_live);

  // In a scope, the second pass is served from the cache, and live + cached stays within the live
  // peak plus the activation peak.
  Accountant acc;
  {
    const InferenceCache scope(acc);
    inference_pass(acc);
    const std::size_t after_first = acc.stats().allocations;
    inference_pass(acc);
    const MemoryStats s = acc.stats();
    REQUIRE(s.allocations == after_first);
    REQUIRE(s.cache_hits > 0);
    REQUIRE(s.peak_total <= s.peak_live + s.peak[static_cast<int>(MemCategory::Activations)]);
    REQUIRE(s.peak_total > s.peak_live);
  }
  // A budget still bounds live + cached in a scope.
  Accountant bounded;
  bounded.set_budget(8u << 20);
  {
    const InferenceCache scope(bounded);
    inference_pass(bounded);
    inference_pass(bounded);
    REQUIRE(bounded.stats().peak_total <= (8u << 20));
  }
}

TEST_CASE("a charge counts bytes held elsewhere for its lifetime, against the budget", "[memory][budget]") {
  Accountant acc;
  acc.set_budget(10000);
  {
    Charge vocab(acc, MemCategory::Data, 6000);
    REQUIRE(acc.live(MemCategory::Data) == 6000);  // exactly as given: no block rounding
    REQUIRE(acc.stats().peak[static_cast<int>(MemCategory::Data)] == 6000);
    REQUIRE_THROWS_AS(Charge(acc, MemCategory::Data, 5000), BudgetExceeded);
    REQUIRE(acc.live_total() == 6000);
    Charge moved = std::move(vocab);
    REQUIRE(moved.bytes() == 6000);
    REQUIRE(vocab.bytes() == 0);
    REQUIRE(acc.live(MemCategory::Data) == 6000);
  }
  REQUIRE(acc.live_total() == 0);
  REQUIRE(std::string(category_name(MemCategory::Data)) == "data");
}

TEST_CASE("the resident set's file-backed and private parts are read from /proc/<pid>/status", "[memory]") {
  // Lines of a Linux 6.1 status file, the split's and its neighbours.
  const std::string status =
      "Name:\tedgetune\n"
      "VmHWM:\t  160832 kB\n"
      "VmRSS:\t  150016 kB\n"
      "RssAnon:\t  128004 kB\n"
      "RssFile:\t   21968 kB\n"
      "RssShmem:\t      44 kB\n"
      "VmData:\t  300000 kB\n";
  const ResidentSplit split = parse_resident_split(status);
  CHECK(split.private_bytes == std::size_t{128004} * 1024);
  CHECK(split.file == std::size_t{21968} * 1024);
  CHECK(split.known());
  // A kernel before 4.5 has no split: unknown, not zero memory.
  const ResidentSplit old = parse_resident_split("Name:\tedgetune\nVmRSS:\t  150016 kB\n");
  CHECK(old.file == 0);
  CHECK(old.private_bytes == 0);
  CHECK_FALSE(old.known());
#if defined(__linux__)
  CHECK(process_resident_split().known());  // Linux 4.5 and later
#endif
}
