// The memory accountant: every tensor byte in edgetune is allocated through it.
//
// It knows, at every moment, the live bytes and the peak per category (base weights, trainable
// parameters, gradients, optimizer state, activations, workspace, data) and the peak of their sum, and
// it can enforce a hard budget: an allocation that would take the total over the budget throws
// edgetune::BudgetExceeded before anything is written. It is not a general-purpose allocator for
// small objects (graph nodes, strings): only tensor storage and the packed data set go through it,
// and the few other long-lived tables (the tokenizer's vocabulary) are charged to it by size.
//
// Freed blocks are kept in a per-size cache and handed out again to the next request of the same
// size, so a training step that repeats the same shapes stops calling the system allocator after
// the first step. Cached blocks still occupy memory, so they count against the budget (reported as
// `cached`). The cache never raises the footprint: when a request misses the cache and live +
// cached + the request would exceed both the budget and the highest live total seen so far, cached
// blocks are freed first, largest first. So the peak of live + cached stays the peak of live (plus
// at most the blocks of the request itself), and a budget only ever sees live bytes it would see
// without a cache. Inference is the exception, by request (InferenceCache below): it may keep one
// more activation peak cached.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <map>
#include <vector>

namespace edgetune {

enum class MemCategory : int {
  BaseWeights = 0,     // frozen base model (f32, q8 or q4) and other frozen tables
  Trainable = 1,       // trainable parameters (adapters, head, all weights when full)
  Grads = 2,           // .grad of trainable parameters
  OptimizerState = 3,  // optimizer moments
  Activations = 4,     // forward outputs and what backward nodes keep
  Workspace = 5,       // transient: gradients of activations during backward, scratch tiles
  Data = 6,            // the data set's packed token ids and the tokenizer's vocabulary
};
inline constexpr int kNumMemCategories = 7;

// Lower-case name of a category ("base_weights", "activations", ...).
const char* category_name(MemCategory c);

// Thrown when an allocation would take the accountant's live total (including its cache) past
// its budget. Nothing has been allocated or written when it is thrown.
class BudgetExceeded : public std::runtime_error {
 public:
  BudgetExceeded(MemCategory category, std::size_t asked, std::size_t live, std::size_t budget);
  MemCategory category;
  std::size_t asked;   // bytes requested
  std::size_t live;    // bytes live (all categories) at the time of the request
  std::size_t budget;  // the budget in bytes
};

// A snapshot of the accountant's figures.
struct MemoryStats {
  std::array<std::size_t, kNumMemCategories> live{};
  std::array<std::size_t, kNumMemCategories> peak{};          // peak of each category alone
  std::array<std::size_t, kNumMemCategories> at_total_peak{};  // per category when total peaked
  std::size_t live_total = 0;  // sum of live (tensors only)
  std::size_t cached = 0;      // freed blocks kept for reuse
  std::size_t peak_total = 0;  // peak of live_total + cached
  std::size_t peak_live = 0;   // peak of live_total
  std::size_t budget = 0;      // 0 = no budget
  std::size_t allocations = 0;       // calls that reached the system allocator
  std::size_t cache_hits = 0;        // calls served from the cache
};

class Accountant {
 public:
  Accountant() = default;
  Accountant(const Accountant&) = delete;
  Accountant& operator=(const Accountant&) = delete;
  ~Accountant();

  // Returns `bytes` of 64-byte aligned, uninitialised memory counted under `c`.
  // Throws BudgetExceeded if live + cached + bytes would exceed the budget even after the cache is
  // emptied. bytes == 0 returns nullptr.
  void* allocate(MemCategory c, std::size_t bytes);
  // Gives back a block from allocate() with the same category and size.
  void release(MemCategory c, void* p, std::size_t bytes) noexcept;
  // Counts `bytes` held elsewhere (a table in the heap) under `c`, exactly as given, against the
  // budget: throws BudgetExceeded as allocate() would. discharge() takes them back.
  void charge(MemCategory c, std::size_t bytes);
  void discharge(MemCategory c, std::size_t bytes) noexcept;

  // Budget in bytes; 0 removes it. Setting a budget below what is live is allowed (the next
  // allocation fails).
  void set_budget(std::size_t bytes);
  std::size_t budget() const;

  MemoryStats stats() const;
  std::size_t live(MemCategory c) const;
  std::size_t live_total() const;
  std::size_t peak_total() const;
  // Restarts the peaks from what is live now.
  void reset_peaks();
  // Returns cached blocks to the system.
  void trim();
  // Turns the reuse cache on or off (on by default); turning it off trims.
  void set_caching(bool on);
  // While at least one inference scope is open (InferenceCache), the cache may hold, beyond the
  // live peak, as many bytes as the peaks of the activation and workspace categories add up to.
  // Inference frees each activation as soon as the next op has consumed it, so the blocks one
  // forward pass cycles through (of many sizes) add up to more than is ever live at once; held to
  // the live peak, the cache unmaps them and the next call maps and faults them in again (on a
  // BERT-base predict: 132 mappings, 94 MB of fresh pages, 40 % of the time). A budget still
  // bounds live + cached.
  void begin_inference();
  void end_inference() noexcept;

