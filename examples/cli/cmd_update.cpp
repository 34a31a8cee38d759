// `edgetune update`: continues a finished fine-tuning run's adapter on new labelled rows, mixed
// with the run's replay buffer, as one atomic step on the run folder (engine/update.h).
#include <iostream>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/update.h"
#include "options.h"
#include "settings_cli.h"

namespace edgetune::cli {
namespace {

struct UpdateArgs {
  UpdateConfig config;
  std::string key_file;
  std::unique_ptr<SettingsBinder> bound;
};

int run(UpdateArgs& a) {
  for (const char* key : {"run", "train"}) {
    if (a.bound->options().at(key)->count() == 0) throw UsageError("update needs --run RUN_DIR and --train FILE");
  }
  a.config.key = load_key(a.key_file);
  const StopToken stop = install_stop_signals();
  if (a.config.memory_budget > 0) limit_allocator_slack();
  RunHooks hooks;
  hooks.should_stop = [stop] { return stop.stop_requested(); };
  const UpdateResult r = update_run(a.config, &std::cerr, hooks);
  if (r.train.interrupted) return 130;
  std::cerr << "done: update " << r.update << " of " << a.config.run.string() << ": " << r.train.steps
            << " steps on " << r.new_rows << " new and " << r.replayed_rows << " replayed rows in "
            << r.train.seconds << " s; peak memory: accountant " << format_bytes(r.train.accountant_peak)
            << ", process (VmHWM) " << format_bytes(r.train.peak_rss) << "; replay buffer " << r.replay_size
            << " of " << r.replay_seen << " rows seen\n";
  return 0;
}

const RegisterCommand kRegister{
    "update",
    "continue a fine-tuning run's adapter on new labelled rows, with replay of earlier ones",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<UpdateArgs>();
      a->bound = std::make_unique<SettingsBinder>(app);
      UpdateConfig::fields(a->config, *a->bound);
      add_key_option(app, a->key_file);
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
