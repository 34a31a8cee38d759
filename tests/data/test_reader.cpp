// TSV / CSV / JSONL readers: formats, header detection, columns, line numbers, bad rows; and the
// real data sets of ../shared/data (skipped without it). Not here: tokenization, label maps.
#include <catch2/catch.hpp>
#include <fstream>

#include "edgetune/data/error.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/reader.h"
#include "test_support.h"

using namespace edgetune::data;
namespace fs = std::filesystem;

namespace {

Dataset read(std::string_view bytes, const std::string& name, const ReadOptions& o) {
  return read_dataset_from_bytes(bytes, name, o);
}

ReadOptions by_name(const char* text, const char* label) {
  ReadOptions o;
  o.text_column = text;
  o.label_column = ColumnRef(label);
  return o;
}

ReadOptions by_index(int text, int label) {
  ReadOptions o;
  o.text_column = ColumnRef(text);
  o.label_column = ColumnRef(label);
  return o;
}

// The what() of the DataError that reading throws ("" when it does not throw).
std::string error_of(std::string_view bytes, const std::string& name, const ReadOptions& o) {
  try {
    read(bytes, name, o);
  } catch (const DataError& e) {
    const std::string what = e.what();
    CHECK(what.find('\n') == std::string::npos);
    return what;
  }
  return "";
}

}  // namespace

TEST_CASE("TSV with a header, columns by name") {
  const auto ds = read("sentence\tlabel\nit is good \t1\r\nbad\t0\n\nugly\t0", "train.tsv",
                       by_name("sentence", "label"));
  REQUIRE(ds.examples.size() == 3);
  CHECK(ds.header == std::vector<std::string>{"sentence", "label"});
  CHECK(ds.examples[0].text == "it is good ");
  CHECK(ds.examples[0].label == "1");
  CHECK(ds.examples[0].line == 2);
  CHECK(ds.examples[1].text == "bad");  // "\r\n" line end
  CHECK(ds.examples[2].line == 5);      // the empty line 4 is skipped but counted
  CHECK_FALSE(ds.examples[0].text_pair);
}

TEST_CASE("TSV errors name the file, the line and what was expected") {
  CHECK(
      error_of("sentence\tlabel\nok\t1\njust text\n", "train.tsv", by_name("sentence", "label")) ==
      "train.tsv:3: expected 2 columns (sentence, label), found 1");
  CHECK(error_of("sentence\tlabel\n\t1\n", "train.tsv", by_name("sentence", "label")) ==
        "train.tsv:2: empty text in column \"sentence\"");
  CHECK(error_of("sentence\tlabel\nok\t\n", "train.tsv", by_name("sentence", "label")) ==
        "train.tsv:2: empty label in column \"label\"");
  CHECK(error_of("text\tlabel\nok\t1\n", "train.tsv", by_name("sentence", "label")) ==
        "train.tsv:1: no column named \"sentence\" in the header (text, label)");
  CHECK(error_of("a\t1\nb\t0\n", "x.tsv", by_index(3, 1)) ==
        "x.tsv:1: column #3 is out of range: the first row has 2 columns");
  CHECK(error_of("a\t1\nb\t0\tc\n", "x.tsv", by_index(0, 1)) ==
        "x.tsv:2: expected 2 columns (as on line 1), found 3");
  ReadOptions unset;
  CHECK_THROWS_AS(read("a\n", "x.tsv", unset), std::invalid_argument);
}

TEST_CASE("header detection when columns are chosen by index") {
  // SST-2 style: "label" never occurs as a label below it -> header.
  auto ds = read("sentence\tlabel\ngood\t1\nbad\t0\n", "a.tsv", by_index(0, 1));
  CHECK(ds.header.size() == 2);
  CHECK(ds.examples.size() == 2);
  // SMS Spam style: the first label "ham" occurs again -> data.
  ds = read("ham\thi there\nspam\twin now\nham\tok\n", "SMSSpamCollection", by_index(1, 0));
  CHECK(ds.header.empty());
  REQUIRE(ds.examples.size() == 3);
  CHECK(ds.examples[0].label == "ham");
  CHECK(ds.examples[0].line == 1);
  // With a fixed label map, a first row whose label is in the map is data.
  const LabelMap map(std::vector<std::string>{"ham", "spam"});
  ReadOptions o = by_index(1, 0);
  o.labels = &map;
  ds = read("spam\twin now\nham\tok\n", "sms", o);
  CHECK(ds.examples.size() == 2);
  CHECK(ds.examples[0].label_id == 1);
  // Explicit choices win.
  o = by_index(1, 0);
  o.header = Header::kPresent;
  ds = read("ham\thi\nspam\tyo\n", "sms", o);
  CHECK(ds.examples.size() == 1);
  o.header = Header::kAbsent;
  ds = read("label\ttext\n1\tyo\n", "x", o);
  CHECK(ds.examples.size() == 2);
  // Names need a header.
  ReadOptions named = by_name("text", "label");
  named.header = Header::kAbsent;
  CHECK_THROWS_AS(read("1\tyo\n", "x", named), DataError);
  // No label column and indexes only: no header unless told.
  ReadOptions text_only;
  text_only.text_column = ColumnRef(0);
  CHECK(read("sentence\nhello\n", "x", text_only).examples.size() == 2);
}

