// TSV / CSV / JSONL readers (see reader.h for the formats and the header rule).
// A file is read whole, split into records with the line each starts on, and the records are
// then checked and turned into examples: one place decides headers, columns and bad rows for
// both tabular formats.
#include "edgetune/data/reader.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unordered_set>

#include "edgetune/data/error.h"
#include "edgetune/data/labels.h"
#include "io.h"

namespace edgetune::data {
namespace {

struct Record {
  int64_t line = 0;
  std::vector<std::string> fields;
  std::string error;  // a malformed record (CSV), reported as a bad row
};

std::string_view skip_bom(std::string_view s) {
  if (s.size() >= 3 && s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);
  return s;
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
  });
}

bool is_integer(std::string_view s) {
  if (!s.empty() && s.front() == '-') s.remove_prefix(1);
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string join(const std::vector<std::string>& items, size_t max_items = 10) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) {
    if (i) out += ", ";
    out += quote_for_message(items[i], 30);
  }
  if (items.size() > max_items) out += ", ...";
  return out;
}

// Collects bad rows: throws at the first one, or counts them with skip_bad_rows.
class BadRows {
 public:
  BadRows(Dataset& ds, const ReadOptions& options) : ds_(ds), options_(options) {}
  void report(int64_t line, const std::string& message) {
    DataError error(ds_.source, line, message);
    if (!options_.skip_bad_rows) throw error;
    ++ds_.bad_rows;
    if (ds_.bad_row_messages.size() < options_.max_error_messages) {
      ds_.bad_row_messages.emplace_back(error.what());
    }
  }

 private:
  Dataset& ds_;
  const ReadOptions& options_;
};

// ----------------------------------------------------------------------------- TSV and CSV

std::vector<Record> split_tsv(std::string_view s) {
  std::vector<Record> records;
  int64_t line = 0;
  size_t start = 0;
  while (start < s.size()) {
    ++line;
    size_t end = s.find('\n', start);
    if (end == std::string_view::npos) end = s.size();
    std::string_view text = s.substr(start, end - start);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    start = end + 1;
    if (text.empty()) continue;
    Record r;
    r.line = line;
    size_t field_start = 0;
    while (true) {
      const size_t tab = text.find('\t', field_start);
      if (tab == std::string_view::npos) {
        r.fields.emplace_back(text.substr(field_start));
        break;
      }
      r.fields.emplace_back(text.substr(field_start, tab - field_start));
      field_start = tab + 1;
    }
    records.push_back(std::move(r));
  }
  return records;
}

