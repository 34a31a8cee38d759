// The packed store of encoded rows (see token_store.h).
#include "edgetune/data/token_store.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace edgetune::data {

TokenStore::TokenStore(Accountant& accountant) : accountant_(&accountant) {}

TokenStore::TokenStore(TokenStore&& other) noexcept
    : accountant_(other.accountant_),
      id_blocks_(std::move(other.id_blocks_)),
      row_blocks_(std::move(other.row_blocks_)),
      used_in_last_(other.used_in_last_),
      rows_(other.rows_),
      longest_(other.longest_),
      invalid_utf8_rows_(other.invalid_utf8_rows_) {
  other.id_blocks_.clear();
  other.row_blocks_.clear();
  other.used_in_last_ = kBlockIds;
  other.rows_ = other.longest_ = other.invalid_utf8_rows_ = 0;
}

TokenStore& TokenStore::operator=(TokenStore&& other) noexcept {
  if (this != &other) {
    free_blocks();
    accountant_ = other.accountant_;
    id_blocks_ = std::move(other.id_blocks_);
    row_blocks_ = std::move(other.row_blocks_);
    used_in_last_ = other.used_in_last_;
    rows_ = other.rows_;
    longest_ = other.longest_;
    invalid_utf8_rows_ = other.invalid_utf8_rows_;
    other.id_blocks_.clear();
    other.row_blocks_.clear();
    other.used_in_last_ = kBlockIds;
    other.rows_ = other.longest_ = other.invalid_utf8_rows_ = 0;
  }
  return *this;
}

TokenStore::~TokenStore() { free_blocks(); }

void TokenStore::free_blocks() noexcept {
  for (int32_t* b : id_blocks_) accountant_->release(MemCategory::Data, b, kBlockBytes);
  for (RowInfo* b : row_blocks_) accountant_->release(MemCategory::Data, b, kBlockBytes);
  id_blocks_.clear();
  row_blocks_.clear();
}

void TokenStore::append(const Encoding& e, int32_t label) {
  const std::size_t n = e.ids.size();
  if (n > kBlockIds || e.type_ids.size() != n) {
    throw std::invalid_argument("TokenStore::append: a row of " + std::to_string(n) + " ids and " +
                                std::to_string(e.type_ids.size()) + " type ids (expected as many, at most " +
                                std::to_string(kBlockIds) + ")");
  }
  const auto first_one = std::find(e.type_ids.begin(), e.type_ids.end(), 1);
  if (std::any_of(e.type_ids.begin(), first_one, [](int32_t t) { return t != 0; }) ||
      std::any_of(first_one, e.type_ids.end(), [](int32_t t) { return t != 1; })) {
    throw std::invalid_argument("TokenStore::append: type ids must be 0s then 1s");
  }
  // Both blocks are taken before anything changes, so a BudgetExceeded leaves the store as it was.
  const bool new_ids = used_in_last_ + n > kBlockIds;
  const bool new_rows = rows_ % kRowsPerBlock == 0;
  int32_t* ids = new_ids ? static_cast<int32_t*>(accountant_->allocate(MemCategory::Data, kBlockBytes)) : nullptr;
  RowInfo* rows = nullptr;
  if (new_rows) {
    try {
      rows = static_cast<RowInfo*>(accountant_->allocate(MemCategory::Data, kBlockBytes));
    } catch (...) {
      if (ids) accountant_->release(MemCategory::Data, ids, kBlockBytes);
      throw;
    }
  }
  if (ids) {
    id_blocks_.push_back(ids);
    used_in_last_ = 0;
  }
  if (rows) row_blocks_.push_back(rows);
  std::copy(e.ids.begin(), e.ids.end(), id_blocks_.back() + used_in_last_);
  row_blocks_.back()[rows_ % kRowsPerBlock] =
      RowInfo{static_cast<uint32_t>(id_blocks_.size() - 1), static_cast<uint32_t>(used_in_last_),
              static_cast<uint32_t>(n), static_cast<int32_t>(first_one - e.type_ids.begin()), label};
  used_in_last_ += n;
  ++rows_;
  longest_ = std::max(longest_, n);
  invalid_utf8_rows_ += e.invalid_utf8 > 0;
}

const TokenStore::RowInfo& TokenStore::info(std::size_t row) const {
  if (row >= rows_) {
    throw std::out_of_range("TokenStore: row " + std::to_string(row) + " of " + std::to_string(rows_));
  }
  return row_blocks_[row / kRowsPerBlock][row % kRowsPerBlock];
}

std::span<const int32_t> TokenStore::ids(std::size_t row) const {
  const RowInfo& r = info(row);
  return {id_blocks_[r.block] + r.offset, r.length};
}

std::size_t TokenStore::bytes() const {
  return (id_blocks_.size() + row_blocks_.size()) * accounted_bytes(kBlockBytes);
}

}  // namespace edgetune::data
