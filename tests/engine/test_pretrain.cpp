// Masked-LM pretraining (engine/pretrain.h): corpus packing, dynamic masking with the collator's
// 80/10/10 statistics, gradient checks of the MLM head with its decoder tied to the word
// embeddings, the gathered loss against the full-logits loss of BertForMaskedLM, and the
// Pretrainer's run folder: a Hugging Face folder the classifier path loads, evaluation in
// metrics.jsonl, and a resume that ends with the same bytes as an uninterrupted run.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "edgetune/autograd/gradcheck.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/tokenizer.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/pretrain.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

// Text made of the words of the committed mini vocabulary (tests/golden/tokenizer).
const char* kCorpus =
    "the quick brown fox jumped over the lazy dog.\n"
    "the cat sat on the mat, and the dog sat on the line.\n"
    "\n"
    "hello world! a new example is running in english.\n"
    "someone use the private text: numbers, marks and symbols.\n"
    "the big dog jumps over the thin cat; the cat jumps back.\n"
    "\n"
    "\n"
    "the lazy fox is on the rock and the brown dog is inside.\n"
    "a quick example of mixed text is over the line at the end.\n"
    "hello cafe! the cat and the dog run back to the new world.\n";

fs::path mini_vocab() {
  return test::golden_dir() / "tokenizer" / "mini-uncased-vocab.txt";
}

data::WordPieceTokenizer mini_tokenizer() {
  return data::WordPieceTokenizer(data::Vocab::load(mini_vocab()));
}

