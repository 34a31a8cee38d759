// A per-op profiler: wall time and call counts of every op's forward (by op name) and backward
// (by node name, "linear.backward"), for `edgetune bench --profile`. A Profiler records the ops
// run on a thread while a Recording of it is alive there; with none, a scope costs one branch.
// Nothing here is process-wide: which profiler records is a per-thread pointer that Recording
// sets and restores.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace edgetune::profile {

struct Entry {
  std::string name;
  double seconds = 0;
  std::int64_t calls = 0;
};

// The table of one profile. Thread-safe.
class Profiler {
 public:
  void add(std::string_view name, double seconds);
  // Every entry, most time first.
  std::vector<Entry> entries() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> table_;
};

// The profiler recording on the calling thread, or null.
Profiler* active();

// Makes `profiler` record the ops run on the calling thread until the scope ends, then restores
// the one recording before. `profiler` must outlive the scope.
class Recording {
 public:
  explicit Recording(Profiler& profiler);
  ~Recording();
  Recording(const Recording&) = delete;
  Recording& operator=(const Recording&) = delete;

 private:
  Profiler* previous_;
};

// Adds the scope's wall time to `name` in the active profiler, if there is one.
class Scope {
 public:
  explicit Scope(const char* name) : profiler_(active()), name_(name) {
    if (profiler_) start_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (profiler_) {
      profiler_->add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Profiler* profiler_;
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace edgetune::profile
