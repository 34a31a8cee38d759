// Deterministic robustness test: a few thousand random and mutated byte strings through the
// TSV / CSV / JSONL readers and the tokenizer. No crash (the sanitizer build checks memory), and
// a bad input raises only DataError, with a one-line message. The libFuzzer targets in fuzz/
// search far longer; this keeps the same checks in every test run, in about a second.
#include <catch2/catch.hpp>

#include "edgetune/data/error.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/reader.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/data/tokenizer.h"
#include "test_support.h"

using namespace edgetune::data;

namespace {

const char* const kSeeds[] = {
    "sentence\tlabel\nit is good\t1\r\nbad\t0\n\nugly\t0",
    "ham\thi there\nspam\twin now\n",
    "text,label\r\n\"with, comma\",neg\r\n\"two\nlines\",pos\n\"say \"\"hi\"\"\",neg\n",
    "text,pair,label\n\"a\",\"b\",1\n\"never closed,1\n",
    "{\"text\": \"good\", \"label\": 1}\n{\"text\": \"bad\", \"label\": \"0\"}\n{bad json\n",
    "Hello, world! na\xC3\xAFve caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xC4\xB0 [SEP] unaffable",
};

// Pieces that matter to the parsers and the tokenizer, spliced into the inputs.
const char* const kPieces[] = {
    "\t",
    ",",
    "\"",
    "\"\"",
    "\n",
    "\r\n",
    "\r",
    "{",
    "}",
    "[",
    "]",
    ":",
    "\\u0000",
    "\\ud800",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "##",
    "\xC3",
    "\xE4\xB8",
    "\xF0\x9F\x98\x80",
    "\xFF",
    "\xED\xA0\x80",
    "\xC0\xAF",
    "\xEF\xBB\xBF",
    "\xE2\x80\x8B",
    "\xCC\x81",
    "\xC4\xB0",
    "\xCE\xA3",
    "label",
    "text",
    "1",
    "-1",
    "\x00",
    "\xEF\xBF\xBD",
};

std::string mutate(std::string s, Rng& rng) {
  const int edits = 1 + static_cast<int>(rng.below(8));
  for (int k = 0; k < edits; ++k) {
    const size_t at = s.empty() ? 0 : static_cast<size_t>(rng.below(s.size() + 1));
    switch (rng.below(5)) {
      case 0:  // flip a byte
        if (!s.empty() && at < s.size()) s[at] = static_cast<char>(rng.below(256));
        break;
      case 1:  // delete a run
        if (at < s.size()) s.erase(at, static_cast<size_t>(rng.below(8)));
        break;
      case 2:  // duplicate a run
        if (at < s.size()) s.insert(at, s.substr(at, static_cast<size_t>(rng.below(16))));
        break;
      default: {  // splice a piece
        const size_t p = static_cast<size_t>(rng.below(std::size(kPieces)));
        const std::string piece = p == 33 ? std::string(1, '\0') : std::string(kPieces[p]);
        s.insert(at, piece);
      }
    }
  }
  return s;
}

std::string random_bytes(Rng& rng) {
  std::string s(static_cast<size_t>(rng.below(64)), '\0');
  for (char& c : s) c = static_cast<char>(rng.below(256));
  return s;
}

void check_one_line(const DataError& e) {
  const std::string what = e.what();
  CHECK(what.find('\n') == std::string::npos);
  CHECK(what.find('\r') == std::string::npos);
}

}  // namespace

TEST_CASE("random and mutated inputs: readers raise only one-line DataErrors") {
  Rng rng(20240229);
  const LabelMap fixed(std::vector<std::string>{"0", "1", "neg", "pos"});
  int inputs = 0, errors = 0, rows = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string bytes =
        rng.below(4) == 0 ? random_bytes(rng) : mutate(kSeeds[rng.below(std::size(kSeeds))], rng);
    for (const Format format : {Format::kTsv, Format::kCsv, Format::kJsonl}) {
      ReadOptions o;
      o.format = format;
      o.skip_bad_rows = rng.below(2) == 0;
      const bool names = format == Format::kJsonl || rng.below(2) == 0;
      o.text_column = names ? ColumnRef("text") : ColumnRef(static_cast<int>(rng.below(3)));
      if (rng.below(2)) {
        o.label_column = names ? ColumnRef("label") : ColumnRef(static_cast<int>(rng.below(3)));
      }
      if (rng.below(4) == 0) o.labels = &fixed;
      ++inputs;
      try {
        const Dataset ds = read_dataset_from_bytes(bytes, "fuzz.txt", o);
        rows += static_cast<int>(ds.examples.size());
        for (const auto& m : ds.bad_row_messages) CHECK(m.find('\n') == std::string::npos);
      } catch (const DataError& e) {
        ++errors;
        check_one_line(e);
      }
    }
  }
  WARN(inputs << " reader inputs: " << rows << " rows read, " << errors << " DataErrors");
  CHECK(inputs == 9000);
}

TEST_CASE("random and mutated inputs: the tokenizer never fails") {
  const Vocab vocab =
      Vocab::load(edgetune::test::golden_dir() / "tokenizer/mini-uncased-vocab.txt");
  const WordPieceTokenizer uncased(vocab);
  TokenizerOptions cased_options;
  cased_options.do_lower_case = false;
  cased_options.max_input_chars_per_word = 5;
  const WordPieceTokenizer cased(vocab, cased_options);
  Rng rng(7);
  long tokens = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string a =
        rng.below(3) == 0 ? random_bytes(rng) : mutate(kSeeds[rng.below(std::size(kSeeds))], rng);
    const std::string b = mutate(kSeeds[5], rng);
    const WordPieceTokenizer& tok = rng.below(2) ? uncased : cased;
    const int max_length = 3 + static_cast<int>(rng.below(40));
    const Encoding single = tok.encode(a, std::nullopt, max_length);
    const Encoding pair = tok.encode(a, b, max_length);
    CHECK(single.ids.size() <= static_cast<size_t>(max_length));
    CHECK(pair.ids.size() <= static_cast<size_t>(max_length));
    CHECK(pair.type_ids.size() == pair.ids.size());
    for (const int32_t id : pair.ids) CHECK((id >= 0 && id < vocab.size()));
    tokens += static_cast<long>(tok.tokenize(a).size());
  }
  CHECK(tokens > 0);
}
