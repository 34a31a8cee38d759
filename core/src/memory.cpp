// The memory accountant (see memory.h): counting, budget enforcement and the reuse cache.
#include "edgetune/core/memory.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <new>

#include <sys/mman.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace edgetune {

const char* category_name(MemCategory c) {
  switch (c) {
    case MemCategory::BaseWeights: return "base_weights";
    case MemCategory::Trainable: return "trainable";
    case MemCategory::Grads: return "grads";
    case MemCategory::OptimizerState: return "optimizer_state";
    case MemCategory::Activations: return "activations";
    case MemCategory::Workspace: return "workspace";
    case MemCategory::Data: return "data";
  }
  return "unknown";
}

static std::string budget_message(MemCategory category, std::size_t asked, std::size_t live,
                                  std::size_t budget) {
  return "memory budget exceeded: " + std::string(category_name(category)) + " asked for " +
         format_bytes(asked) + " with " + format_bytes(live) + " live of a budget of " +
         format_bytes(budget) +
         " (raise --memory-budget, or lower --batch-size / --max-length, or let the planner "
         "choose checkpointing and micro-batches)";
}

BudgetExceeded::BudgetExceeded(MemCategory c, std::size_t a, std::size_t l, std::size_t b)
    : std::runtime_error(budget_message(c, a, l, b)), category(c), asked(a), live(l), budget(b) {}

namespace {
constexpr std::size_t kAlign = 64;
// Blocks from kMapThreshold (memory.h) up are mapped from the OS directly and unmapped when
// freed, so the resident set follows the accountant: a heap allocator keeps freed memory for
// itself (glibc raises its mmap threshold after the first large free and then serves large blocks
// from a heap it rarely returns), which would put freed tensors into the process's peak.
// The threshold is low (16 KiB) because the heap fragments around blocks of many sizes (a
// micro-batch's tensors change size with its longest row): on the shipped model under a 32 MiB
// budget the resident set grew 7 MiB past the accountant's figures over 50 steps with a 256 KiB
// threshold. Mapped blocks leave nothing behind when freed, and the reuse cache keeps the mapping
// calls off the hot path.
constexpr std::size_t kPage = 4096;

void* system_allocate(std::size_t size) {
  if (size >= kMapThreshold) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  return std::aligned_alloc(kAlign, size);
}

void system_free(void* p, std::size_t size) {
  if (size >= kMapThreshold) {
    ::munmap(p, size);
  } else {
    std::free(p);
  }
}
}  // namespace

std::size_t accounted_bytes(std::size_t bytes) {
  if (bytes >= kMapThreshold) return (bytes + kPage - 1) / kPage * kPage;
  return (bytes + kAlign - 1) / kAlign * kAlign;
}

Accountant::~Accountant() { trim_locked(); }

void Accountant::make_room_locked(MemCategory c, std::size_t asked, std::size_t size) {
  if (budget_ == 0 || live_total_ + cached_ + size <= budget_) return;
  if (live_total_ + size > budget_) throw BudgetExceeded(c, asked, live_total_, budget_);
  evict_locked(size, budget_);
}

void Accountant::evict_locked(std::size_t need, std::size_t limit) {
  while (live_total_ + cached_ + need > limit && !cache_.empty()) {
    auto it = std::prev(cache_.end());  // the largest size
    std::vector<void*>& blocks = it->second;
    while (!blocks.empty() && live_total_ + cached_ + need > limit) {
      system_free(blocks.back(), it->first);
      blocks.pop_back();
      cached_ -= it->first;
    }
    if (blocks.empty()) cache_.erase(it);
  }
}

void Accountant::note_peak_locked() {
  const std::size_t total = live_total_ + cached_;
  peak_live_ = std::max(peak_live_, live_total_);
  for (int i = 0; i < kNumMemCategories; ++i) peak_[i] = std::max(peak_[i], live_[i]);
  if (total > peak_total_) {
    peak_total_ = total;
    at_total_peak_ = live_;
  }
}

