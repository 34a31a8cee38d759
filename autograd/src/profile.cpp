// The per-op profiler (see profile.h).
#include "edgetune/autograd/profile.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

namespace edgetune::profile {

namespace {
std::atomic<bool> g_on{false};
std::mutex g_mu;
std::map<std::string, Entry>& table() {
  static std::map<std::string, Entry> t;
  return t;
}
}  // namespace

void enable(bool on) { g_on.store(on); }
bool enabled() { return g_on.load(std::memory_order_relaxed); }

void reset() {
  std::lock_guard<std::mutex> lock(g_mu);
  table().clear();
}

void add(std::string_view name, double seconds) {
  std::lock_guard<std::mutex> lock(g_mu);
  Entry& e = table()[std::string(name)];
  e.name = name;
  e.seconds += seconds;
  ++e.calls;
}

std::vector<Entry> entries() {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<Entry> out;
  for (auto& [k, v] : table()) out.push_back(v);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

}  // namespace edgetune::profile
