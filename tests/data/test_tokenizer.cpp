// WordPieceTokenizer against goldens made by Hugging Face tokenizers (Rust) through
// tests/golden/tokenizer/make_goldens.mjs: hand-made tricky cases on small committed vocabularies
// and on the shipped Chinese model's vocabulary (always run), the same cases and real data lines on
// the full BERT vocabularies of ../shared/data (skipped without it), and every code point through
// normalization and pre-tokenization.
// Not here: the data readers (test_reader.cpp), fuzzing (test_fuzz.cpp).
#include <utf8proc.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "edgetune/data/error.h"
#include "edgetune/data/reader.h"
#include "edgetune/data/tokenizer.h"
#include "test_support.h"

using edgetune::data::DataError;
using edgetune::data::Encoding;
using edgetune::data::TokenizerOptions;
using edgetune::data::Vocab;
using edgetune::data::WordPieceTokenizer;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path golden(const std::string& name) {
  return edgetune::test::golden_dir() / "tokenizer" / name;
}

json load_json(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE(in.good());
  return json::parse(in);
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// The vocabulary a golden names: a committed file beside it, "repo:<path>" in the repository (a
// shipped model's), or "shared:<path>" in ../shared/data (nothing when that folder is absent).
std::optional<Vocab> golden_vocab(const std::string& name) {
  const std::string repo_prefix = "repo:";
  if (name.rfind(repo_prefix, 0) == 0) {
    return Vocab::load(fs::path(EDGETUNE_TEST_DIR).parent_path() / name.substr(repo_prefix.size()));
  }
  const std::string shared_prefix = "shared:";
  if (name.rfind(shared_prefix, 0) == 0) {
    const fs::path dir = edgetune::test::shared_data_dir();
    if (dir.empty()) return std::nullopt;
    return Vocab::load(dir / name.substr(shared_prefix.size()));
  }
  return Vocab::load(golden(name));
}

std::string describe(const std::vector<int32_t>& ids) {
  return json(ids).dump();
}

// `s` as a JSON string literal, any bytes accepted (invalid UTF-8 shown as U+FFFD).
std::string json_literal(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Runs every case of a hand-made golden; returns the number of cases compared.
int check_hand_golden(const std::string& file) {
  const json g = load_json(golden(file));
  REQUIRE(g["format"] == "edgetune tokenizer golden");
  REQUIRE(g["version"] == 1);
  const auto vocab = golden_vocab(g["vocab"]);
  if (!vocab) {
    WARN("skipped: " << file << " needs " << g["vocab"] << " from ../shared/data");
    return 0;
  }
  TokenizerOptions options;
  options.do_lower_case = g["do_lower_case"];
  if (!g["strip_accents"].is_null()) options.strip_accents = g["strip_accents"].get<bool>();
  const WordPieceTokenizer tok(*vocab, options);
  int compared = 0;
  for (const json& c : g["cases"]) {
    const std::string a = c.contains("a_hex") ? from_hex(c["a_hex"]) : c["a"].get<std::string>();
    std::optional<std::string> b;
    if (c.contains("b_hex")) b = from_hex(c["b_hex"]);
    if (c.contains("b")) b = c["b"].get<std::string>();
    const std::vector<int32_t> want_ids = c["ids"];
    const std::vector<int32_t> want_types = c["type_ids"];
    const std::vector<std::string> want_tokens = c["tokens"];
    const int max_length = c.value("max_length", edgetune::data::kNoTruncation);
    INFO(file << ": a=" << json_literal(a) << (b ? " b=" + json_literal(*b) : "")
              << " max_length=" << max_length);
    Encoding e;
    if (max_length < (b ? 3 : 2)) {
      // HF skips truncation here (an unsigned underflow); edgetune rejects the request.
      CHECK_THROWS_AS(tok.encode(a, b, max_length), std::invalid_argument);
      e = tok.encode(a, b, edgetune::data::kNoTruncation);
    } else {
      e = tok.encode(a, b, max_length);
      CHECK(e.truncated == (max_length != edgetune::data::kNoTruncation &&
                            tok.encode(a, b, edgetune::data::kNoTruncation).ids.size() >
                                static_cast<size_t>(max_length)));
    }
    CHECK(describe(e.ids) == describe(want_ids));
    CHECK(e.type_ids == want_types);
    CHECK(e.attention_mask == std::vector<int32_t>(want_ids.size(), 1));
    CHECK(e.invalid_utf8 == c["invalid_utf8"].get<int>());
    if (!b && c.value("max_length", 0) == 0) {
      std::vector<std::string> tokens = tok.tokenize(a);
      tokens.insert(tokens.begin(), "[CLS]");
      tokens.push_back("[SEP]");
      CHECK(tokens == want_tokens);
    }
    ++compared;
  }
  return compared;
}

}  // namespace

TEST_CASE("tokenizer matches HF on hand-made cases (small vocabularies)") {
  int n = 0;
  n += check_hand_golden("hand_mini_uncased.json");
  n += check_hand_golden("hand_mini_chinese.json");
  n += check_hand_golden("hand_mini_cased.json");
  n += check_hand_golden("hand_mini_lower_keep_accents.json");
  CHECK(n == 400);  // 100 cases, 4 configurations
}

TEST_CASE("tokenizer matches HF on the shipped Chinese model's vocabulary") {
  // The hand-made cases and ten more in Chinese (reviews, traditional and classical text, technical
  // words, characters the pruned vocabulary lacks), on models/edgetune-mini-chinese/vocab.txt.
  CHECK(check_hand_golden("hand_model_chinese.json") == 110);
}

TEST_CASE("tokenizer matches HF on hand-made cases (full BERT vocabularies)") {
  check_hand_golden("hand_full_uncased.json");
  check_hand_golden("hand_full_chinese.json");
}

namespace {

std::string utf8_of(char32_t cp) {
  std::string s;
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  s.assign(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
  return s;
}

// Every code point c, as "a" + c + "a", through normalization and pre-tokenization, against the
// reference's sweep (runs of: = kept in the word, - dropped, s whitespace, p split off; or the
// explicit pre-tokens as comma-separated hex code points). A difference is allowed only on a
// code point that utf8proc does not know as assigned (newer Unicode in the reference's Rust).
void check_sweep(const std::string& file, bool lowercase) {
  std::ifstream in(golden(file));
  REQUIRE(in.good());
  TokenizerOptions options;
  options.do_lower_case = lowercase;
  const WordPieceTokenizer tok(Vocab::load(golden("mini-uncased-vocab.txt")), options);
  long checked = 0, tolerated = 0, failed = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string first_hex, last_hex, kind;
    fields >> first_hex >> last_hex >> kind;
    const auto first = static_cast<char32_t>(std::stoul(first_hex, nullptr, 16));
    const auto last = static_cast<char32_t>(std::stoul(last_hex, nullptr, 16));
    std::vector<std::string> explicit_pieces;
    if (kind.size() > 1 || (kind != "=" && kind != "-" && kind != "s" && kind != "p")) {
      std::string piece = kind;
      do {
        std::string bytes;
        std::istringstream cps(piece);
        std::string h;
        while (std::getline(cps, h, ','))
          bytes += utf8_of(static_cast<char32_t>(std::stoul(h, nullptr, 16)));
        explicit_pieces.push_back(bytes);
      } while (fields >> piece);
      kind = "x";
    }
    for (char32_t cp = first; cp <= last; ++cp) {
      const std::string c = utf8_of(cp);
      std::vector<std::string> want;
      if (kind == "=") want = {"a" + c + "a"};
      if (kind == "-") want = {"aa"};
      if (kind == "s") want = {"a", "a"};
      if (kind == "p") want = {"a", c, "a"};
      if (kind == "x") want = explicit_pieces;
      const std::vector<std::string> got = tok.pre_tokenize("a" + c + "a");
      ++checked;
      if (got == want) continue;
      if (utf8proc_category(static_cast<utf8proc_int32_t>(cp)) == UTF8PROC_CATEGORY_CN) {
        ++tolerated;
        continue;
      }
      if (++failed <= 20) {
        std::string g;
        for (const auto& p : got) g += json_literal(p) + " ";
        FAIL_CHECK(file << ": U+" << std::hex << static_cast<uint32_t>(cp) << std::dec
                        << " expected kind " << kind << ", got " << g);
      }
    }
  }
  CHECK(checked == 0x110000 - 0x800);  // every scalar value
  CHECK(failed == 0);
  WARN(file << ": " << checked << " code points compared, " << tolerated
            << " differ only where utf8proc's Unicode has no character yet");
}

}  // namespace

TEST_CASE("normalization and pre-tokenization match HF on every code point") {
  check_sweep("sweep_uncased.txt", true);
  check_sweep("sweep_cased.txt", false);
}

namespace {

// Real data lines against the reference's token ids (the goldens hold line numbers and ids, the
// text is read from ../shared/data now). Returns the number of single lines compared.
int check_real_golden(const std::string& file) {
  const json g = load_json(golden(file));
  const fs::path dir = edgetune::test::shared_data_dir();
  const auto vocab = golden_vocab(g["vocab"]);
  if (dir.empty() || !vocab) {
    WARN("skipped: " << file << " needs ../shared/data");
    return 0;
  }
  edgetune::data::ReadOptions read;
  read.header = edgetune::data::Header::kPresent;
  read.text_column = edgetune::data::ColumnRef(g["column"].get<int>());
  const auto ds = edgetune::data::read_dataset(dir / g["data"].get<std::string>(), read);
  std::map<int64_t, const std::string*> text_of_line;
  for (const auto& e : ds.examples) text_of_line[e.line] = &e.text;

  TokenizerOptions options;
  options.do_lower_case = g["do_lower_case"];
  const WordPieceTokenizer tok(*vocab, options);
  const int max_length = g["max_length"];
  int compared = 0, mismatched = 0;
  for (const json& row : g["lines"]) {
    const int64_t line = row[0];
    const std::vector<int32_t> want = row[1];
    REQUIRE(text_of_line.count(line) == 1);
    const Encoding e = tok.encode(*text_of_line[line], std::nullopt, max_length);
    ++compared;
    if (e.ids != want && ++mismatched <= 5) {
      FAIL_CHECK(file << " line " << line << ": got " << describe(e.ids) << ", want "
                      << describe(want));
    }
  }
  const int pair_max = g["pair_max_length"];
  int pairs = 0;
  for (const json& row : g["pairs"]) {
    const std::vector<int32_t> want = row[2];
    const std::vector<int32_t> want_types = row[3];
    const Encoding e = tok.encode(*text_of_line.at(row[0]), *text_of_line.at(row[1]), pair_max);
    ++pairs;
    if ((e.ids != want || e.type_ids != want_types) && ++mismatched <= 10) {
      FAIL_CHECK(file << " pair of lines " << row[0] << ", " << row[1] << ": got "
                      << describe(e.ids) << ", want " << describe(want));
    }
  }
  CHECK(mismatched == 0);
  WARN(file << ": " << compared << " real lines and " << pairs
            << " pairs compared with the reference, " << mismatched << " differ");
  return compared;
}

}  // namespace

TEST_CASE("tokenizer matches HF on real data lines (../shared/data)") {
  const int english = check_real_golden("real_sst2_train.json");
  const int chinese = check_real_golden("real_chnsenticorp_train.json");
  if (english + chinese > 0) {
    CHECK(english >= 1000);
    CHECK(chinese >= 1000);
    CHECK(english + chinese >= 2000);
  }
}

TEST_CASE("tokenizer throughput on SST-2 (printed, not asserted)") {
  const fs::path dir = edgetune::test::shared_data_dir();
  if (dir.empty()) {
    WARN("skipped: needs ../shared/data");
    return;
  }
  edgetune::data::ReadOptions read;
  read.text_column = "sentence";
  read.label_column = "label";
  const auto ds = edgetune::data::read_dataset(dir / "sst2/train.tsv", read);
  const WordPieceTokenizer tok(Vocab::load(dir / "vocab/bert-base-uncased-vocab.txt"));
  const auto start = std::chrono::steady_clock::now();
  size_t tokens = 0;
  for (const auto& e : ds.examples) tokens += tok.encode(e.text).ids.size();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WARN("encoded " << ds.examples.size() << " SST-2 lines (" << tokens << " tokens) in " << seconds
                  << " s: " << static_cast<long>(static_cast<double>(ds.examples.size()) / seconds)
                  << " lines/s");
  CHECK(tokens > ds.examples.size() * 2);

  edgetune::data::ReadOptions chinese_read;
  chinese_read.text_column = "text_a";
  const auto chn = edgetune::data::read_dataset(dir / "chnsenticorp/train.tsv", chinese_read);
  const WordPieceTokenizer chinese(Vocab::load(dir / "vocab/bert-base-chinese-vocab.txt"));
  const auto chinese_start = std::chrono::steady_clock::now();
  size_t chinese_tokens = 0;
  for (const auto& e : chn.examples) chinese_tokens += chinese.encode(e.text).ids.size();
  const double chinese_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - chinese_start).count();
  WARN("encoded " << chn.examples.size() << " ChnSentiCorp reviews (" << chinese_tokens
                  << " tokens) in " << chinese_seconds << " s: "
                  << static_cast<long>(static_cast<double>(chn.examples.size()) / chinese_seconds)
                  << " lines/s");
}

