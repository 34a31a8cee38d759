// The packed store of encoded rows: the same ids, type ids and labels as the encodings it was
// given, batches equal to those made from the encodings, its blocks counted by the accountant
// (MemCategory::Data) and held to its budget; and the compact vocabulary's lookups and size.
#include <catch2/catch.hpp>

#include <filesystem>

#include "edgetune/core/memory.h"
#include "edgetune/data/batch.h"
#include "edgetune/data/token_store.h"
#include "edgetune/data/vocab.h"
#include "test_support.h"

using namespace edgetune;
using namespace edgetune::data;

namespace {

Encoding encoding(std::vector<int32_t> ids, std::size_t pair_start) {
  Encoding e;
  e.type_ids.assign(ids.size(), 0);
  for (std::size_t i = pair_start; i < ids.size(); ++i) e.type_ids[i] = 1;
  e.attention_mask.assign(ids.size(), 1);
  e.ids = std::move(ids);
  return e;
}

}  // namespace

TEST_CASE("a token store gives back each row's ids, type ids and label, and batches as encodings do",
          "[data][store]") {
  Accountant acc;
  std::vector<Encoding> enc = {encoding({101, 7, 102}, 3), encoding({101, 7, 8, 102, 9, 102}, 4),
                               encoding({101, 102}, 2)};
  enc[1].invalid_utf8 = 2;
  const std::vector<int32_t> labels = {1, 0, -1};
  TokenStore store(acc);
  for (std::size_t i = 0; i < enc.size(); ++i) store.append(enc[i], labels[i]);
  REQUIRE(store.size() == 3);
  REQUIRE(store.longest() == 6);
  REQUIRE(store.rows_with_invalid_utf8() == 1);
  for (std::size_t i = 0; i < enc.size(); ++i) {
    const auto ids = store.ids(i);
    CHECK(std::vector<int32_t>(ids.begin(), ids.end()) == enc[i].ids);
    CHECK(store.label(i) == labels[i]);
  }
  CHECK(store.pair_start(1) == 4);
  CHECK(store.pair_start(0) == 3);

  const std::vector<std::size_t> rows = {1, 2, 0};
  const Batch a = make_batch(store, rows, 0, true);
  const Batch b = make_batch(enc, rows, 0, labels);
  CHECK(a.ids == b.ids);
  CHECK(a.type_ids == b.type_ids);
  CHECK(a.attention_mask == b.attention_mask);
  CHECK(a.labels == b.labels);
  CHECK(a.indices == b.indices);
  CHECK(make_batch(store, rows, 0, false).labels.empty());
  const std::vector<std::size_t> bad = {3};
  CHECK_THROWS_AS(make_batch(store, bad, 0, true), std::invalid_argument);
  CHECK_THROWS_AS(store.ids(3), std::out_of_range);
  // Type ids that are not 0s then 1s are not a tokenizer's: refused.
  Encoding odd = encoding({101, 7, 102}, 3);
  odd.type_ids = {0, 1, 0};
  CHECK_THROWS_AS(store.append(odd), std::invalid_argument);
  CHECK(store.size() == 3);
}

TEST_CASE("a token store's blocks are counted as data and bounded by the budget", "[data][store][memory]") {
  Accountant acc;
  const std::size_t block = accounted_bytes(TokenStore::kBlockIds * sizeof(int32_t));
  {
    TokenStore store(acc);
    REQUIRE(acc.live(MemCategory::Data) == 0);
    store.append(encoding({101, 5, 102}, 3), 0);
    // One block of ids and one of row facts.
    REQUIRE(acc.live(MemCategory::Data) == 2 * block);
    REQUIRE(store.bytes() == 2 * block);
    // Rows fill the id block before a second one is taken; a row never straddles two.
    const Encoding long_row = encoding(std::vector<int32_t>(TokenStore::kBlockIds / 2, 9), TokenStore::kBlockIds / 2);
    store.append(long_row, 1);
    REQUIRE(acc.live(MemCategory::Data) == 2 * block);
    store.append(long_row, 1);
    REQUIRE(acc.live(MemCategory::Data) == 3 * block);
    REQUIRE(store.ids(2).size() == TokenStore::kBlockIds / 2);
    REQUIRE(store.ids(2)[0] == 9);
    // Under a budget, a block that does not fit is refused and the store is unchanged.
    acc.set_budget(acc.live_total());
    const Encoding longer = encoding(std::vector<int32_t>(TokenStore::kBlockIds / 2 + 1, 9), 0);
    REQUIRE_THROWS_AS(store.append(longer, 1), BudgetExceeded);
    REQUIRE(store.size() == 3);
    acc.set_budget(0);
    TokenStore moved(std::move(store));
    REQUIRE(moved.size() == 3);
    REQUIRE(acc.live(MemCategory::Data) == 3 * block);
  }
  REQUIRE(acc.live(MemCategory::Data) == 0);
}

TEST_CASE("the compact vocabulary looks tokens up both ways and stays small", "[data][vocab]") {
  const Vocab v({"[PAD]", "hello", "##lo", "", "hello", "wörld"}, "test");
  REQUIRE(v.size() == 6);
  CHECK(v.token(1) == "hello");
  CHECK(v.token(3).empty());
  CHECK(v.token(5) == "wörld");
  // A token on two lines: id() is the later line, token() each line's text.
  CHECK(v.id("hello") == 4);
  CHECK(v.id("##lo") == 2);
  CHECK(v.id("") == 3);
  CHECK_FALSE(v.id("hell"));
  CHECK_FALSE(v.id("hello!"));
  CHECK(v.max_token_bytes() == 6);
  CHECK(v.tokens() == std::vector<std::string>{"[PAD]", "hello", "##lo", "", "hello", "wörld"});
  CHECK_THROWS_AS(v.token(6), std::out_of_range);

  // The shipped vocabulary (26,138 tokens): every token maps back to itself, and the tables take
  // 4 to 16 bytes per token beside the text (an offset and at most two index slots, rounded up
  // to a power of two).
  const auto shipped = std::filesystem::path(EDGETUNE_TEST_DIR) / ".." / "models" / "edgetune-mini-uncased" / "vocab.txt";
  const Vocab s = Vocab::load(shipped);
  REQUIRE(s.size() == 26138);
  std::size_t text = 0;
  for (int32_t i = 0; i < s.size(); ++i) {
    text += s.token(i).size();
    const auto id = s.id(s.token(i));
    if (!id || s.token(*id) != s.token(i)) FAIL("token " << i << " '" << s.token(i) << "' is not found");
  }
  CHECK(s.bytes() >= text + 4 * static_cast<std::size_t>(s.size()));
  CHECK(s.bytes() <= text + 16 * static_cast<std::size_t>(s.size()));
}