// RFC 4180. An unterminated quote ends the file: its record carries the error and nothing follows.
std::vector<Record> split_csv(std::string_view s) {
  std::vector<Record> records;
  const size_t n = s.size();
  size_t i = 0;
  int64_t line = 1;
  while (i < n) {
    Record r;
    r.line = line;
    bool quoted_any = false;
    bool end_of_record = false;
    while (!end_of_record) {
      std::string field;
      if (i < n && s[i] == '"') {
        quoted_any = true;
        const int64_t quote_line = line;
        ++i;
        bool closed = false;
        while (i < n) {
          const char c = s[i];
          if (c == '"') {
            if (i + 1 < n && s[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (!closed) {
          r.line = quote_line;
          r.error = "unterminated quoted field: the quote opened on this line is never closed";
          records.push_back(std::move(r));
          return records;
        }
        r.fields.push_back(std::move(field));
        if (i == n) break;
        if (s[i] == ',') {
          ++i;
          continue;
        }
        if (s[i] == '\n' || (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')) {
          i += s[i] == '\r' ? 2 : 1;
          ++line;
          break;
        }
        r.error = "expected ',' or a line end after a closing quote, found '" +
                  quote_for_message(s.substr(i, 1)) + "'";
        // Resynchronize at the next line end.
        while (i < n && s[i] != '\n') ++i;
        if (i < n) {
          ++i;
          ++line;
        }
        end_of_record = true;
      } else {
        const size_t start = i;
        while (i < n && s[i] != ',' && s[i] != '\n') ++i;
        std::string_view text = s.substr(start, i - start);
        const bool at_line_end = i == n || s[i] == '\n';
        if (at_line_end && !text.empty() && text.back() == '\r') text.remove_suffix(1);
        r.fields.emplace_back(text);
        if (i < n && s[i] == ',') {
          ++i;
          if (i == n) r.fields.emplace_back();  // "a," at the very end: a last empty field
          continue;
        }
        if (i < n) {
          ++i;
          ++line;
        }
        end_of_record = true;
      }
    }
    const bool empty_line = !quoted_any && r.fields.size() == 1 && r.fields[0].empty();
    if (!empty_line || !r.error.empty()) records.push_back(std::move(r));
  }
  return records;
}

std::string column_list(const std::vector<std::string>& header) {
  return "(" + join(header, 8) + ")";
}

// Header::kAuto with columns chosen by index: is the first record a header? (see reader.h)
bool first_row_is_header(const std::vector<Record>& records, size_t first,
                         const ReadOptions& options) {
  if (!options.label_column) return false;
  const auto col = static_cast<size_t>(options.label_column->index());
  if (col >= records[first].fields.size()) return false;
  const std::string& cell = records[first].fields[col];
  if (options.labels) return !options.labels->id(cell).has_value();
  const auto later = records.begin() + static_cast<long>(first) + 1;
  auto label_of = [&](const Record& r) -> std::string_view {
    return col < r.fields.size() ? std::string_view(r.fields[col]) : std::string_view();
  };
  const bool integer_labels =
      later != records.end() &&
      std::all_of(later, records.end(), [&](const Record& r) { return is_integer(label_of(r)); });
  if (integer_labels) return !is_integer(cell);
  return std::none_of(later, records.end(), [&](const Record& r) { return label_of(r) == cell; });
}

void read_tabular(std::vector<Record> records, Dataset& ds, const ReadOptions& options) {
  BadRows bad(ds, options);
  if (records.empty()) return;
  const bool any_name = options.text_column.by_name() ||
                        (options.text_pair_column && options.text_pair_column->by_name()) ||
                        (options.label_column && options.label_column->by_name());

  // A first record that is malformed cannot be a header; report it like any bad row.
  size_t first = 0;
  while (first < records.size() && !records[first].error.empty()) {
    bad.report(records[first].line, records[first].error);
    ++first;
  }
  if (first == records.size()) return;

  bool has_header = false;
  switch (options.header) {
    case Header::kPresent:
      has_header = true;
      break;
    case Header::kAbsent:
      has_header = false;
      break;
    case Header::kAuto:
      has_header = any_name || first_row_is_header(records, first, options);
      break;
  }
  if (any_name && !has_header) {
    throw DataError(ds.source,
                    "columns are chosen by name but the file has no header row; "
                    "choose them by 0-based index instead");
  }
  const int64_t header_line = records[first].line;
  size_t expected = records[first].fields.size();
  if (has_header) {
    ds.header = records[first].fields;
    ++first;
  }

  auto resolve = [&](const ColumnRef& c) -> size_t {
    if (c.by_name()) {
      const auto it = std::find(ds.header.begin(), ds.header.end(), c.name());
      if (it == ds.header.end()) {
        throw DataError(ds.source, header_line,
                        "no column named \"" + quote_for_message(c.name()) + "\" in the header " +
                            column_list(ds.header));
      }
      return static_cast<size_t>(it - ds.header.begin());
    }
    const auto index = static_cast<size_t>(c.index());
    if (index >= expected) {
      throw DataError(ds.source, header_line,
                      "column " + c.describe() + " is out of range: " +
                          (has_header ? "the header has " : "the first row has ") +
                          std::to_string(expected) + " column" + (expected == 1 ? "" : "s"));
    }
    return index;
  };
  const size_t text_col = resolve(options.text_column);
  constexpr size_t kNone = static_cast<size_t>(-1);
  const size_t pair_col = options.text_pair_column ? resolve(*options.text_pair_column) : kNone;
  const size_t label_col = options.label_column ? resolve(*options.label_column) : kNone;
  auto name_of = [&](size_t col) {
    return has_header ? "column \"" + quote_for_message(ds.header[col]) + "\""
                      : "column #" + std::to_string(col);
  };
  const std::string shape =
      has_header ? column_list(ds.header) : "(as on line " + std::to_string(header_line) + ")";

  ds.examples.reserve(records.size() - first);
  for (size_t k = first; k < records.size(); ++k) {
    // Moved out, so each record's fields are freed as its example is made: the records and the
    // examples never both hold every row. (Fields are copied from it: two options may name one
    // column.)
    const Record r = std::move(records[k]);
    if (!r.error.empty()) {
      bad.report(r.line, r.error);
      continue;
    }
    if (r.fields.size() != expected) {
      bad.report(r.line, "expected " + std::to_string(expected) + " column" +
                             (expected == 1 ? "" : "s") + " " + shape + ", found " +
                             std::to_string(r.fields.size()));
      continue;
    }
    Example e;
    e.line = r.line;
    e.text = r.fields[text_col];
    if (blank(e.text)) {
      bad.report(r.line, "empty text in " + name_of(text_col));
      continue;
    }
    if (pair_col != kNone) {
      e.text_pair = r.fields[pair_col];
      if (blank(*e.text_pair)) {
        bad.report(r.line, "empty text in " + name_of(pair_col));
        continue;
      }
    }
    if (label_col != kNone) {
      e.label = r.fields[label_col];
      if (e.label.empty()) {
        bad.report(r.line, "empty label in " + name_of(label_col));
        continue;
      }
      if (options.labels) {
        const auto id = options.labels->id(e.label);
        if (!id) {
          bad.report(r.line, "unknown label \"" + quote_for_message(e.label) +
                                 "\" (expected one of: " + join(options.labels->id2label()) + ")");
          continue;
        }
        e.label_id = *id;
      }
    }
    ds.examples.push_back(std::move(e));
  }
}

// ---------------------------------------------------------------------------------- JSONL

// nlohmann's parse messages start "[json.exception.parse_error.101] parse error at line 1,
// column 7: ..."; the line is the file's, so keep only what follows it.
std::string json_problem(const std::string& what) {
  const size_t at = what.find("column ");
  return "invalid JSON at " + (at == std::string::npos ? what : what.substr(at));
}

std::string json_kind(const nlohmann::json& v) {
  return std::string(v.type_name()) + " " +
         quote_for_message(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void read_jsonl(std::string_view s, Dataset& ds, const ReadOptions& options) {
  for (const ColumnRef* c :
       {&options.text_column, options.text_pair_column ? &*options.text_pair_column : nullptr,
        options.label_column ? &*options.label_column : nullptr}) {
    if (c && !c->by_name()) {
      throw DataError(ds.source, "JSONL rows are objects: choose column " + c->describe() +
                                     " by field name, not by index");
    }
  }
  BadRows bad(ds, options);
  int64_t line = 0;
  size_t start = 0;
  while (start < s.size()) {
    ++line;
    size_t end = s.find('\n', start);
    if (end == std::string_view::npos) end = s.size();
    const std::string_view text = s.substr(start, end - start);
    start = end + 1;
    if (blank(text)) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      bad.report(line, json_problem(e.what()));
      continue;
    }
    if (!row.is_object()) {
      bad.report(line, "expected a JSON object, found " + json_kind(row));
      continue;
    }
    Example e;
    e.line = line;
    auto text_field = [&](const ColumnRef& c, std::string& into) {
      const auto it = row.find(c.name());
      if (it == row.end()) {
        bad.report(line, "missing field \"" + quote_for_message(c.name()) + "\"");
        return false;
      }
      if (!it->is_string()) {
        bad.report(line, "expected \"" + quote_for_message(c.name()) + "\" to be a string, found " +
                             json_kind(*it));
        return false;
      }
      into = it->get<std::string>();
      if (blank(into)) {
        bad.report(line, "empty text in field \"" + quote_for_message(c.name()) + "\"");
        return false;
      }
      return true;
    };
    if (!text_field(options.text_column, e.text)) continue;
    if (options.text_pair_column) {
      e.text_pair.emplace();
      if (!text_field(*options.text_pair_column, *e.text_pair)) continue;
    }
    if (options.label_column) {
      const std::string& name = options.label_column->name();
      const auto it = row.find(name);
      if (it == row.end()) {
        bad.report(line, "missing field \"" + quote_for_message(name) + "\"");
        continue;
      }
      if (it->is_string()) {
        e.label = it->get<std::string>();
      } else if (it->is_number_integer()) {
        e.label = it->dump();
      } else {
        bad.report(line, "expected \"" + quote_for_message(name) +
                             "\" to be a string or an integer, found " + json_kind(*it));
        continue;
      }
      if (e.label.empty()) {
        bad.report(line, "empty label in field \"" + quote_for_message(name) + "\"");
        continue;
      }
      if (options.labels) {
        const auto id = options.labels->id(e.label);
        if (!id) {
          bad.report(line, "unknown label \"" + quote_for_message(e.label) +
                               "\" (expected one of: " + join(options.labels->id2label()) + ")");
          continue;
        }
        e.label_id = *id;
      }
    }
    ds.examples.push_back(std::move(e));
  }
}

}  // namespace

// ------------------------------------------------------------------------------ public API

Format format_from_name(const std::filesystem::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".csv") return Format::kCsv;
  if (ext == ".jsonl" || ext == ".ndjson" || ext == ".json") return Format::kJsonl;
  return Format::kTsv;
}

ColumnRef::ColumnRef(int index) : index_(index), set_(true) {
  if (index < 0) throw std::invalid_argument("a column index must be >= 0");
}

ColumnRef ColumnRef::parse(std::string_view spec) {
  const bool digits =
      !spec.empty() && spec.size() <= 9 &&
      std::all_of(spec.begin(), spec.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) return ColumnRef(std::stoi(std::string(spec)));
  return ColumnRef(std::string(spec));
}

std::string ColumnRef::describe() const {
  if (!set_) return "(unset)";
  return by_name() ? "\"" + quote_for_message(name_) + "\"" : "#" + std::to_string(index_);
}

Dataset read_dataset_from_bytes(std::string_view bytes, const std::string& source,
                                const ReadOptions& options) {
  if (!options.text_column.is_set()) {
    throw std::invalid_argument("ReadOptions::text_column is not set");
  }
  Dataset ds;
  ds.source = source;
  const Format format = options.format == Format::kAuto ? format_from_name(source) : options.format;
  bytes = skip_bom(bytes);
  switch (format) {
    case Format::kJsonl:
      read_jsonl(bytes, ds, options);
      break;
    case Format::kCsv:
      read_tabular(split_csv(bytes), ds, options);
      break;
    case Format::kTsv:
    case Format::kAuto:
      read_tabular(split_tsv(bytes), ds, options);
      break;
  }
  return ds;
}

Dataset read_dataset(const std::filesystem::path& file, const ReadOptions& options) {
  if (!options.text_column.is_set()) {
    throw std::invalid_argument("ReadOptions::text_column is not set");
  }
  ReadOptions resolved = options;
  if (resolved.format == Format::kAuto) resolved.format = format_from_name(file);
  return read_dataset_from_bytes(io::read_all(file), io::display_name(file), resolved);
}

}  // namespace edgetune::data
