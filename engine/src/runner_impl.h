// The members of Runner (run.h) that every mode shares, and the state every mode's Impl starts
// from (ModeState). Included by each mode's .cpp, which defines its Runner<...>::Impl from
// ModeState and ends with the explicit instantiation of its Runner.
#pragma once

#include "edgetune/core/context.h"
#include "edgetune/engine/run.h"

namespace edgetune {

// What every mode's Runner<...>::Impl holds besides its own state.
template <class Config>
struct ModeState : RunTask {
  Config cfg;
  std::ostream* log = nullptr;  // progress and reports for people (null: silent)
  bool resuming = false;
  // The run's own accountant (with its budget), kernel threads and dropout generator: run()
  // makes it current on the calling thread (ContextScope) for as long as it works, so two runs on
  // two threads neither share nor change each other's.
  Context context;

  void say(const std::string& s) const {
    if (log) *log << s << std::flush;
  }
};

template <class Config, class Result>
Runner<Config, Result>::Runner(Config config, std::ostream* log) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
  impl_->log = log;
}

template <class Config, class Result>
Runner<Config, Result> Runner<Config, Result>::resume(const std::filesystem::path& run_dir, std::ostream* log,
                                                      ResumeOverrides overrides) {
  Config c = Config::from_json(RunFolder::open_for_resume(run_dir), (run_dir / "run.json").string());
  c.out = run_dir;
  c.key = current_context().key;
  if (overrides.threads) c.threads = *overrides.threads;
  if (overrides.memory_budget) c.memory_budget = *overrides.memory_budget;
  return resume(std::move(c), log);
}

template <class Config, class Result>
Runner<Config, Result> Runner<Config, Result>::resume(Config config, std::ostream* log) {
  Runner r(std::move(config), log);
  r.impl_->resuming = true;
  return r;
}

template <class Config, class Result>
std::shared_ptr<const Accountant> Runner<Config, Result>::accountant() const {
  return impl_->context.accountant;
}

template <class Config, class Result>
Runner<Config, Result>::~Runner() = default;

template <class Config, class Result>
Runner<Config, Result>::Runner(Runner&&) noexcept = default;

}  // namespace edgetune