TEST_CASE("lowercasing is HF's Rust one: İ -> i + U+0307, Σ -> σ everywhere") {
  const Vocab vocab = Vocab::load(golden("mini-uncased-vocab.txt"));
  TokenizerOptions keep_accents;
  keep_accents.strip_accents = false;
  const WordPieceTokenizer lower(vocab, keep_accents);
  CHECK(lower.pre_tokenize("\xC4\xB0") == std::vector<std::string>{"i\xCC\x87"});
  // Python's str.lower() would end the word with ς (U+03C2); HF's Rust lowercases per character.
  CHECK(lower.pre_tokenize("\xCE\xA3\xCE\x91\xCE\xA3") ==
        std::vector<std::string>{"\xCF\x83\xCE\xB1\xCF\x83"});
  // With accents stripped (the default of uncased models), İ is I + U+0307 first: plain "i".
  const WordPieceTokenizer uncased(vocab);
  CHECK(uncased.pre_tokenize("\xC4\xB0") == std::vector<std::string>{"i"});
  // ß has no single-letter lowercase change and no decomposition: it stays.
  CHECK(uncased.pre_tokenize("STRA\xC3\x9F"
                             "E") == std::vector<std::string>{"stra\xC3\x9F"
                                                              "e"});
}

TEST_CASE("Vocab loading and the special tokens") {
  const fs::path dir = fs::temp_directory_path() / "edgetune_vocab_test";
  fs::create_directories(dir);
  std::ofstream(dir / "vocab.txt", std::ios::binary)
      << "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhello \r\nworld\r\nhello\r\n##s";
  const Vocab v = Vocab::load(dir / "vocab.txt");
  CHECK(v.size() == 9);
  CHECK(v.token(5) == "hello");  // trailing whitespace and "\r" are not part of a token
  CHECK(v.id("hello") == 7);     // a repeated token: the later line, as in HF
  CHECK(v.id("##s") == 8);
  CHECK_FALSE(v.id("nope"));
  CHECK_THROWS_AS(v.token(9), std::out_of_range);
  const WordPieceTokenizer tok(v);
  CHECK(tok.pad_id() == 0);
  CHECK(tok.unk_id() == 1);
  CHECK(tok.cls_id() == 2);
  CHECK(tok.sep_id() == 3);
  CHECK(tok.mask_id() == 4);
  CHECK(tok.tokenize("Hello worlds unknown") ==
        std::vector<std::string>{"hello", "world", "##s", "[UNK]"});
  CHECK_THROWS_AS(tok.encode("a", std::nullopt, 1), std::invalid_argument);
  CHECK_THROWS_AS(tok.encode("a", "b", 2), std::invalid_argument);
  CHECK(tok.encode("a", "b", 3).ids == std::vector<int32_t>{2, 3, 3});
  TokenizerOptions zero;
  zero.max_input_chars_per_word = 0;
  CHECK_THROWS_AS(WordPieceTokenizer(v, zero), std::invalid_argument);

  try {
    WordPieceTokenizer(Vocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]"}, "small.txt"));
    FAIL("a vocabulary without [MASK] must be refused");
  } catch (const DataError& e) {
    CHECK(std::string(e.what()).rfind("small.txt: no line holds the special token [MASK]", 0) == 0);
  }
  std::ofstream(dir / "empty.txt");
  CHECK_THROWS_AS(Vocab::load(dir / "empty.txt"), DataError);
  fs::remove_all(dir);
}