struct Scratch {
  fs::path path;
  explicit Scratch(const std::string& tag) {
    path =
        fs::temp_directory_path() / ("edgetune-pretrain-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A tiny fresh BERT folder over the mini vocabulary.
fs::path tiny_model(const fs::path& dir) {
  BertConfig c;
  c.vocab_size = mini_tokenizer().vocab().size();
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = 32;
  LoadOptions lo;
  lo.base = DType::F32;
  lo.seed = 7;
  save_bert(init_bert(c, lo), dir);
  write_file_atomic(dir / "vocab.txt", read_file(mini_vocab()));
  write_file_atomic(dir / "tokenizer_config.json", "{\"do_lower_case\": true}\n");
  return dir;
}

// A small BERT config over 50 ids (no tokenizer needed) with `layers` encoder layers.
BertConfig small_config(std::int64_t layers) {
  BertConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 2;
  c.intermediate_size = 32;
  c.max_position_embeddings = 16;
  return c;
}

std::vector<nlohmann::json> read_metrics(const fs::path& file) {
  std::vector<nlohmann::json> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST_CASE("pretrain: documents are tokenized per blank-line block and packed with separators",
          "[pretrain]") {
  Scratch dir("pack");
  std::ofstream(dir.path / "a.txt") << kCorpus;
  std::ofstream(dir.path / "b.txt") << "hello world\n";  // a file ends a document
  const auto tok = mini_tokenizer();
  const std::vector<fs::path> files = {dir.path / "a.txt", dir.path / "b.txt"};
  const auto docs = tokenize_documents(tok, files);
  REQUIRE(docs.size() == 4);
  const std::vector<std::int32_t> hello = tok.encode("hello world").ids;
  CHECK(docs[3] == std::vector<std::int32_t>(hello.begin() + 1, hello.end() - 1));

  for (int t : {3, 4, 7, 16, 32}) {
    const auto segments = pack_segments(docs, tok.cls_id(), tok.sep_id(), t);
    std::vector<std::int32_t> stream;  // the contents, separators included
    for (size_t i = 0; i < segments.size(); ++i) {
      const auto& s = segments[i];
      REQUIRE(s.size() >= 3);
      REQUIRE(s.size() <= static_cast<size_t>(t));
      REQUIRE(s.front() == tok.cls_id());
      REQUIRE(s.back() == tok.sep_id());
      CHECK(s[1] != tok.sep_id());             // no segment starts with a separator
      CHECK(s[s.size() - 2] != tok.sep_id());  // nor doubles its closing [SEP]
      // Only the last segment may be shorter than the room by more than a dropped separator.
      if (i + 1 < segments.size()) CHECK(s.size() + 1 >= static_cast<size_t>(t));
      stream.insert(stream.end(), s.begin() + 1, s.end() - 1);
    }
    // Every token of every document, in order; separators only between documents.
    std::vector<std::int32_t> expected, without_sep;
    for (const auto& d : docs) expected.insert(expected.end(), d.begin(), d.end());
    for (const std::int32_t id : stream) {
      if (id != tok.sep_id()) without_sep.push_back(id);
    }
    CHECK(without_sep == expected);
    CHECK(std::count(stream.begin(), stream.end(), tok.sep_id()) <=
          static_cast<long>(docs.size()) - 1);
    if (t == 32) CHECK(std::count(stream.begin(), stream.end(), tok.sep_id()) == 3);
  }
  CHECK_THROWS_AS(pack_segments(docs, tok.cls_id(), tok.sep_id(), 2), std::invalid_argument);
}

TEST_CASE("pretrain: task-adaptive text is one document per row of a task file, labels ignored",
          "[pretrain][tapt]") {
  Scratch dir("tapt");
  std::ofstream(dir.path / "train.tsv") << "sentence\tlabel\n"
                                        << "the quick brown fox\t1\n"
                                        << "the lazy dog sat on the mat\t0\n";
  std::ofstream(dir.path / "more.jsonl") << "{\"text\": \"hello world\"}\n";
  const auto tok = mini_tokenizer();
  const std::vector<fs::path> files = {dir.path / "train.tsv", dir.path / "more.jsonl"};
  const auto docs = tokenize_task_rows(tok, files);
  REQUIRE(docs.size() == 3);
  const char* texts[] = {"the quick brown fox", "the lazy dog sat on the mat", "hello world"};
  for (size_t i = 0; i < 3; ++i) {
    const std::vector<std::int32_t> ids = tok.encode(texts[i]).ids;
    CHECK(docs[i] == std::vector<std::int32_t>(ids.begin() + 1, ids.end() - 1));
  }
  // A bad row is the reader's one-line error: file and line.
  std::ofstream(dir.path / "bad.tsv") << "sentence\tlabel\nthe cat\t1\nno tab here\t0\textra\n";
  const std::vector<fs::path> bad = {dir.path / "bad.tsv"};
  CHECK_THROWS_WITH(tokenize_task_rows(tok, bad), Catch::Contains("bad.tsv:3"));

  // A run from task files alone, their absolute paths in run.json for a resume.
  std::ofstream rows(dir.path / "rows.tsv");
  rows << "sentence\tlabel\n";
  for (int i = 0; i < 12; ++i) rows << "the quick brown fox jumped over the lazy dog\t" << i % 2 << "\n";
  rows.close();
  PretrainConfig c;
  c.model_dir = tiny_model(dir.path / "init");
  c.task_data = {dir.path / "rows.tsv"};
  c.out = dir.path / "run";
  c.max_length = 16;
  c.batch_size = 2;
  c.max_steps = 2;
  c.eval_split = 0;
  c.threads = 1;
  const PretrainResult r = Pretrainer(c, nullptr).run();
  CHECK(r.steps == 2);
  const auto run = nlohmann::json::parse(read_file(c.out / "run.json"));
  CHECK(run.dump().find(fs::absolute(dir.path / "rows.tsv").string()) != std::string::npos);
  PretrainConfig none = c;
  none.task_data.clear();
  none.out = dir.path / "none";
  CHECK_THROWS_WITH(Pretrainer(none, nullptr).run(), Catch::Contains("--task-data"));
}

TEST_CASE("pretrain: masking follows the collator's 15 % and 80/10/10, seeded and dynamic",
          "[pretrain]") {
  const auto tok = mini_tokenizer();
  // A long segment of ordinary tokens, with specials sprinkled in.
  std::vector<std::int32_t> ids = {tok.cls_id()};
  for (int i = 0; i < 4000; ++i) ids.push_back(i % 97 == 0 ? tok.unk_id() : 5 + (i * 31) % 400);
  ids.push_back(tok.sep_id());
  std::int64_t candidates = 0;
  for (const std::int32_t id : ids) candidates += id >= 5;

  std::int64_t chosen = 0, masked = 0, kept = 0, other = 0;
  for (std::uint64_t seg = 0; seg < 20; ++seg) {
    const MaskedSegment m = mask_segment(ids, tok, mask_seed(1, 0, seg));
    REQUIRE(m.positions.size() == m.labels.size());
    REQUIRE(m.input_ids.size() == ids.size());
    for (size_t k = 0; k < m.positions.size(); ++k) {
      const size_t p = static_cast<size_t>(m.positions[k]);
      REQUIRE(ids[p] >= 5);  // never a special
      REQUIRE(m.labels[k] == ids[p]);
      if (k) REQUIRE(m.positions[k] > m.positions[k - 1]);
      const std::int32_t now = m.input_ids[p];
      if (now == tok.mask_id())
        ++masked;
      else if (now == ids[p])
        ++kept;
      else
        ++other;
    }
    chosen += static_cast<std::int64_t>(m.positions.size());
    // Positions not chosen are untouched.
    std::set<std::int32_t> at(m.positions.begin(), m.positions.end());
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!at.count(static_cast<std::int32_t>(i))) REQUIRE(m.input_ids[i] == ids[i]);
    }
  }
  const double n = static_cast<double>(chosen);
  CHECK(n / static_cast<double>(20 * candidates) == Approx(0.15).margin(0.005));
  CHECK(static_cast<double>(masked) / n == Approx(0.8).margin(0.015));
  // A random id equal to the original counts as kept: 0.1 + 0.1 / V.
  CHECK(static_cast<double>(kept) / n == Approx(0.1).margin(0.01));
  CHECK(static_cast<double>(other) / n == Approx(0.1).margin(0.01));

  // Seeded: same (seed, epoch, segment), same masks; another epoch, other masks.
  const auto a = mask_segment(ids, tok, mask_seed(1, 0, 3));
  CHECK(mask_segment(ids, tok, mask_seed(1, 0, 3)).input_ids == a.input_ids);
  CHECK(mask_segment(ids, tok, mask_seed(1, 1, 3)).positions != a.positions);
  CHECK(mask_segment(ids, tok, mask_seed(2, 0, 3)).positions != a.positions);

  // A segment too short for a draw to pick anything still gets one target, never a special.
  const std::vector<std::int32_t> tiny = {tok.cls_id(), 40, tok.sep_id()};
  for (std::uint64_t s = 0; s < 50; ++s) {
    const auto m = mask_segment(tiny, tok, s);
    REQUIRE(m.positions == std::vector<std::int32_t>{1});
  }
  const std::vector<std::int32_t> only_specials = {tok.cls_id(), tok.sep_id()};
  CHECK(mask_segment(only_specials, tok, 0).positions.empty());
}

TEST_CASE("pretrain: whole-word masking chooses every piece of a word or none, 15 % of pieces",
          "[pretrain]") {
  const auto tok = mini_tokenizer();
  const auto& v = tok.vocab();
  // Words of one to four pieces: a head piece, then "##" pieces; specials between some words.
  std::vector<std::int32_t> heads, tails;
  for (std::int32_t id = 5; id < v.size(); ++id) (v.token(id).starts_with("##") ? tails : heads).push_back(id);
  REQUIRE(tails.size() > 10);
  std::vector<std::int32_t> ids = {tok.cls_id()};
  std::vector<int> word_of = {-1};  // the word each position belongs to (-1: special)
  for (int w = 0; w < 3000; ++w) {
    ids.push_back(heads[static_cast<size_t>(w * 7) % heads.size()]);
    word_of.push_back(w);
    for (int k = 0; k < w % 4; ++k) {
      ids.push_back(tails[static_cast<size_t>(w * 3 + k) % tails.size()]);
      word_of.push_back(w);
    }
    if (w % 50 == 49) {
      ids.push_back(tok.sep_id());
      word_of.push_back(-1);
    }
  }
  ids.push_back(tok.sep_id());
  word_of.push_back(-1);
  std::int64_t pieces = 0;
  for (const int w : word_of) pieces += w >= 0;

  MaskingOptions wwm;
  wwm.whole_words = true;
  std::int64_t chosen = 0, masked = 0;
  for (std::uint64_t seg = 0; seg < 20; ++seg) {
    const MaskedSegment m = mask_segment(ids, tok, mask_seed(1, 0, seg), wwm);
    std::map<int, int> chosen_of_word;
    for (size_t k = 0; k < m.positions.size(); ++k) {
      const size_t p = static_cast<size_t>(m.positions[k]);
      REQUIRE(word_of[p] >= 0);  // never a special
      REQUIRE(m.labels[k] == ids[p]);
      if (k) REQUIRE(m.positions[k] > m.positions[k - 1]);
      ++chosen_of_word[word_of[p]];
      masked += m.input_ids[p] == tok.mask_id();
    }
    for (const auto& [w, n] : chosen_of_word) REQUIRE(n == 1 + w % 4);  // the whole word
    chosen += static_cast<std::int64_t>(m.positions.size());
  }
  const double n = static_cast<double>(chosen);
  CHECK(n / static_cast<double>(20 * pieces) == Approx(0.15).margin(0.01));
  CHECK(static_cast<double>(masked) / n == Approx(0.8).margin(0.015));

  // A segment where no word was drawn gets its first word, all of it.
  const std::vector<std::int32_t> tiny = {tok.cls_id(), heads[0], tails[0], tails[1], heads[1], tok.sep_id()};
  int first_word_only = 0;
  for (std::uint64_t s = 0; s < 200; ++s) {
    const auto m = mask_segment(tiny, tok, s, wwm);
    REQUIRE(!m.positions.empty());
    const std::set<std::int32_t> at(m.positions.begin(), m.positions.end());
    REQUIRE(at.count(1) == at.count(2));
    REQUIRE(at.count(2) == at.count(3));
    first_word_only += m.positions == std::vector<std::int32_t>{1, 2, 3};
  }
  CHECK(first_word_only > 100);  // at p = 0.15, no draw in 0.72 of segments, plus the drawn ones
  // Off (the default), the same segment is masked piece by piece: some word is split.
  bool split = false;
  for (std::uint64_t seg = 0; seg < 5 && !split; ++seg) {
    const MaskedSegment m = mask_segment(ids, tok, mask_seed(1, 0, seg));
    std::map<int, int> c;
    for (const std::int32_t p : m.positions) ++c[word_of[static_cast<size_t>(p)]];
    for (const auto& [w, k] : c) split = split || k != 1 + w % 4;
  }
  CHECK(split);
}

TEST_CASE("pretrain: a batch pads segments and flattens the masked positions", "[pretrain]") {
  MaskedSegment a{{2, 10, 4, 3}, {2}, {11}}, b{{2, 4, 3}, {1}, {12}};
  const std::vector<MaskedSegment> rows = {a, b};
  const MlmBatch batch = make_mlm_batch(rows, 0);
  CHECK(batch.inputs.input_ids.shape() == Shape{2, 4});
  const std::vector<double> ids = batch.inputs.input_ids.to_vector(),
                            mask = batch.inputs.attention_mask.to_vector(),
                            types = batch.inputs.token_type_ids.to_vector(),
                            positions = batch.positions.to_vector(),
                            labels = batch.labels.to_vector();
  CHECK(ids == std::vector<double>{2, 10, 4, 3, 2, 4, 3, 0});
  std::vector<double> expected_mask(8, 1.0);  // the second row's last position is padding
  expected_mask[7] = 0;
  CHECK(mask == expected_mask);
  CHECK(types == std::vector<double>(8, 0.0));
  CHECK(positions == std::vector<double>{2, 5});
  CHECK(labels == std::vector<double>{11, 12});
  CHECK(batch.tokens == 7);
  // A micro-batch of the second row alone keeps its batch's length (min_length): the positions
  // flatten over 4 tokens a row, and the dropout masks are that row's part of the batch's.
  const MlmBatch part = make_mlm_batch(std::span<const MaskedSegment>(rows).subspan(1, 1), 0, 4);
  CHECK(part.inputs.input_ids.shape() == Shape{1, 4});
  CHECK(part.inputs.input_ids.to_vector() == std::vector<double>{2, 4, 3, 0});
  CHECK(part.positions.to_vector() == std::vector<double>{1});
  CHECK(make_mlm_batch(std::span<const MaskedSegment>(rows).subspan(1, 1), 0).inputs.input_ids.shape() ==
        Shape{1, 3});
  const std::vector<MaskedSegment> none = {MaskedSegment{{2, 3}, {}, {}}};
  CHECK_THROWS_AS(make_mlm_batch(none, 0), std::invalid_argument);
}

namespace {

constexpr std::int64_t kV = 11, kC = 6, kB = 2, kT = 4;

Tensor f64_param(const Shape& shape, std::uint64_t seed, double scale, double offset = 0) {
  std::vector<double> v(static_cast<size_t>(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = offset + scale * (2 * counter_uniform(seed, i) - 1);
  Tensor t = Tensor::from_values(shape, v, DType::F64);
  t.set_requires_grad(true);
  return t;
}

// A model holding only what mlm_loss uses: the word embeddings and the MLM head.
BertModel head_model(const std::vector<Tensor>& v) {
  BertModel m;
  m.config.vocab_size = kV;
  m.config.hidden_size = kC;
  m.config.hidden_act = Activation::Gelu;
  m.config.layer_norm_eps = 1e-12;
  m.word_embeddings = v[0];
  MlmHead h;
  h.transform.weight = v[1];
  h.transform.bias = v[2];
  h.norm.weight = v[3];
  h.norm.bias = v[4];
  h.decoder_bias = v[5];
  m.mlm = h;
  return m;
}

}  // namespace

TEST_CASE("gradcheck: MLM head with the decoder tied to an embedding lookup",
          "[pretrain][gradcheck]") {
  // E (V, C) both looks the tokens up (a stand-in encoder: tanh(E[ids] W0)) and decodes the
  // masked rows, so its gradient is the sum of both paths.
  const std::vector<Tensor> in = {f64_param({kV, kC}, 1, 0.8), f64_param({kC, kC}, 2, 0.5),
                                  f64_param({kC}, 3, 0.2),     f64_param({kC}, 4, 0.2, 1.0),
                                  f64_param({kC}, 5, 0.2),     f64_param({kV}, 6, 0.3),
                                  f64_param({kC, kC}, 7, 0.6)};
  const Tensor ids = Tensor::from_ints({kB, kT}, std::vector<std::int32_t>{2, 5, 7, 3, 2, 9, 4, 0});
  const Tensor positions = Tensor::from_ints({3}, std::vector<std::int32_t>{1, 2, 5});
  const Tensor labels = Tensor::from_ints({3}, std::vector<std::int32_t>{5, 7, 9});
  auto hidden = [&](const Tensor& table, const Tensor& w0) {
    return ops::tanh(ops::linear(ops::embedding(table, ids, 0), w0));  // (B, T, C)
  };
  auto fn = [&](const std::vector<Tensor>& v) {
    return mlm_loss(head_model(v), hidden(v[0], v[6]), positions, labels, ForwardOptions{}).loss;
  };
  GradcheckOptions o;
  o.eps = 1e-6;
  o.atol = 1e-8;
  o.rtol = 1e-6;
  const GradcheckResult r = gradcheck(fn, in, o);
  INFO(r.summary());
  REQUIRE(r.ok);
  CHECK(r.checked > 100);

  // The tied table's gradient is the lookup path's plus the decoder path's.
  auto grad_of_table = [&](bool lookup, bool decode) {
    std::vector<Tensor> v;
    for (const Tensor& t : in)
      v.push_back(Tensor::from_values(t.shape(), t.to_vector(), DType::F64));
    for (Tensor& t : v) t.set_requires_grad(true);
    Tensor frozen = Tensor::from_values(in[0].shape(), in[0].to_vector(), DType::F64);
    BertModel m = head_model(v);
    if (!decode) m.word_embeddings = frozen;
    backward(mlm_loss(m, hidden(lookup ? v[0] : frozen, v[6]), positions, labels, ForwardOptions{})
                 .loss);
    return v[0].grad().defined() ? v[0].grad().to_vector() : std::vector<double>(kV * kC, 0.0);
  };
  const auto both = grad_of_table(true, true), lookup = grad_of_table(true, false),
             decode = grad_of_table(false, true);
  double lookup_norm = 0, decode_norm = 0;
  for (size_t i = 0; i < both.size(); ++i) {
    REQUIRE(both[i] == Approx(lookup[i] + decode[i]).margin(1e-12));
    lookup_norm += lookup[i] * lookup[i];
    decode_norm += decode[i] * decode[i];
  }
  CHECK(lookup_norm > 1e-6);
  CHECK(decode_norm > 1e-6);
  // The padding row gets nothing from the lookup (padding_idx), only from the decoder.
  for (std::int64_t j = 0; j < kC; ++j) CHECK(lookup[static_cast<size_t>(j)] == 0.0);
}

TEST_CASE("pretrain: the gathered loss is BertForMaskedLM's loss over all positions with -100",
          "[pretrain]") {
  const BertConfig c = small_config(1);
  LoadOptions lo;
  lo.base = DType::F32;
  lo.with_mlm_head = true;
  lo.trainable = [](const std::string&) { return true; };
  lo.seed = 3;
  const BertModel m = init_bert(c, lo);
  BertInputs in{Tensor::from_ints({2, 5}, std::vector<std::int32_t>{2, 7, 4, 9, 3, 2, 11, 3, 0, 0}),
                Tensor::zeros({2, 5}, DType::I32),
                Tensor::from_ints({2, 5}, std::vector<std::int32_t>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0})};
  const Tensor h = m.encode(in, ForwardOptions{});
  const Tensor positions = Tensor::from_ints({3}, std::vector<std::int32_t>{1, 3, 6});
  const Tensor labels = Tensor::from_ints({3}, std::vector<std::int32_t>{8, 9, 30});
  const MlmOutput out = mlm_loss(m, h, positions, labels, ForwardOptions{});
  // HF: logits for every position, labels -100 where not masked.
  std::vector<std::int32_t> full(10, -100);
  full[1] = 8, full[3] = 9, full[6] = 30;
  const Tensor all = m.mlm_logits(ops::reshape(h, {10, 16}), ForwardOptions{});
  const Tensor reference = ops::cross_entropy(all, Tensor::from_ints({10}, full));
  CHECK(out.loss.item() == Approx(reference.item()).epsilon(1e-6));
  CHECK(out.count == 3);
  // Accuracy: arg-max of each masked row.
  std::int64_t correct = 0;
  const auto logits = all.to_vector();
  for (const int p : {1, 3, 6}) {
    const auto row = logits.begin() + p * 50;
    correct += std::max_element(row, row + 50) - row == full[static_cast<size_t>(p)];
  }
  CHECK(out.correct == correct);
}

TEST_CASE("pretrain: a run writes a BertForMaskedLM folder the classifier path loads",
          "[pretrain]") {
  Scratch dir("run");
  std::ofstream(dir.path / "corpus.txt") << kCorpus << kCorpus << kCorpus;
  PretrainConfig c;
  c.model_dir = tiny_model(dir.path / "init");
  c.corpus = {dir.path / "corpus.txt"};
  c.out = dir.path / "run";
  c.max_length = 16;
  c.batch_size = 4;
  c.lr = 3e-3;
  c.max_steps = 40;
  c.eval_split = 0.2;
  c.eval_every = 20;
  c.log_every = 10;
  c.threads = 1;
  c.save_f16 = true;
  const PretrainResult r = Pretrainer(c, nullptr).run();
  CHECK(r.steps == 40);
  CHECK_FALSE(r.interrupted);
  CHECK(r.tokens > 40 * 4 * 3);
  REQUIRE(r.final_eval);

  const auto metrics = read_metrics(c.out / "metrics.jsonl");
  std::vector<double> eval_losses;
  int train_lines = 0;
  for (const auto& j : metrics) {
    if (j["type"] == "eval") {
      eval_losses.push_back(j["mlm_loss"].get<double>());
      CHECK(j["mlm_accuracy"].get<double>() >= 0);
      CHECK(j["masked_tokens"].get<std::int64_t>() > 0);
    } else {
      ++train_lines;
      CHECK(j["type"] == "train");
    }
  }
  CHECK(train_lines == 4);
  REQUIRE(eval_losses.size() == 2);
  CHECK(eval_losses.back() == Approx(r.final_eval->loss));
  // Learning: far below the uniform guess over the vocabulary.
  CHECK(r.final_eval->loss < std::log(457.0) - 1.0);

  const auto config = nlohmann::json::parse(read_file(c.out / "config.json"));
  CHECK(config["architectures"] == nlohmann::json::array({"BertForMaskedLM"}));
  CHECK(config["hidden_dropout_prob"] == 0.1);
  CHECK(fs::exists(c.out / "vocab.txt"));
  CHECK(fs::exists(c.out / "tokenizer_config.json"));
  safetensors::Reader st(c.out / "model.safetensors");
  CHECK(st.find("cls.predictions.transform.dense.weight"));
  CHECK(st.find("cls.predictions.bias"));
  CHECK(st.find("bert.embeddings.word_embeddings.weight")->dtype == "F16");
  CHECK_FALSE(st.find("bert.pooler.dense.weight"));
  CHECK_FALSE(st.find("classifier.weight"));

  // The classifier path: cls.* ignored, a fresh pooler and classifier; it classifies.
  LoadReport report;
  LoadOptions lo;
  lo.base = DType::Q4;
  const BertModel m = load_bert(c.out, lo, &report);
  CHECK(report.layout == "masked-lm");
  CHECK(std::count(report.ignored.begin(), report.ignored.end(), "cls.predictions.bias") == 1);
  CHECK(std::count(report.initialised.begin(), report.initialised.end(), "classifier.weight") == 1);
  CHECK(std::count(report.initialised.begin(), report.initialised.end(),
                   "bert.pooler.dense.weight") == 1);
  const auto tok = data::load_tokenizer_from_model_dir(c.out);
  const auto e = tok.encode("the cat sat on the mat");
  const Shape s{1, static_cast<std::int64_t>(e.ids.size())};
  const Tensor logits = m.classify({Tensor::from_ints(s, e.ids), Tensor::from_ints(s, e.type_ids),
                                    Tensor::from_ints(s, e.attention_mask)},
                                   ForwardOptions{});
  CHECK(logits.shape() == Shape{1, 2});
  for (const double x : logits.to_vector()) CHECK(std::isfinite(x));

  // With the head kept, the MLM head comes back as trained (f16-rounded).
  LoadOptions keep;
  keep.base = DType::F32;
  keep.with_mlm_head = true;
  const BertModel again = load_bert(c.out, keep);
  REQUIRE(again.mlm);
}

TEST_CASE("pretrain: interrupt and resume end with the same bytes as an uninterrupted run",
          "[pretrain][resume]") {
  // ELECTRA too: its generator and discriminator head live only in train_state, and the samples
  // that a resumed run draws must be the ones the straight run drew.
  const PretrainObjective objective = GENERATE(PretrainObjective::MaskedLm, PretrainObjective::Electra);
  Scratch dir("resume");
  std::ofstream(dir.path / "corpus.txt") << kCorpus << kCorpus;
  PretrainConfig c;
  c.objective = objective;
  c.model_dir = tiny_model(dir.path / "init");
  c.corpus = {dir.path / "corpus.txt"};
  c.max_length = 12;
  c.batch_size = 3;
  c.max_steps = 14;  // crosses an epoch boundary
  c.eval_split = 0.15;
  c.eval_every = 5;
  c.log_every = 3;  // the interruption falls between two progress lines
  c.threads = 1;    // dropout stays on: the generator must be restored too

  c.out = dir.path / "straight";
  const PretrainResult straight = Pretrainer(c, nullptr).run();
  REQUIRE(straight.steps == 14);

  c.out = dir.path / "resumed";
  int asked = 0;
  const PretrainResult first = Pretrainer(c, nullptr).run(RunHooks{[&] { return ++asked == 7; }, {}});
  CHECK(first.interrupted);
  CHECK(first.steps == 7);
  const PretrainResult second = Pretrainer::resume(c.out, nullptr).run();
  CHECK_FALSE(second.interrupted);
  CHECK(second.steps == 14);
  CHECK(second.tokens == straight.tokens);

  CHECK(read_file(dir.path / "straight" / "model.safetensors") ==
        read_file(c.out / "model.safetensors"));
  // The metrics agree on everything but timings.
  auto strip = [](std::vector<nlohmann::json> v) {
    for (auto& j : v) {
      for (const char* k : {"tokens_per_second", "seconds", "memory_live", "memory_peak", "rss", "peak_rss",
                            "rss_file", "rss_private"}) {
        j.erase(k);
      }
    }
    return v;
  };
  CHECK(strip(read_metrics(dir.path / "straight" / "metrics.jsonl")) ==
        strip(read_metrics(c.out / "metrics.jsonl")));

  // A resume needs the same corpus.
  std::ofstream(dir.path / "corpus.txt", std::ios::app) << "a new line of text\n";
  CHECK_THROWS_WITH(Pretrainer::resume(c.out, nullptr).run(),
                    Catch::Contains("corpus files differ"));
}

// ---- ELECTRA ------------------------------------------------------------------------------------

namespace {

BertModel electra_discriminator() {
  LoadOptions lo;
  lo.base = DType::F32;
  lo.trainable = [](const std::string& name) { return in_masked_lm_checkpoint(name); };
  lo.seed = 3;
  return init_bert(small_config(2), lo);
}

// Two rows, the second padded; masked positions 1, 3 (row 0) and 6, 7 (row 1).
MlmBatch electra_batch() {
  MlmBatch b;
  b.inputs = {Tensor::from_ints({2, 5}, std::vector<std::int32_t>{2, 4, 9, 4, 3, 2, 4, 4, 0, 0}),
              Tensor::zeros({2, 5}, DType::I32),
              Tensor::from_ints({2, 5}, std::vector<std::int32_t>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0})};
  b.positions = Tensor::from_ints({4}, std::vector<std::int32_t>{1, 3, 6, 7});
  b.labels = Tensor::from_ints({4}, std::vector<std::int32_t>{8, 12, 30, 7});
  b.tokens = 8;
  return b;
}

std::vector<float> grad_of(const Tensor& t) {
  return t.grad().defined() ? std::vector<float>(t.grad().data<float>(), t.grad().data<float>() + t.numel())
                            : std::vector<float>(static_cast<size_t>(t.numel()), 0.0f);
}

}  // namespace

TEST_CASE("ELECTRA: the generator shares the model's embeddings and has its own layers and head",
          "[pretrain][electra]") {
  const BertModel d = electra_discriminator();
  const BertModel g = make_generator(d, 1, 11);
  CHECK(g.layers.size() == 1);
  REQUIRE(g.mlm);
  CHECK_FALSE(d.mlm);
  // The same tensors, not copies: one update reaches both.
  CHECK(g.word_embeddings.data<float>() == d.word_embeddings.data<float>());
  CHECK(g.position_embeddings.data<float>() == d.position_embeddings.data<float>());
  CHECK(g.token_type_embeddings.data<float>() == d.token_type_embeddings.data<float>());
  CHECK(g.embeddings_norm.weight.data<float>() == d.embeddings_norm.weight.data<float>());
  CHECK(g.layers[0].query.weight.data<float>() != d.layers[0].query.weight.data<float>());
  CHECK(g.layers[0].query.weight.requires_grad());
  CHECK_THROWS(make_generator(d, 0, 11));
  const RtdHead h = make_rtd_head(d.config, 5);
  CHECK(h.dense.weight.shape() == Shape{16, 16});
  CHECK(h.dense_prediction.weight.shape() == Shape{1, 16});
  CHECK(h.named_tensors().size() == 4);
}

TEST_CASE("ELECTRA: the loss is the generator's masked-LM loss plus the weighted detection loss of "
          "the sampled segment",
          "[pretrain][electra]") {
  const BertModel d = electra_discriminator();
  const BertModel g = make_generator(d, 1, 11);
  const RtdHead h = make_rtd_head(d.config, 5);
  const MlmBatch b = electra_batch();
  const std::vector<std::uint64_t> seeds{101, 202};
  const ForwardOptions fo;
  const ElectraOutput out = electra_loss(g, d, h, b, seeds, 50.0, fo);

  // The generator's part is mlm_loss of the generator.
  const MlmOutput ref_gen = mlm_loss(g, g.encode(b.inputs, fo), b.positions, b.labels, fo);
  CHECK(out.generator_loss.item() == Approx(ref_gen.loss.item()).epsilon(1e-6));
  CHECK(out.generator_correct == ref_gen.correct);
  CHECK(out.masked == 4);
  REQUIRE(out.samples.size() == 4);

  // The discriminator's part, computed here from the samples: the sampled ids in place, every
  // non-padding token judged, a sample equal to the original counted as original.
  std::vector<std::int32_t> ids{2, 4, 9, 4, 3, 2, 4, 4, 0, 0};
  const std::vector<int> pos{1, 3, 6, 7};
  const std::vector<int> lab{8, 12, 30, 7};
  std::vector<double> target(10, 0.0);
  std::int64_t replaced = 0;
  for (size_t k = 0; k < 4; ++k) {
    CHECK(out.samples[k] >= 0);
    CHECK(out.samples[k] < 50);
    ids[static_cast<size_t>(pos[k])] = out.samples[k];
    if (out.samples[k] != lab[k]) {
      target[static_cast<size_t>(pos[k])] = 1.0;
      ++replaced;
    }
  }
  CHECK(out.replaced == replaced);
  const Tensor dh = d.encode({Tensor::from_ints({2, 5}, ids), b.inputs.token_type_ids, b.inputs.attention_mask}, fo);
  const Tensor rows = ops::gather_rows(ops::reshape(dh, {10, 16}),
                                       Tensor::from_ints({8}, std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  const auto z = h.dense_prediction.forward(ops::gelu(h.dense.forward(rows, fo)), fo).to_vector();
  double bce = 0;
  std::int64_t right = 0;
  for (size_t i = 0; i < 8; ++i) {
    const double t = target[i];
    bce += std::max(z[i], 0.0) - z[i] * t + std::log1p(std::exp(-std::abs(z[i])));
    right += (z[i] > 0) == (t > 0.5);
  }
  bce /= 8;
  CHECK(out.tokens == 8);
  CHECK(out.rtd_loss.item() == Approx(bce).epsilon(1e-6));
  CHECK(out.rtd_correct == right);
  CHECK(out.loss.item() == Approx(ref_gen.loss.item() + 50.0 * bce).epsilon(1e-6));

  // The draws depend on the seeds only.
  CHECK(electra_loss(g, d, h, b, seeds, 50.0, fo).samples == out.samples);
  const std::vector<std::uint64_t> other{303, 404};
  CHECK(electra_loss(g, d, h, b, other, 50.0, fo).samples != out.samples);
  CHECK_THROWS(electra_loss(g, d, h, b, std::vector<std::uint64_t>{1}, 50.0, fo));
}

TEST_CASE("ELECTRA: samples follow the generator's softmax, and a sample equal to the original is "
          "not replaced",
          "[pretrain][electra]") {
  const BertModel d = electra_discriminator();
  BertModel g = make_generator(d, 1, 11);
  const RtdHead h = make_rtd_head(d.config, 5);
  const MlmBatch b = electra_batch();
  // A decoder bias that makes token 7 near certain: every sample is 7, and the one masked position
  // whose original is 7 counts as original.
  g.mlm->decoder_bias.data<float>()[7] = 60.0f;
  const ElectraOutput out = electra_loss(g, d, h, b, std::vector<std::uint64_t>{1, 2}, 50.0, ForwardOptions{});
  CHECK(out.samples == std::vector<std::int32_t>{7, 7, 7, 7});
  CHECK(out.replaced == 3);

  // Two tokens at equal odds: over many draws each comes about half the time.
  g.mlm->decoder_bias.data<float>()[7] = 0.0f;
  for (std::int64_t i = 0; i < 50; ++i) g.mlm->decoder_bias.data<float>()[i] = i == 9 || i == 21 ? 60.0f : -60.0f;
  int nines = 0, draws = 0;
  for (std::uint64_t s = 0; s < 100; ++s) {
    const ElectraOutput o = electra_loss(g, d, h, b, std::vector<std::uint64_t>{2 * s, 2 * s + 1}, 50.0, ForwardOptions{});
    for (const std::int32_t x : o.samples) {
      CHECK((x == 9 || x == 21));
      nines += x == 9;
      ++draws;
    }
  }
  // 400 fair draws: 200 +- 3 standard deviations (10 each).
  CHECK(std::abs(nines - draws / 2) < 30);
}

TEST_CASE("ELECTRA: the shared embeddings get the generator's and the discriminator's gradients",
          "[pretrain][electra]") {
  const MlmBatch b = electra_batch();
  const std::vector<std::uint64_t> seeds{101, 202};
  const ForwardOptions fo;
  // Each part alone, then both: the shared word embeddings' gradient is the sum.
  auto word_grad = [&](double generator_share, double rtd_weight) {
    const BertModel d = electra_discriminator();
    const BertModel g = make_generator(d, 1, 11);
    const RtdHead h = make_rtd_head(d.config, 5);
    const ElectraOutput out = electra_loss(g, d, h, b, seeds, rtd_weight, fo);
    backward(ops::add(ops::scale(out.generator_loss, generator_share), ops::scale(out.rtd_loss, rtd_weight)));
    // The discriminator's layers get a gradient from the detection loss only, the generator's from
    // its masked-LM loss only.
    auto norm = [](const std::vector<float>& v) {
      double n = 0;
      for (const float x : v) n += static_cast<double>(x) * x;
      return n;
    };
    CHECK((norm(grad_of(d.layers[0].query.weight)) > 0) == (rtd_weight > 0));
    CHECK((norm(grad_of(g.layers[0].query.weight)) > 0) == (generator_share > 0));
    return grad_of(d.word_embeddings);
  };
  const auto gen_only = word_grad(1.0, 0.0);
  const auto rtd_only = word_grad(0.0, 50.0);
  const auto both = word_grad(1.0, 50.0);
  double gen_norm = 0, rtd_norm = 0;
  for (size_t i = 0; i < both.size(); ++i) {
    gen_norm += gen_only[i] * gen_only[i];
    rtd_norm += rtd_only[i] * rtd_only[i];
    CHECK(both[i] == Approx(gen_only[i] + rtd_only[i]).margin(1e-6));
  }
  CHECK(gen_norm > 0);
  CHECK(rtd_norm > 0);
}

TEST_CASE("pretrain --objective electra: the run saves the discriminator, which fine-tuning loads",
          "[pretrain][electra]") {
  Scratch dir("electra");
  std::ofstream(dir.path / "corpus.txt") << kCorpus << kCorpus << kCorpus;
  PretrainConfig c;
  c.model_dir = tiny_model(dir.path / "init");
  c.corpus = {dir.path / "corpus.txt"};
  c.out = dir.path / "run";
  c.objective = PretrainObjective::Electra;
  c.max_length = 16;
  c.batch_size = 4;
  c.lr = 3e-3;
  c.max_steps = 30;
  c.eval_split = 0.2;
  c.eval_every = 15;
  c.log_every = 10;
  c.threads = 1;
  const PretrainResult r = Pretrainer(c, nullptr).run();
  CHECK(r.steps == 30);
  REQUIRE(r.final_eval);
  REQUIRE(r.final_eval->rtd_accuracy);
  CHECK(*r.final_eval->rtd_accuracy > 0.5);
  int evals = 0;
  for (const auto& j : read_metrics(c.out / "metrics.jsonl")) {
    if (j["type"] != "eval") continue;
    ++evals;
    CHECK(j.contains("rtd_loss"));
    CHECK(j.contains("generator_mlm_loss"));
    CHECK_FALSE(j.contains("mlm_loss"));  // the discriminator has no masked-LM loss to report
  }
  CHECK(evals == 2);
  safetensors::Reader st(c.out / "model.safetensors");
  CHECK(st.find("bert.encoder.layer.1.output.dense.weight"));
  CHECK_FALSE(st.find("cls.predictions.bias"));
  CHECK_FALSE(st.find("generator.bert.encoder.layer.0.output.dense.weight"));
  CHECK_FALSE(st.find("discriminator_predictions.dense.weight"));
  LoadOptions lo;
  lo.base = DType::Q4;
  CHECK(load_bert(c.out, lo).layers.size() == 2);
  // More masked-LM training from it starts a fresh head.
  LoadOptions mlm;
  mlm.base = DType::F32;
  mlm.with_mlm_head = true;
  LoadReport report;
  CHECK(load_bert(c.out, mlm, &report).mlm);
  CHECK(std::count(report.initialised.begin(), report.initialised.end(), "cls.predictions.bias") == 1);

  // Its loss is not split into micro-batches, and the planner does not count its generator.
  c.out = dir.path / "budget";
  c.memory_budget = 64 << 20;
  CHECK_THROWS_WITH(Pretrainer(c, nullptr).run(), Catch::Contains("--objective electra takes no --memory-budget"));
  CHECK_FALSE(fs::exists(c.out));
}