void* Accountant::allocate(MemCategory c, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  const std::size_t size = accounted_bytes(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* p = nullptr;
  auto it = cache_.find(size);
  if (it != cache_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    cached_ -= size;
    ++cache_hits_;
  } else {
    make_room_locked(c, bytes, size);
    const std::size_t room =
        inference_ > 0 ? peak_[static_cast<int>(MemCategory::Activations)] +
                             peak_[static_cast<int>(MemCategory::Workspace)]
                       : 0;
    evict_locked(size, std::max(peak_live_, live_total_ + size) + room);
    p = system_allocate(size);
    if (p == nullptr) {
      trim_locked();
      p = system_allocate(size);
      if (p == nullptr) throw std::bad_alloc();
    }
    ++allocations_;
  }
  live_[static_cast<int>(c)] += size;
  live_total_ += size;
  note_peak_locked();
  return p;
}

void Accountant::charge(MemCategory c, std::size_t bytes) {
  if (bytes == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  make_room_locked(c, bytes, bytes);
  live_[static_cast<int>(c)] += bytes;
  live_total_ += bytes;
  note_peak_locked();
}

void Accountant::discharge(MemCategory c, std::size_t bytes) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  live_[static_cast<int>(c)] -= bytes;
  live_total_ -= bytes;
}

Charge::Charge(Accountant& accountant, MemCategory category, std::size_t bytes)
    : accountant_(&accountant), category_(category), bytes_(bytes) {
  accountant.charge(category, bytes);
}

Charge::Charge(Charge&& other) noexcept
    : accountant_(other.accountant_), category_(other.category_), bytes_(other.bytes_) {
  other.accountant_ = nullptr;
  other.bytes_ = 0;
}

Charge& Charge::operator=(Charge&& other) noexcept {
  if (this != &other) {
    if (accountant_) accountant_->discharge(category_, bytes_);
    accountant_ = other.accountant_;
    category_ = other.category_;
    bytes_ = other.bytes_;
    other.accountant_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

Charge::~Charge() {
  if (accountant_) accountant_->discharge(category_, bytes_);
}

void Accountant::release(MemCategory c, void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  const std::size_t size = accounted_bytes(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  live_[static_cast<int>(c)] -= size;
  live_total_ -= size;
  if (caching_) {
    try {
      cache_[size].push_back(p);
      cached_ += size;
      return;
    } catch (...) {
      // Could not record the block for reuse: give it back instead.
    }
  }
  system_free(p, size);
}

void Accountant::trim_locked() {
  for (auto& [size, blocks] : cache_) {
    for (void* p : blocks) system_free(p, size);
    cached_ -= size * blocks.size();
    blocks.clear();
  }
  cache_.clear();
}

void Accountant::begin_inference() {
  std::lock_guard<std::mutex> lock(mu_);
  ++inference_;
}

void Accountant::end_inference() noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  --inference_;
}

void Accountant::trim() {
  std::lock_guard<std::mutex> lock(mu_);
  trim_locked();
}

void Accountant::set_caching(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  caching_ = on;
  if (!on) trim_locked();
}

void Accountant::set_budget(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  budget_ = bytes;
  if (budget_ != 0 && live_total_ + cached_ > budget_) trim_locked();
}

std::size_t Accountant::budget() const {
  std::lock_guard<std::mutex> lock(mu_);
  return budget_;
}

MemoryStats Accountant::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  MemoryStats s;
  s.live = live_;
  s.peak = peak_;
  s.at_total_peak = at_total_peak_;
  s.live_total = live_total_;
  s.cached = cached_;
  s.peak_total = peak_total_;
  s.peak_live = peak_live_;
  s.budget = budget_;
  s.allocations = allocations_;
  s.cache_hits = cache_hits_;
  return s;
}

std::size_t Accountant::live(MemCategory c) const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_[static_cast<int>(c)];
}

std::size_t Accountant::live_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_total_;
}

std::size_t Accountant::peak_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_total_;
}

void Accountant::reset_peaks() {
  std::lock_guard<std::mutex> lock(mu_);
  peak_ = live_;
  at_total_peak_ = live_;
  peak_total_ = live_total_ + cached_;
  peak_live_ = live_total_;
}

std::string format_bytes(std::size_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes < 1024) {
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  } else if (b < 1024.0 * 1024.0) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  } else if (b < 1024.0 * 1024.0 * 1024.0) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024.0));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
  }
  return buf;
}

std::size_t parse_bytes(const std::string& text) {
  const std::string expected = "expected a byte count such as 256M, 1.5G, 512K or 65536, got '" +
                               text + "'";
  std::size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    throw std::invalid_argument(expected);
  }
  if (!(value >= 0) || !std::isfinite(value)) throw std::invalid_argument(expected);
  std::string unit;
  for (std::size_t i = pos; i < text.size(); ++i) {
    unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
  }
  double mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    mult = 1024.0;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    mult = 1024.0 * 1024.0;
  } else if (unit == "G" || unit == "GB" || unit == "GIB") {
    mult = 1024.0 * 1024.0 * 1024.0;
  } else {
    throw std::invalid_argument(expected);
  }
  return static_cast<std::size_t>(std::llround(value * mult));
}

// The value of the "<key>" line of a /proc/<pid>/status text, which the kernel gives in kB; 0
// when the line is missing.
static std::size_t status_kb(std::string_view status, std::string_view key) {
  std::size_t start = 0;
  while (start < status.size()) {
    const std::size_t end = std::min(status.find('\n', start), status.size());
    const std::string_view line = status.substr(start, end - start);
    if (line.starts_with(key)) {
      return static_cast<std::size_t>(std::strtoull(std::string(line.substr(key.size())).c_str(), nullptr, 10)) * 1024;
    }
    start = end + 1;
  }
  return 0;
}

static std::string read_status() {
  std::ifstream in("/proc/self/status");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::size_t process_peak_rss() { return status_kb(read_status(), "VmHWM:"); }
std::size_t process_rss() { return status_kb(read_status(), "VmRSS:"); }

std::size_t process_heap_free() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  return mallinfo2().fordblks;
#else
  return 0;
#endif
}

ResidentSplit parse_resident_split(std::string_view status) {
  return {status_kb(status, "RssFile:"), status_kb(status, "RssAnon:")};
}

ResidentSplit process_resident_split() { return parse_resident_split(read_status()); }

}  // namespace edgetune