TEST_CASE("tokenizer from a model folder reads tokenizer_config.json") {
  const fs::path dir = fs::temp_directory_path() / "edgetune_model_dir_test";
  fs::create_directories(dir);
  CHECK_THROWS_AS(edgetune::data::load_tokenizer_from_model_dir(dir), DataError);  // no vocab.txt
  fs::copy_file(golden("mini-uncased-vocab.txt"), dir / "vocab.txt");
  CHECK(edgetune::data::load_tokenizer_from_model_dir(dir).options().do_lower_case);

  std::ofstream(dir / "tokenizer_config.json")
      << R"({"do_lower_case": false, "strip_accents": true, "tokenize_chinese_chars": false})";
  auto tok = edgetune::data::load_tokenizer_from_model_dir(dir);
  CHECK_FALSE(tok.options().do_lower_case);
  CHECK(tok.options().strip_accents == true);
  CHECK_FALSE(tok.options().tokenize_chinese_chars);
  CHECK(tok.pre_tokenize("Caf\xC3\xA9") == std::vector<std::string>{"Cafe"});

  std::ofstream(dir / "tokenizer_config.json") << R"({"do_lower_case": "yes"})";
  try {
    edgetune::data::load_tokenizer_from_model_dir(dir);
    FAIL("a string do_lower_case must be refused");
  } catch (const DataError& e) {
    CHECK(std::string(e.what()).find("tokenizer_config.json: expected \"do_lower_case\" to be true "
                                     "or false") != std::string::npos);
  }
  std::ofstream(dir / "tokenizer_config.json") << "{";
  CHECK_THROWS_AS(edgetune::data::load_tokenizer_from_model_dir(dir), DataError);
  fs::remove_all(dir);
}
