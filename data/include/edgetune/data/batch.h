// Batching: encoded rows -> one padded batch of B rows and T tokens (T = the longest row of the
// batch), as int32 arrays in row-major (B, T) order, ready to copy into tensors by the engine.
// Not here: tensors (the data layer knows none), shuffling (shuffle.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "edgetune/data/reader.h"
#include "edgetune/data/token_store.h"
#include "edgetune/data/tokenizer.h"

namespace edgetune::data {

struct Batch {
  int32_t rows = 0;                     // B
  int32_t length = 0;                   // T, the longest row of the batch
  std::vector<int32_t> ids;             // (B, T) token ids, [PAD] after each row's end
  std::vector<int32_t> type_ids;        // (B, T) 0 on padding
  std::vector<int32_t> attention_mask;  // (B, T) 1 on tokens, 0 on padding
  std::vector<int32_t> labels;          // (B) class ids; empty when no labels were given
  std::vector<size_t> indices;          // (B) the row indices the batch was made of
};

// The batch of encodings[rows[0]], encodings[rows[1]], ... in that order, padded with pad_id.
// `labels`, when not empty, holds one class id per encoding (indexed like `encodings`).
// Requires every row index < encodings.size() (and < labels.size() when labels are given) and
// rows not empty (else std::invalid_argument).
Batch make_batch(std::span<const Encoding> encodings, std::span<const size_t> rows, int32_t pad_id,
                 std::span<const int32_t> labels = {});

// The batch of store rows rows[0], rows[1], ... in that order, padded with pad_id, with each
// row's label when `with_labels`. Requires every row index < store.size() and rows not empty
// (else std::invalid_argument).
Batch make_batch(const TokenStore& store, std::span<const size_t> rows, int32_t pad_id,
                 bool with_labels);

// `order` cut into consecutive groups of batch_size rows; the last group is shorter unless
// drop_last. Requires batch_size >= 1 (else std::invalid_argument).
std::vector<std::vector<size_t>> batch_rows(std::span<const size_t> order, size_t batch_size,
                                            bool drop_last = false);

// Every example of `dataset` encoded (text, and text_pair when present) with max_length.
std::vector<Encoding> encode_dataset(const WordPieceTokenizer& tokenizer, const Dataset& dataset,
                                     int max_length);

// Examples rows[0], rows[1], ... of `dataset` encoded with max_length and appended to `store`
// with their label_id, in that order. Requires every row index < dataset.examples.size() (else
// std::out_of_range).
void encode_rows(const WordPieceTokenizer& tokenizer, const Dataset& dataset,
                 std::span<const size_t> rows, int max_length, TokenStore& store);

// The label_id of every example (-1 where no LabelMap was applied).
std::vector<int32_t> label_ids(const Dataset& dataset);

}  // namespace edgetune::data