TEST_CASE("CSV: RFC 4180 quoting, embedded newlines, physical line numbers") {
  const std::string csv =
      "text,label\r\n"
      "plain,pos\r\n"
      "\"with, comma\",neg\r\n"
      "\"two\nlines\",pos\n"
      "\"say \"\"hi\"\"\",neg\n"
      "\n"
      "\"\",pos\n"
      "last,\"neg\"";
  ReadOptions o = by_name("text", "label");
  o.skip_bad_rows = true;
  const auto ds = read(csv, "data.csv", o);
  REQUIRE(ds.examples.size() == 5);
  CHECK(ds.examples[0].text == "plain");
  CHECK(ds.examples[1].text == "with, comma");
  CHECK(ds.examples[2].text == "two\nlines");
  CHECK(ds.examples[2].line == 4);
  CHECK(ds.examples[3].text == "say \"hi\"");
  CHECK(ds.examples[3].line == 6);
  CHECK(ds.examples[4].text == "last");
  CHECK(ds.examples[4].label == "neg");
  CHECK(ds.examples[4].line == 9);
  CHECK(ds.bad_rows == 1);  // the empty quoted text on line 8
  REQUIRE(ds.bad_row_messages.size() == 1);
  CHECK(ds.bad_row_messages[0] == "data.csv:8: empty text in column \"text\"");
}

TEST_CASE("CSV errors") {
  const ReadOptions o = by_name("text", "label");
  CHECK(error_of("text,label\n\"a\nb\",1\n\"never closed,1\nx,1\n", "d.csv", o) ==
        "d.csv:4: unterminated quoted field: the quote opened on this line is never closed");
  CHECK(error_of("text,label\n\"a\"b,1\n", "d.csv", o) ==
        "d.csv:2: expected ',' or a line end after a closing quote, found 'b'");
  CHECK(error_of("text,label\na,1,extra\n", "d.csv", o) ==
        "d.csv:2: expected 2 columns (text, label), found 3");
  // After a bad row the reader goes on at the next line.
  ReadOptions skip = o;
  skip.skip_bad_rows = true;
  const auto ds = read("text,label\n\"a\"b,1\nfine,0\n", "d.csv", skip);
  REQUIRE(ds.examples.size() == 1);
  CHECK(ds.examples[0].line == 3);
  // A quote inside an unquoted field is kept.
  CHECK(read("text,label\n5\" screen,1\n", "d.csv", o).examples[0].text == "5\" screen");
}

TEST_CASE("text pairs") {
  ReadOptions o = by_name("premise", "label");
  o.text_pair_column = ColumnRef("hypothesis");
  const auto ds = read("premise\thypothesis\tlabel\na b\tc d\tentailment\n", "mnli.tsv", o);
  REQUIRE(ds.examples.size() == 1);
  CHECK(ds.examples[0].text == "a b");
  CHECK(ds.examples[0].text_pair == "c d");
  // Two options may name the same column.
  ReadOptions same = by_index(0, 1);
  same.text_pair_column = ColumnRef(0);
  const auto twice = read("x y\t1\nz\t0\n", "t.tsv", same);
  CHECK(twice.examples.at(0).text_pair == "x y");
  CHECK(twice.examples.at(0).text == "x y");
}

TEST_CASE("JSONL: fields by name, string or integer labels") {
  const std::string jsonl =
      "{\"text\": \"good\", \"label\": 1}\n"
      "\n"
      "{\"text\": \"bad\", \"label\": \"0\", \"extra\": [1,2]}\r\n"
      "{\"label\": \"neg\", \"text\": \"caf\\u00e9\"}\n";
  const auto ds = read(jsonl, "d.jsonl", by_name("text", "label"));
  REQUIRE(ds.examples.size() == 3);
  CHECK(ds.examples[0].label == "1");
  CHECK(ds.examples[1].label == "0");
  CHECK(ds.examples[1].line == 3);
  CHECK(ds.examples[2].text == "caf\xC3\xA9");
  CHECK(ds.examples[2].line == 4);
}

TEST_CASE("JSONL errors") {
  const ReadOptions o = by_name("text", "label");
  CHECK(error_of("{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\"}\n", "d.jsonl", o) ==
        "d.jsonl:2: missing field \"label\"");
  CHECK(error_of("{\"text\": 3, \"label\": 1}\n", "d.jsonl", o) ==
        "d.jsonl:1: expected \"text\" to be a string, found number 3");
  CHECK(error_of("{\"text\": \"a\", \"label\": 1.5}\n", "d.jsonl", o) ==
        "d.jsonl:1: expected \"label\" to be a string or an integer, found number 1.5");
  CHECK(error_of("[1, 2]\n", "d.jsonl", o) ==
        "d.jsonl:1: expected a JSON object, found array [1,2]");
  const std::string broken = error_of("\n\n{\"text\": \"a\", \"label\": 1\n", "d.jsonl", o);
  CHECK(broken.rfind("d.jsonl:3: invalid JSON at column", 0) == 0);
  CHECK(error_of("{}\n", "d.jsonl", by_index(0, 1)) ==
        "d.jsonl: JSONL rows are objects: choose column #0 by field name, not by index");
}

