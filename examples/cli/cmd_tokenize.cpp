// `edgetune tokenize`: prints the BERT token ids of text, one JSON array per input line, with
// [CLS] and [SEP] ("[101,7592,2088,102]"). Input is standard input, one text per line, or a
// column of a data file (--data). It is a window onto the data layer's tokenizer, for checking
// it against other tools; it does not pad, batch or run a model.
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "commands.h"
#include "edgetune/data/reader.h"
#include "edgetune/data/tokenizer.h"
#include "edgetune/engine/model_file.h"

namespace edgetune::cli {
namespace {

struct TokenizeArgs {
  std::string model_dir;
  std::string vocab_file;
  bool no_lower_case = false;
  int max_length = 512;
  std::string data_file;
  std::string text_column;
  std::string text_pair_column;
  bool header = false;
};

void print_ids(const data::Encoding& e, std::string& buffer) {
  buffer.clear();
  buffer.push_back('[');
  for (size_t i = 0; i < e.ids.size(); ++i) {
    if (i) buffer.push_back(',');
    buffer += std::to_string(e.ids[i]);
  }
  buffer += "]\n";
  std::fwrite(buffer.data(), 1, buffer.size(), stdout);
}

int run_tokenize(const TokenizeArgs& a) {
  if (a.model_dir.empty() == a.vocab_file.empty()) {
    throw UsageError("tokenize: give either --model DIR or --vocab FILE");
  }
  if (!a.model_dir.empty() && a.no_lower_case) {
    throw UsageError(
        "tokenize: --no-lower-case goes with --vocab; with --model, DIR/tokenizer_config.json "
        "(do_lower_case) decides");
  }
  if (a.data_file.empty() && (!a.text_column.empty() || !a.text_pair_column.empty() || a.header)) {
    throw UsageError("tokenize: --text-column, --text-pair-column and --header need --data FILE");
  }
  if (!a.data_file.empty() && a.text_column.empty()) {
    throw UsageError("tokenize: --data needs --text-column (a header name or a 0-based index)");
  }
  const bool pairs = !a.text_pair_column.empty();
  if (a.max_length < (pairs ? 3 : 2)) {
    throw UsageError("tokenize: --max-length must be at least " + std::to_string(pairs ? 3 : 2) +
                     " (room for [CLS] and [SEP])");
  }

  const data::WordPieceTokenizer tokenizer = [&] {
    if (!a.model_dir.empty()) return load_model_tokenizer(a.model_dir);
    data::TokenizerOptions options;
    options.do_lower_case = !a.no_lower_case;
    return data::WordPieceTokenizer(data::Vocab::load(a.vocab_file), options);
  }();

  std::string buffer;
  long invalid_lines = 0;
  auto emit = [&](const data::Encoding& e) {
    if (e.invalid_utf8 > 0) ++invalid_lines;
    print_ids(e, buffer);
  };
  if (!a.data_file.empty()) {
    data::ReadOptions options;
    options.text_column = data::ColumnRef::parse(a.text_column);
    if (pairs) options.text_pair_column = data::ColumnRef::parse(a.text_pair_column);
    if (a.header) options.header = data::Header::kPresent;
    const data::Dataset ds = data::read_dataset(a.data_file, options);
    for (const data::Example& ex : ds.examples) {
      emit(ex.text_pair ? tokenizer.encode(ex.text, *ex.text_pair, a.max_length)
                        : tokenizer.encode(ex.text, std::nullopt, a.max_length));
    }
  } else {
    std::ios::sync_with_stdio(false);
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      emit(tokenizer.encode(line, std::nullopt, a.max_length));
    }
  }
  std::fflush(stdout);
  if (invalid_lines > 0) {
    std::fprintf(stderr,
                 "edgetune: warning: %ld line(s) held invalid UTF-8; each bad sequence was "
                 "dropped as U+FFFD\n",
                 invalid_lines);
  }
  return 0;
}

const RegisterCommand kTokenize(
    "tokenize", "Print BERT token ids of text, one JSON array per line",
    [](CLI::App& app) -> std::function<int()> {
      auto args = std::make_shared<TokenizeArgs>();
      app.add_option("--model", args->model_dir,
                     "Hugging Face model folder: vocab.txt and tokenizer_config.json");
      app.add_option("--vocab", args->vocab_file, "vocab.txt (one token per line)");
      app.add_flag("--no-lower-case", args->no_lower_case,
                   "Keep case and accents (cased models); only with --vocab");
      app.add_option("--max-length", args->max_length,
                     "Truncate to this many tokens, [CLS] and [SEP] included")
          ->capture_default_str();
      app.add_option("--data", args->data_file,
                     "Read the texts from this TSV/CSV/JSONL file ('-' for stdin) instead of "
                     "stdin lines");
      app.add_option("--text-column", args->text_column,
                     "Column of the text in --data: a header name or a 0-based index");
      app.add_option("--text-pair-column", args->text_pair_column,
                     "Column of the second text of a pair");
      app.add_flag("--header", args->header,
                   "The --data file has a header row (implied when columns are chosen by name)");
      app.footer(
          "Examples:\n"
          "  echo 'Hello, world!' | edgetune tokenize --vocab vocab.txt\n"
          "  edgetune tokenize --model bert-base-uncased/ --data train.tsv --text-column sentence");
      return [args] { return run_tokenize(*args); };
    });

}  // namespace
}  // namespace edgetune::cli
