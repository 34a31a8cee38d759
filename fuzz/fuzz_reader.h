// Shared body of the reader fuzz targets: the first byte picks the reading options, the rest is
// the file. A bad file may only raise DataError, with a one-line message; examples must come
// with increasing line numbers.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "edgetune/data/error.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/reader.h"

namespace edgetune::fuzz {

inline void check(bool ok) {
  if (!ok) std::abort();
}

inline void read_with_options(const uint8_t* data, size_t size, data::Format format) {
  if (size == 0) return;
  const uint8_t flags = data[0];
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  data::ReadOptions o;
  o.format = format;
  o.skip_bad_rows = flags & 1;
  const bool names = (flags & 2) || format == data::Format::kJsonl;
  o.text_column = names ? data::ColumnRef("text") : data::ColumnRef(flags >> 6);
  if (flags & 4)
    o.label_column = names ? data::ColumnRef("label") : data::ColumnRef((flags >> 4) & 3);
  if (flags & 8) o.text_pair_column = names ? data::ColumnRef("pair") : data::ColumnRef(1);
  const data::LabelMap fixed(std::vector<std::string>{"0", "1", "neg", "pos"});
  if ((flags & 0x30) == 0x30) o.labels = &fixed;
  if ((flags & 0xC0) == 0xC0) o.header = data::Header::kAbsent;
  o.max_error_messages = 3;
  try {
    const data::Dataset ds = data::read_dataset_from_bytes(bytes, "fuzz", o);
    int64_t last = 0;
    for (const auto& e : ds.examples) {
      check(e.line > last);
      last = e.line;
      check(!e.text.empty());
      if (o.labels && o.label_column) check(e.label_id >= 0 && e.label_id < fixed.size());
    }
    for (const auto& m : ds.bad_row_messages) check(m.find('\n') == std::string::npos);
    check(ds.bad_row_messages.size() <= 3);
    if (!ds.examples.empty() && o.label_column && !o.labels) {
      data::LabelMap map = data::LabelMap::from_dataset(ds);
      check(data::LabelMap::from_labels(map.id2label()).id2label() == map.id2label());
    }
  } catch (const data::DataError& e) {
    const std::string what = e.what();
    check(what.find('\n') == std::string::npos && what.rfind("fuzz", 0) == 0);
  }
}

}  // namespace edgetune::fuzz
