// A per-op profiler: wall time and call counts of every op's forward (by op name) and backward
// (by node name, "linear.backward"), for `edgetune bench --profile`. Off by default; when off, a
// scope costs one branch.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace edgetune::profile {

void enable(bool on);
bool enabled();
void reset();

struct Entry {
  std::string name;
  double seconds = 0;
  std::int64_t calls = 0;
};
// Every entry, most time first.
std::vector<Entry> entries();
void add(std::string_view name, double seconds);

// Adds the scope's wall time to `name` when profiling is on.
class Scope {
 public:
  explicit Scope(const char* name) : name_(enabled() ? name : nullptr) {
    if (name_) start_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (name_) add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace edgetune::profile
