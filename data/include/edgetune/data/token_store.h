// TokenStore: the encoded rows of a data set, packed for training. Every row's token ids sit in
// 256 KiB blocks allocated through the memory accountant (MemCategory::Data), beside a packed
// table of per-row facts (where its ids are, its length, where its second text starts, its
// label). No vector or string per row: a row costs 4 bytes per token plus 20 bytes, all counted.
// Rows are reached by index, so shuffling and splitting move indices, never rows.
//
// Not here: padding (batch.h makes padded batches from a store), the attention mask (all ones
// until padding), files (reader.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "edgetune/core/memory.h"
#include "edgetune/data/tokenizer.h"

namespace edgetune::data {

class TokenStore {
 public:
  // Token ids per block; a row never straddles two blocks, so a row holds at most this many.
  static constexpr std::size_t kBlockIds = 64 * 1024;

  // An empty store whose blocks `accountant` counts; the accountant must outlive the store.
  explicit TokenStore(Accountant& accountant);
  TokenStore(TokenStore&& other) noexcept;
  TokenStore& operator=(TokenStore&& other) noexcept;
  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;
  ~TokenStore();

  // Appends one encoded row with its class id (-1: unlabelled). Requires e.ids.size() <=
  // kBlockIds and type ids that are 0s then 1s, as WordPieceTokenizer::encode makes them (else
  // std::invalid_argument). May throw BudgetExceeded when a new block does not fit the budget.
  void append(const Encoding& e, int32_t label = -1);

  std::size_t size() const { return rows_; }
  // (T) the token ids of row `row` (< size()).
  std::span<const int32_t> ids(std::size_t row) const;
  // The first position of row `row` whose type id is 1 (its length for a single text).
  int32_t pair_start(std::size_t row) const { return info(row).pair_start; }
  // The class id of row `row`, -1 when unlabelled.
  int32_t label(std::size_t row) const { return info(row).label; }
  // Tokens of the longest row (0 when empty).
  std::size_t longest() const { return longest_; }
  // Rows whose text held ill-formed UTF-8 (Encoding::invalid_utf8 > 0).
  std::size_t rows_with_invalid_utf8() const { return invalid_utf8_rows_; }
  // Bytes of the blocks, as the accountant counts them.
  std::size_t bytes() const;

 private:
  struct RowInfo {
    uint32_t block;       // index into id_blocks_
    uint32_t offset;      // first id within the block
    uint32_t length;      // T
    int32_t pair_start;   // first position of type id 1
    int32_t label;        // class id, -1 when unlabelled
  };
  static constexpr std::size_t kBlockBytes = kBlockIds * sizeof(int32_t);
  static constexpr std::size_t kRowsPerBlock = kBlockBytes / sizeof(RowInfo);

  const RowInfo& info(std::size_t row) const;
  void free_blocks() noexcept;

  Accountant* accountant_;
  std::vector<int32_t*> id_blocks_;
  std::vector<RowInfo*> row_blocks_;
  std::size_t used_in_last_ = kBlockIds;  // ids used in id_blocks_.back()
  std::size_t rows_ = 0;
  std::size_t longest_ = 0;
  std::size_t invalid_utf8_rows_ = 0;
};

}  // namespace edgetune::data
