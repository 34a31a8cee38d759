// Settings tables (engine/settings.h) bound to command-line options: each field of a settings
// struct becomes the option "--" + key (or the table's flag), with the table's help text, its
// default shown, enums checked against their names, byte sizes parsed
// ("128M"), lists split at commas, and optionals left unset unless given.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include <iostream>
#include <memory>
#include <optional>

#include "commands.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/run.h"
#include "edgetune/engine/settings.h"
#include "live_progress.h"
#include "options.h"

namespace edgetune::cli {

class SettingsBinder {
 public:
  // Fields whose keys are in `skip` get no option.
  explicit SettingsBinder(CLI::App& app, std::set<std::string> skip = {}) : app_(app), skip_(std::move(skip)) {}

  template <class T>
  void operator()(const char* key, T& value, const char* help, const settings::Spec& spec = {}) {
    const std::string flag = flag_of(key, spec);
    if (flag.empty()) return;
    CLI::Option* o = nullptr;
    if constexpr (std::is_same_v<T, bool>) {
      o = spec.negated ? app_.add_flag_callback(flag, [&value] { value = false; }, help)
                       : app_.add_flag(flag, value, help);
    } else if constexpr (std::is_same_v<T, std::optional<bool>>) {
      static const std::map<std::string, std::optional<bool>> kAutoOnOff = {
          {"auto", std::nullopt}, {"on", true}, {"off", false}};
      o = app_.add_option_function<std::string>(
                  flag, [&value](const std::string& s) { value = kAutoOnOff.at(s); }, help)
              ->check(CLI::IsMember({"auto", "on", "off"}))
              ->default_str(value ? (*value ? "on" : "off") : "auto");
    } else if constexpr (std::is_same_v<T, data::ColumnRef> ||
                         std::is_same_v<T, std::optional<data::ColumnRef>>) {
      o = app_.add_option_function<std::string>(
          flag,
          [&value, flag](const std::string& s) {
            try {
              value = data::ColumnRef::parse(s);
            } catch (const std::invalid_argument& e) {
              throw CLI::ValidationError(flag, e.what());
            }
          },
          help);
    } else if constexpr (std::is_same_v<T, std::filesystem::path>) {
      o = app_.add_option_function<std::string>(
          flag, [&value](const std::string& s) { value = s; }, help);
    } else if constexpr (std::is_same_v<T, std::vector<std::filesystem::path>>) {
      o = app_.add_option_function<std::vector<std::string>>(
          flag, [&value](const std::vector<std::string>& v) { value.assign(v.begin(), v.end()); }, help);
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      std::string shown;
      for (const auto& s : value) shown += (shown.empty() ? "" : ",") + s;
      o = app_.add_option(flag, value, help)->delimiter(',')->default_str(shown);
    } else if constexpr (std::is_same_v<T, std::size_t>) {
      if (spec.bytes) {
        o = app_.add_option_function<std::string>(
            flag,
            [&value, flag](const std::string& s) {
              try {
                value = parse_bytes(s);
              } catch (const std::invalid_argument& e) {
                throw CLI::ValidationError(flag, e.what());  // a usage error (exit 2)
              }
            },
            help);
      } else {
        o = app_.add_option(flag, value, help)->capture_default_str();
      }
    } else if constexpr (settings::detail::is_optional<T>::value) {
      o = app_.add_option(flag, value, help);
    } else {
      o = app_.add_option(flag, value, help)->capture_default_str();
    }
    flags_[key] = o;
  }

  template <class E, std::size_t N>
  void operator()(const char* key, E& value, const settings::Choice<E> (&choices)[N], const char* help,
                  const settings::Spec& spec = {}) {
    const std::string flag = flag_of(key, spec);
    if (flag.empty()) return;
    // The names are checked with IsMember (CLI::CheckedTransformer's messages print the enum's
    // numeric values) and mapped through the table.
    std::vector<std::string> names;
    for (const auto& c : choices) names.emplace_back(c.name);
    flags_[key] = app_.add_option_function<std::string>(
                          flag, [&value, &choices](const std::string& s) { value = settings::parse_choice<E>(choices, "", s); },
                          help)
                      ->check(CLI::IsMember(names))
                      ->default_str(settings::name_of<E>(choices, value));
  }

