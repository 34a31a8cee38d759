// LabelMap (id rule, labels.json), seeded shuffling and splitting, padded batches.
// Not here: readers (test_reader.cpp), the tokenizer (test_tokenizer.cpp).
#include <catch2/catch.hpp>
#include <fstream>
#include <set>

#include "edgetune/data/batch.h"
#include "edgetune/data/error.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/shuffle.h"
#include "test_support.h"

using namespace edgetune::data;
namespace fs = std::filesystem;
using Labels = std::vector<std::string>;

TEST_CASE("label ids: integers 0..K-1 keep their value, others are ordered") {
  CHECK(LabelMap::from_labels({"1", "0", "1"}).id2label() == Labels{"0", "1"});
  CHECK(LabelMap::from_labels({"2", "10", "0", "1", "3", "4", "5", "6", "7", "8", "9"}).id("10") ==
        10);
  CHECK(LabelMap::from_labels({"5", "1", "3"}).id2label() == Labels{"1", "3", "5"});
  CHECK(LabelMap::from_labels({"1", "-1"}).id2label() == Labels{"-1", "1"});
  CHECK(LabelMap::from_labels({"spam", "ham", "spam"}).id2label() == Labels{"ham", "spam"});
  // "01" is not written as an integer, so the labels are strings, in byte order.
  CHECK(LabelMap::from_labels({"1", "01", "0"}).id2label() == Labels{"0", "01", "1"});
  CHECK_THROWS_AS(LabelMap::from_labels({}), std::invalid_argument);
  CHECK_THROWS_AS(LabelMap(Labels{"a", "a"}), std::invalid_argument);

  const LabelMap explicit_order(Labels{"positive", "negative"});
  CHECK(explicit_order.id("negative") == 1);
  CHECK_FALSE(explicit_order.id("neutral"));
  CHECK(explicit_order.label(0) == "positive");
  CHECK_THROWS_AS(explicit_order.label(2), std::out_of_range);
}

TEST_CASE("labels.json round trip, atomic write, both id2label forms") {
  const fs::path dir = fs::temp_directory_path() / "edgetune_labels_test";
  fs::create_directories(dir);
  const fs::path file = dir / "labels.json";
  const LabelMap map(Labels{"neg", "pos", "mixed \"quoted\""});
  map.save(file);
  CHECK(LabelMap::load(file).id2label() == map.id2label());
  std::ifstream in(file);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text.find("\"id2label\"") != std::string::npos);
  CHECK(text.find("\"label2id\"") != std::string::npos);
  // Only labels.json is left: the temporary file was renamed over it.
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);

  std::ofstream(dir / "array.json") << R"({"id2label": ["b", "a"]})";
  CHECK(LabelMap::load(dir / "array.json").id2label() == Labels{"b", "a"});
  std::ofstream(dir / "gap.json") << R"({"id2label": {"0": "a", "2": "b"}})";
  CHECK_THROWS_AS(LabelMap::load(dir / "gap.json"), DataError);
  std::ofstream(dir / "bad.json") << "{";
  CHECK_THROWS_AS(LabelMap::load(dir / "bad.json"), DataError);
  CHECK_THROWS_AS(LabelMap::load(dir / "missing.json"), DataError);
  const fs::path unwritable = dir / "no_such_dir" / "labels.json";
  CHECK_THROWS_WITH(map.save(unwritable),
                    unwritable.string() +
                        ": cannot create a temporary file beside it: No such file or directory");
  CHECK_THROWS_AS(map.save(unwritable), DataError);
  fs::remove_all(dir);
}

TEST_CASE("LabelMap::assign names the line of an unknown label") {
  Dataset ds;
  ds.source = "dev.tsv";
  ds.examples.resize(2);
  ds.examples[0].label = "pos";
  ds.examples[0].line = 2;
  ds.examples[1].label = "meh";
  ds.examples[1].line = 3;
  try {
    LabelMap(Labels{"neg", "pos"}).assign(ds);
    FAIL("assign must throw");
  } catch (const DataError& e) {
    CHECK(std::string(e.what()) == "dev.tsv:3: unknown label \"meh\" (expected one of: neg, pos)");
  }
}