 private:
  void note_peak_locked();
  void trim_locked();
  // Under a budget, makes room for `size` more bytes (`asked` by the caller) under `c`: throws
  // BudgetExceeded when live + size would pass it, else frees cached blocks as needed.
  void make_room_locked(MemCategory c, std::size_t asked, std::size_t size);
  // Frees cached blocks, largest first, until live + cached + need <= limit or the cache is empty.
  void evict_locked(std::size_t need, std::size_t limit);

  mutable std::mutex mu_;
  std::array<std::size_t, kNumMemCategories> live_{};
  std::array<std::size_t, kNumMemCategories> peak_{};
  std::array<std::size_t, kNumMemCategories> at_total_peak_{};
  std::size_t live_total_ = 0;
  std::size_t cached_ = 0;
  std::size_t peak_total_ = 0;
  std::size_t peak_live_ = 0;  // highest live_total_ since the last reset_peaks()
  std::size_t budget_ = 0;
  std::size_t allocations_ = 0;
  std::size_t cache_hits_ = 0;
  bool caching_ = true;
  int inference_ = 0;  // open inference scopes
  std::map<std::size_t, std::vector<void*>> cache_;  // size -> free blocks
};

// Opens an inference scope on an accountant for its lifetime (see Accountant::begin_inference).
class InferenceCache {
 public:
  explicit InferenceCache(Accountant& accountant) : accountant_(accountant) {
    accountant_.begin_inference();
  }
  ~InferenceCache() { accountant_.end_inference(); }
  InferenceCache(const InferenceCache&) = delete;
  InferenceCache& operator=(const InferenceCache&) = delete;

 private:
  Accountant& accountant_;
};

// Bytes held elsewhere, counted by an accountant for as long as this object lives (charge() on
// construction, discharge() on destruction). Movable, not copyable.
class Charge {
 public:
  Charge() = default;
  Charge(Accountant& accountant, MemCategory category, std::size_t bytes);
  Charge(Charge&& other) noexcept;
  Charge& operator=(Charge&& other) noexcept;
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;
  ~Charge();
  std::size_t bytes() const { return bytes_; }

 private:
  Accountant* accountant_ = nullptr;
  MemCategory category_ = MemCategory::Data;
  std::size_t bytes_ = 0;
};

// Blocks from this size up are mapped from the OS directly and unmapped when freed; smaller ones
// come from the heap, whose freed holes stay resident (see memory.cpp).
inline constexpr std::size_t kMapThreshold = 16 * 1024;

// The bytes the accountant counts for a block of `bytes`: 64-byte multiples below 16 KiB, whole
// 4 KiB pages from there up (those blocks are mapped from the OS). 0 for 0. Every figure the
// accountant reports is a sum of these, so an estimate built from it matches the count exactly.
std::size_t accounted_bytes(std::size_t bytes);

// Formats a byte count for people in binary units: "97.3 MiB", "512.0 KiB", "1.25 GiB".
std::string format_bytes(std::size_t bytes);

// Parses a byte count: "128M" / "128MiB" / "128MB" (all 128 * 2^20: budgets are binary, like
// VmHWM), "1.5G", "512K", "65536" (bytes). Throws std::invalid_argument
// with a message saying what was expected.
std::size_t parse_bytes(const std::string& text);

// Peak resident set size of this process (VmHWM from /proc/self/status), in bytes; 0 if unknown.
std::size_t process_peak_rss();
// Current resident set size (VmRSS), in bytes; 0 if unknown.
std::size_t process_rss();

// The free bytes inside the C heap (glibc: mallinfo2's fordblks over all arenas; 0 elsewhere):
// holes that freed blocks left and the heap keeps. malloc_trim gives their pages back to the OS,
// but the heap hands the holes out again to later small allocations, whose writes make those
// pages resident anew: a bound on how far the heap's resident part can grow without the heap
// growing.
std::size_t process_heap_free();

// The resident set by kind of page, as /proc/self/status splits it (Linux 4.5 and later): file
// (RssFile: file-backed pages, such as a mapped model file's weights and the code, which the OS
// can drop and read again) and private (RssAnon: anonymous memory, what iOS's per-app limit
// counts). Shared memory (RssShmem) is in neither. 0 where the kernel does not say.
struct ResidentSplit {
  std::size_t file = 0;
  std::size_t private_bytes = 0;
  bool known() const { return file + private_bytes > 0; }
};
// The split read from the text of a /proc/<pid>/status file.
ResidentSplit parse_resident_split(std::string_view status);
// This process's split now.
ResidentSplit process_resident_split();

}  // namespace edgetune