TEST_CASE("skip_bad_rows counts bad rows and keeps the first messages") {
  ReadOptions o = by_name("sentence", "label");
  o.skip_bad_rows = true;
  o.max_error_messages = 2;
  std::string tsv = "sentence\tlabel\n";
  for (int i = 0; i < 5; ++i) tsv += "no label column\n";
  tsv += "fine\t1\n";
  const auto ds = read(tsv, "t.tsv", o);
  CHECK(ds.examples.size() == 1);
  CHECK(ds.bad_rows == 5);
  REQUIRE(ds.bad_row_messages.size() == 2);
  CHECK(ds.bad_row_messages[1] == "t.tsv:3: expected 2 columns (sentence, label), found 1");
}

TEST_CASE("a fixed label map makes an unknown label a bad row") {
  const LabelMap map(std::vector<std::string>{"neg", "pos"});
  ReadOptions o = by_name("text", "label");
  o.labels = &map;
  CHECK(error_of("text\tlabel\na\tpos\nb\tneutral\n", "eval.tsv", o) ==
        "eval.tsv:3: unknown label \"neutral\" (expected one of: neg, pos)");
  o.skip_bad_rows = true;
  const auto ds = read("text\tlabel\na\tpos\nb\tneutral\nc\tneg\n", "eval.tsv", o);
  REQUIRE(ds.examples.size() == 2);
  CHECK(ds.examples[0].label_id == 1);
  CHECK(ds.examples[1].label_id == 0);
  CHECK(ds.bad_rows == 1);
}

TEST_CASE("byte order mark, format from the name, files") {
  CHECK(format_from_name("a.CSV") == Format::kCsv);
  CHECK(format_from_name("a.jsonl") == Format::kJsonl);
  CHECK(format_from_name("a.tsv") == Format::kTsv);
  CHECK(format_from_name("-") == Format::kTsv);
  const auto ds = read("\xEF\xBB\xBFtext,label\nhi,1\n", "bom.csv", by_name("text", "label"));
  CHECK(ds.header[0] == "text");
  CHECK(ColumnRef::parse("12").index() == 12);
  CHECK(ColumnRef::parse("text_a").name() == "text_a");
  CHECK(ColumnRef::parse("1a").by_name());

  const fs::path tmp = fs::temp_directory_path() / "edgetune_reader_test.csv";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << "text,label\n\"multi\nline\",1\n";
  }
  const auto from_file = read_dataset(tmp, by_name("text", "label"));
  CHECK(from_file.source == tmp.string());
  CHECK(from_file.examples.at(0).text == "multi\nline");
  fs::remove(tmp);
  try {
    read_dataset(tmp, by_name("text", "label"));
    FAIL("reading a missing file must throw");
  } catch (const DataError& e) {
    CHECK(std::string(e.what()).rfind(tmp.string() + ": cannot open", 0) == 0);
  }
}

TEST_CASE("the shared data sets load (../shared/data)") {
  const fs::path dir = edgetune::test::shared_data_dir();
  if (dir.empty()) {
    WARN("skipped: ../shared/data is not on this machine");
    return;
  }
  auto sst = read_dataset(dir / "sst2/train.tsv", by_name("sentence", "label"));
  CHECK(sst.examples.size() == 60614);
  CHECK(sst.bad_rows == 0);
  CHECK(LabelMap::from_dataset(sst).id2label() == std::vector<std::string>{"0", "1"});
  auto sst_by_index = read_dataset(dir / "sst2/dev.tsv", by_index(0, 1));
  CHECK(sst_by_index.examples.size() == 6735);

  auto chn = read_dataset(dir / "chnsenticorp/train.tsv", by_name("text_a", "label"));
  CHECK(chn.examples.size() == 9600);
  auto chn_by_index = read_dataset(dir / "chnsenticorp/dev.tsv", by_index(1, 0));
  CHECK(chn_by_index.header == std::vector<std::string>{"label", "text_a"});
  CHECK(chn_by_index.examples.size() == 1200);

  auto sms = read_dataset(dir / "sms_spam/SMSSpamCollection", by_index(1, 0));
  CHECK(sms.header.empty());
  CHECK(sms.examples.size() == 5574);
  const LabelMap map = LabelMap::from_dataset(sms);
  CHECK(map.id2label() == std::vector<std::string>{"ham", "spam"});
  map.assign(sms);
  CHECK(sms.examples[2].label_id == 1);  // "spam" on line 3
}
