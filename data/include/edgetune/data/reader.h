// Readers of labelled text: TSV (as GLUE writes it), CSV (RFC 4180) and JSONL, into a Dataset
// of (text, optional text pair, label) rows with the physical line each row starts on.
// Not here: tokenization (tokenizer.h), label ids (labels.h; a fixed LabelMap may be given to
// check labels while reading), shuffling (shuffle.h).
//
// Formats:
//  - TSV: one row per line, fields separated by TAB, no quoting (a '"' is an ordinary character);
//    "\r\n" line ends are accepted.
//  - CSV: RFC 4180: fields separated by ',', a field in double quotes may hold ',', line breaks
//    and "" (one quote); "\n" or "\r\n" line ends. Text after a closing quote other than ',' or
//    a line end is an error; a quote inside an unquoted field is kept as is.
//  - JSONL: one JSON object per line; columns are chosen by field name; a text is a JSON string,
//    a label a JSON string or integer.
// In every format a UTF-8 byte order mark at the start is skipped and empty lines are ignored.
//
// Header (TSV and CSV):
//  - Header::kPresent / kAbsent say it.
//  - Header::kAuto (default): when any column is chosen by name, the first row is the header.
//    When all are chosen by index, the first row is a header if its label cell is not a label:
//    not in the fixed LabelMap when one is given; else, when all other rows have integer labels,
//    not an integer (SST-2's "label" above 0/1); else a value no other row has in that column
//    (SMS Spam's first "ham" occurs again: data). Without a label column, and with columns chosen
//    by index, there is no header unless Header::kPresent says so.
// Every row must have as many columns as the header (or, without one, as the first row).
//
// Bad rows (missing column, empty text, empty or unknown label, JSON that does not parse, an
// unterminated quote) throw DataError "<file>:<line>: <what was expected>", or, with
// skip_bad_rows, are counted in Dataset::bad_rows and left out. A quote that is never closed
// swallows the rest of the file, so it ends reading there (one bad row).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace edgetune::data {

class LabelMap;

enum class Format { kAuto, kTsv, kCsv, kJsonl };
enum class Header { kAuto, kPresent, kAbsent };

// Format of a file from its name: .csv -> CSV; .jsonl, .ndjson, .json -> JSONL; anything else
// (.tsv, .txt, no extension, "-" for stdin) -> TSV.
Format format_from_name(const std::filesystem::path& file);

// A column chosen by header name (or JSON field name) or by 0-based index.
class ColumnRef {
 public:
  ColumnRef() = default;  // unset
  ColumnRef(std::string name) : name_(std::move(name)), set_(true) {}
  ColumnRef(const char* name) : ColumnRef(std::string(name)) {}
  ColumnRef(int index);  // requires index >= 0 (else std::invalid_argument)
  // From a command-line value: all digits -> an index, anything else -> a name.
  static ColumnRef parse(std::string_view spec);

  bool is_set() const { return set_; }
  bool by_name() const { return set_ && index_ < 0; }
  const std::string& name() const { return name_; }
  int index() const { return index_; }
  // "sentence" or "#1" (0-based), for messages.
  std::string describe() const;

 private:
  std::string name_;
  int index_ = -1;
  bool set_ = false;
};

struct ReadOptions {
  Format format = Format::kAuto;  // kAuto: format_from_name
  Header header = Header::kAuto;
  ColumnRef text_column;                      // required
  std::optional<ColumnRef> text_pair_column;  // second text of a pair task
  std::optional<ColumnRef> label_column;      // absent: unlabelled rows (prediction)
  // A fixed label map (evaluation, a model's id2label): each label must be in it and
  // Example::label_id is set; an unknown label is a bad row. Not owned; may be null.
  const LabelMap* labels = nullptr;
  bool skip_bad_rows = false;
  size_t max_error_messages = 10;  // messages kept in Dataset::bad_row_messages
};

struct Example {
  std::string text;
  std::optional<std::string> text_pair;
  std::string label;      // as written; a JSON integer label in decimal; "" when unlabelled
  int32_t label_id = -1;  // set from a LabelMap (ReadOptions::labels, LabelMap::assign)
  int64_t line = 0;       // physical line (from 1) where the row starts in the file
};

struct Dataset {
  std::string source;               // the file as named in messages ("<stdin>" for "-")
  std::vector<std::string> header;  // column names when the file had a header row
  std::vector<Example> examples;
  size_t bad_rows = 0;                        // rows left out by skip_bad_rows
  std::vector<std::string> bad_row_messages;  // the first ReadOptions::max_error_messages
};

// Reads `file` ("-" reads standard input). Throws DataError for a bad file or (without
// skip_bad_rows) a bad row; std::invalid_argument when options.text_column is unset.
Dataset read_dataset(const std::filesystem::path& file, const ReadOptions& options);

// The same from bytes in memory; `source` names them in messages and, with Format::kAuto,
// decides the format.
Dataset read_dataset_from_bytes(std::string_view bytes, const std::string& source,
                                const ReadOptions& options);

}  // namespace edgetune::data
