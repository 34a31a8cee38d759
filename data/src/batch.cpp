// Padded batches from encodings (see batch.h).
#include "edgetune/data/batch.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace edgetune::data {

namespace {

Encoding encode_example(const WordPieceTokenizer& tokenizer, const Example& e, int max_length) {
  return e.text_pair ? tokenizer.encode(e.text, *e.text_pair, max_length)
                     : tokenizer.encode(e.text, std::nullopt, max_length);
}

// A batch of rows.size() rows of t tokens, all padding, with its row indices.
Batch padding(std::span<const size_t> rows, size_t t, int32_t pad_id) {
  Batch b;
  b.rows = static_cast<int32_t>(rows.size());
  b.length = static_cast<int32_t>(t);
  b.ids.assign(rows.size() * t, pad_id);
  b.type_ids.assign(rows.size() * t, 0);
  b.attention_mask.assign(rows.size() * t, 0);
  b.indices.assign(rows.begin(), rows.end());
  return b;
}

}  // namespace

Batch make_batch(std::span<const Encoding> encodings, std::span<const size_t> rows, int32_t pad_id,
                 std::span<const int32_t> labels) {
  if (rows.empty()) throw std::invalid_argument("make_batch: no rows");
  if (!labels.empty() && labels.size() != encodings.size()) {
    throw std::invalid_argument("make_batch: " + std::to_string(labels.size()) + " labels for " +
                                std::to_string(encodings.size()) + " encodings");
  }
  size_t t = 0;
  for (const size_t r : rows) {
    if (r >= encodings.size()) {
      throw std::invalid_argument("make_batch: row " + std::to_string(r) + " of " +
                                  std::to_string(encodings.size()) + " encodings");
    }
    t = std::max(t, encodings[r].ids.size());
  }
  Batch b = padding(rows, t, pad_id);
  for (size_t i = 0; i < rows.size(); ++i) {
    const Encoding& e = encodings[rows[i]];
    std::copy(e.ids.begin(), e.ids.end(), b.ids.begin() + static_cast<long>(i * t));
    std::copy(e.type_ids.begin(), e.type_ids.end(), b.type_ids.begin() + static_cast<long>(i * t));
    std::copy(e.attention_mask.begin(), e.attention_mask.end(),
              b.attention_mask.begin() + static_cast<long>(i * t));
    if (!labels.empty()) b.labels.push_back(labels[rows[i]]);
  }
  return b;
}

Batch make_batch(const TokenStore& store, std::span<const size_t> rows, int32_t pad_id,
                 bool with_labels) {
  if (rows.empty()) throw std::invalid_argument("make_batch: no rows");
  size_t t = 0;
  for (const size_t r : rows) {
    if (r >= store.size()) {
      throw std::invalid_argument("make_batch: row " + std::to_string(r) + " of " +
                                  std::to_string(store.size()) + " stored rows");
    }
    t = std::max(t, store.ids(r).size());
  }
  Batch b = padding(rows, t, pad_id);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::span<const int32_t> ids = store.ids(rows[i]);
    const auto row = static_cast<long>(i * t);
    std::copy(ids.begin(), ids.end(), b.ids.begin() + row);
    std::fill(b.type_ids.begin() + row + store.pair_start(rows[i]),
              b.type_ids.begin() + row + static_cast<long>(ids.size()), 1);
    std::fill_n(b.attention_mask.begin() + row, ids.size(), 1);
    if (with_labels) b.labels.push_back(store.label(rows[i]));
  }
  return b;
}

std::vector<std::vector<size_t>> batch_rows(std::span<const size_t> order, size_t batch_size,
                                            bool drop_last) {
  if (batch_size == 0) throw std::invalid_argument("batch_rows: batch_size must be >= 1");
  std::vector<std::vector<size_t>> out;
  for (size_t start = 0; start < order.size(); start += batch_size) {
    const size_t end = std::min(order.size(), start + batch_size);
    if (drop_last && end - start < batch_size) break;
    out.emplace_back(order.begin() + static_cast<long>(start),
                     order.begin() + static_cast<long>(end));
  }
  return out;
}

std::vector<Encoding> encode_dataset(const WordPieceTokenizer& tokenizer, const Dataset& dataset,
                                     int max_length) {
  std::vector<Encoding> out;
  out.reserve(dataset.examples.size());
  for (const Example& e : dataset.examples) {
    out.push_back(encode_example(tokenizer, e, max_length));
  }
  return out;
}

void encode_rows(const WordPieceTokenizer& tokenizer, const Dataset& dataset,
                 std::span<const size_t> rows, int max_length, TokenStore& store) {
  for (const size_t r : rows) {
    const Example& e = dataset.examples.at(r);
    store.append(encode_example(tokenizer, e, max_length), e.label_id);
  }
}

std::vector<int32_t> label_ids(const Dataset& dataset) {
  std::vector<int32_t> out;
  out.reserve(dataset.examples.size());
  for (const Example& e : dataset.examples) out.push_back(e.label_id);
  return out;
}

}  // namespace edgetune::data