  // The options bound, by key.
  const std::map<std::string, CLI::Option*>& options() const { return flags_; }

 private:
  std::string flag_of(const char* key, const settings::Spec& spec) const {
    if (skip_.contains(key)) return "";
    if (spec.flag != nullptr) return spec.flag;
    return settings::default_flag(key);
  }
  CLI::App& app_;
  std::set<std::string> skip_;
  std::map<std::string, CLI::Option*> flags_;
};

// After parsing: the settings given on the command line that a resumed run may not change, as a
// usage error ("--resume continues with the settings in RUN_DIR/run.json; drop --lr"); and the
// ones it may change (--threads, --memory-budget), when given.
ResumeOverrides resume_overrides(const SettingsBinder& bound, int threads, std::size_t memory_budget);

// A training command (train, pretrain): the mode's settings bound to options, --resume RUN_DIR,
// and the run started from them (a new run needs every key of `required`, "a|b" meaning either,
// else `usage` is the error). Ctrl-C stops the run with a checkpoint; under a memory budget the allocator returns freed
// blocks (limit_allocator_slack). `report` prints the result for people; the exit code is 130 for
// an interrupted run, else 0.
template <class Runner, class Config, class Result>
RegisterCommand run_command(std::string name, std::string help, std::vector<std::string> required,
                            std::string usage, std::function<void(const Result&)> report) {
  struct State {
    Config config;
    std::string resume;
    std::string key_file;
    std::unique_ptr<SettingsBinder> bound;
  };
  auto registrar = [required, usage, report](CLI::App& app) -> std::function<int()> {
    auto s = std::make_shared<State>();
    s->bound = std::make_unique<SettingsBinder>(app);
    Config::fields(s->config, *s->bound);
    app.add_option("--resume", s->resume, "continue the interrupted run in RUN_DIR");
    add_key_option(app, s->key_file);
    return [s, required, usage, report] {
      const StopToken stop = install_stop_signals();
      // The key reads run.json when resuming (the resumed run takes it from this context) and is
      // the new run's otherwise.
      Context keyed;
      keyed.key = load_key(s->key_file);
      s->config.key = keyed.key;
      const ContextScope scope(keyed);
      // On a terminal, progress is one live line; elsewhere (a file, a pipe, a test) the plain lines.
      std::optional<LiveTerminal> terminal;
      if (stderr_is_terminal()) terminal.emplace(std::cerr);
      std::ostream* log = terminal ? &terminal->stream() : &std::cerr;
      std::optional<Runner> runner;
      if (!s->resume.empty()) {
        const ResumeOverrides o = resume_overrides(*s->bound, s->config.threads, s->config.memory_budget);
        if (o.memory_budget) limit_allocator_slack();
        runner.emplace(Runner::resume(s->resume, log, o));
      } else {
        for (const std::string& keys : required) {
          // "a|b": either will do.
          bool given = false;
          for (std::size_t at = 0; at <= keys.size();) {
            const std::size_t bar = std::min(keys.find('|', at), keys.size());
            given = given || s->bound->options().at(keys.substr(at, bar - at))->count() > 0;
            at = bar + 1;
          }
          if (!given) throw UsageError(usage);
        }
        if (s->config.memory_budget > 0) limit_allocator_slack();
        runner.emplace(s->config, log);
      }
      RunHooks hooks;
      hooks.should_stop = [stop] { return stop.stop_requested(); };
      if (terminal) {
        hooks.progress_lines = false;
        hooks.on_progress = [&terminal](const Progress& p) {
          terminal->show(live_progress_line(p, stderr_columns()));
        };
      }
      const Result r = runner->run(hooks);
      terminal.reset();
      report(r);
      return r.interrupted ? 130 : 0;
    };
  };
  return RegisterCommand(std::move(name), std::move(help), registrar);
}

}  // namespace edgetune::cli
