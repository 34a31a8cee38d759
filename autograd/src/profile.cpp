// The per-op profiler (see profile.h).
#include "edgetune/autograd/profile.h"

#include <algorithm>

namespace edgetune::profile {

namespace {
thread_local Profiler* t_active = nullptr;
}  // namespace

void Profiler::add(std::string_view name, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = table_.find(name);
  if (it == table_.end()) it = table_.emplace(std::string(name), Entry{std::string(name), 0, 0}).first;
  it->second.seconds += seconds;
  ++it->second.calls;
}

std::vector<Entry> Profiler::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Entry> out;
  for (const auto& [name, e] : table_) out.push_back(e);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

Profiler* active() { return t_active; }

Recording::Recording(Profiler& profiler) : previous_(t_active) { t_active = &profiler; }

Recording::~Recording() { t_active = previous_; }

}  // namespace edgetune::profile