TEST_CASE("Rng is xoshiro256** seeded by splitmix64, the same everywhere") {
  Rng rng(42);
  CHECK(rng.next() == 0x15780b2e0c2ec716ull);
  CHECK(rng.next() == 0x6104d9866d113a7eull);
  CHECK(rng.next() == 0xae17533239e499a1ull);
  CHECK(Rng(0).next() == 0x99ec5f36cb75f2b4ull);
  // Fisher-Yates with Lemire's bounded draws (values computed independently).
  CHECK(permutation(10, 42) == std::vector<size_t>{9, 1, 4, 2, 8, 7, 6, 5, 3, 0});

  Rng a(7);
  for (int i = 0; i < 5; ++i) a.next();
  Rng b(1);
  b.set_state(a.state());
  CHECK(a.next() == b.next());
  CHECK_THROWS_AS(b.set_state({0, 0, 0, 0}), std::invalid_argument);

  for (int i = 0; i < 1000; ++i) {
    CHECK(a.below(7) < 7);
    const double u = a.uniform();
    CHECK((u >= 0.0 && u < 1.0));
  }
  CHECK_THROWS_AS(a.below(0), std::invalid_argument);
}

TEST_CASE("train/eval split is seeded, disjoint and complete") {
  const Split s = train_eval_split(100, 0.2, 1234);
  CHECK(s.eval.size() == 20);
  CHECK(s.train.size() == 80);
  std::set<size_t> all(s.train.begin(), s.train.end());
  all.insert(s.eval.begin(), s.eval.end());
  CHECK(all.size() == 100);
  CHECK(std::is_sorted(s.eval.begin(), s.eval.end()));
  const Split again = train_eval_split(100, 0.2, 1234);
  CHECK(again.eval == s.eval);
  CHECK(train_eval_split(100, 0.2, 1235).eval != s.eval);
  CHECK(train_eval_split(3, 0.01, 1).eval.size() == 1);
  CHECK(train_eval_split(3, 0.99, 1).train.size() == 1);
  CHECK(train_eval_split(5, 0.0, 1).eval.empty());
  CHECK(train_eval_split(0, 0.2, 1).train.empty());
  CHECK_THROWS_AS(train_eval_split(5, 1.5, 1), std::invalid_argument);
}

TEST_CASE("batches are padded to their longest row") {
  std::vector<Encoding> enc(3);
  enc[0].ids = {101, 7, 102};
  enc[1].ids = {101, 7, 8, 102, 9, 102};
  enc[1].type_ids = {0, 0, 0, 0, 1, 1};
  enc[2].ids = {101, 102};
  for (auto& e : enc) {
    e.type_ids.resize(e.ids.size(), 0);
    e.attention_mask.assign(e.ids.size(), 1);
  }
  const std::vector<int32_t> labels = {1, 0, 1};
  const std::vector<size_t> rows = {2, 0};
  const Batch b = make_batch(enc, rows, 0, labels);
  CHECK(b.rows == 2);
  CHECK(b.length == 3);
  CHECK(b.ids == std::vector<int32_t>{101, 102, 0, 101, 7, 102});
  CHECK(b.attention_mask == std::vector<int32_t>{1, 1, 0, 1, 1, 1});
  CHECK(b.labels == std::vector<int32_t>{1, 1});
  CHECK(b.indices == rows);

  const std::vector<size_t> one = {1};
  const Batch p = make_batch(enc, one, 0);
  CHECK(p.type_ids == enc[1].type_ids);
  CHECK(p.labels.empty());

  const std::vector<size_t> bad = {3};
  CHECK_THROWS_AS(make_batch(enc, bad, 0), std::invalid_argument);
  CHECK_THROWS_AS(make_batch(enc, {}, 0), std::invalid_argument);

  const std::vector<size_t> order = {4, 3, 2, 1, 0};
  CHECK(batch_rows(order, 2).size() == 3);
  CHECK(batch_rows(order, 2).back() == std::vector<size_t>{0});
  CHECK(batch_rows(order, 2, true).size() == 2);
  CHECK_THROWS_AS(batch_rows(order, 0), std::invalid_argument);
}

TEST_CASE("a dataset is encoded and batched end to end") {
  const Vocab vocab =
      Vocab::load(edgetune::test::golden_dir() / "tokenizer/mini-uncased-vocab.txt");
  const WordPieceTokenizer tok(vocab);
  ReadOptions o;
  o.text_column = "text";
  o.label_column = ColumnRef("label");
  Dataset ds =
      read_dataset_from_bytes("text\tlabel\nthe cat\tpos\nhello world !\tneg\n", "t.tsv", o);
  LabelMap::from_dataset(ds).assign(ds);
  const auto enc = encode_dataset(tok, ds, 128);
  const auto ids = label_ids(ds);
  CHECK(ids == std::vector<int32_t>{1, 0});
  const std::vector<size_t> rows = {0, 1};
  const Batch b = make_batch(enc, rows, tok.pad_id(), ids);
  CHECK(b.length == 5);
  CHECK(b.ids[0] == tok.cls_id());
  CHECK(b.ids[4] == tok.pad_id());
}
