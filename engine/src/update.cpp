// Continual updates of a fine-tuning run (see update.h).
#include "edgetune/engine/update.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "edgetune/core/context.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/replay.h"
#include "edgetune/engine/adapter_folder.h"

namespace edgetune {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStaging = "update-staging";
constexpr const char* kCommitted = "COMMITTED";

// The run's settings, checked to be those of a finished fine-tuning run of an adapter method.
TrainConfig read_run(const fs::path& run) {
  if (!fs::is_directory(run)) throw std::invalid_argument(run.string() + ": no such run folder");
  const fs::path settings = run / "run.json";
  if (!fs::exists(settings)) {
    throw std::invalid_argument(run.string() + ": no run.json: not a run folder written by edgetune train");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(settings));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(settings.string() + ": invalid JSON (" + e.what() + ")");
  }
  TrainConfig c;
  try {
    c = TrainConfig::from_json(j, settings.string());
  } catch (const settings::SettingError& e) {
    throw std::invalid_argument(run.string() + ": not a fine-tuning run (" + e.what() + ")");
  }
  if (c.method.method == Method::Full) {
    throw std::invalid_argument(run.string() +
                                ": a full fine-tuning run has no adapter to continue: updates need lora, "
                                "adapter, bitfit or head");
  }
  if (!is_adapter_folder(run) || !fs::exists(run / "labels.json")) {
    throw std::invalid_argument(run.string() + ": no adapter_config.json and labels.json: the run did not "
                                "finish (continue it with edgetune train --resume " + run.string() + ")");
  }
  return c;
}

// The steps of the update: max_steps when set, else the epochs, but at least min_steps.
std::int64_t update_steps(const UpdateConfig& u, const TrainConfig& c, std::size_t rows) {
  if (u.max_steps > 0) return u.max_steps;
  const auto batches = (static_cast<std::int64_t>(rows) + c.batch_size - 1) / c.batch_size;
  const std::int64_t per_epoch = (batches + c.grad_accum - 1) / c.grad_accum;
  return std::max(per_epoch * u.epochs, u.min_steps);
}

// RUN's metrics, then the update's lines tagged with its number, then the summary line.
std::string merged_metrics(const fs::path& run, const fs::path& trained, std::uint64_t n,
                           const nlohmann::json& summary) {
  std::string out = fs::exists(run / "metrics.jsonl") ? read_file(run / "metrics.jsonl") : "";
  if (!out.empty() && out.back() != '\n') out += '\n';
  std::istringstream lines(read_file(trained / "metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line);
    j["update"] = n;
    out += j.dump() + "\n";
  }
  return out + summary.dump() + "\n";
}

// Step 6 of update.h: the staged files over RUN's, the stale checkpoint removed, the staging
// folder removed. Idempotent, so a kill in the middle is finished by running it again. The
// marker goes first: remove_all takes the folder's entries in no set order, and a marker left
// beside half-removed staged files would send the next update after files that are gone.
void apply_commit(const fs::path& run) {
  const fs::path staging = run / kStaging;
  const nlohmann::json files = nlohmann::json::parse(read_file(staging / kCommitted));
  for (const auto& f : files) {
    const std::string name = f.get<std::string>();
    write_file_atomic(run / name, read_file(staging / "commit" / name));
  }
  fs::remove(run / "train_state.safetensors");
  fs::remove(staging / kCommitted);
  fs::remove_all(staging);
}

}  // namespace

bool recover_update(const fs::path& run_dir) {
  const fs::path staging = run_dir / kStaging;
  if (!fs::exists(staging)) return false;
  if (fs::exists(staging / kCommitted)) {
    apply_commit(run_dir);
    return true;
  }
  fs::remove_all(staging);
  return false;
}

UpdateResult update_run(const UpdateConfig& u, std::ostream* log, const RunHooks& hooks) {
  auto say = [log](const std::string& s) {
    if (log) *log << s << std::flush;
  };
  if (u.run.empty()) throw std::invalid_argument("update: --run RUN_DIR is required");
  settings::check_ranges(u);
  // The run folder's files are read and written with the update's key (the trainer's own context
  // takes it from the MemorySettings copied below).
  Context keyed = current_context();
  if (u.key) keyed.key = u.key;
  const ContextScope scope(keyed);
  TrainConfig c = read_run(u.run);
  if (recover_update(u.run)) say("finished the update a kill had interrupted after its commit\n");

  // The new rows and the labels they bring.
  data::Dataset fresh = u.train_data ? *u.train_data : read_data(u.train_file, u.data, true);
  if (fresh.examples.empty()) throw std::invalid_argument(fresh.source + ": no training rows");
  std::vector<std::string> labels = data::LabelMap::load(u.run / "labels.json").id2label();
  const std::set<std::string> known(labels.begin(), labels.end());
  std::set<std::string> brought;
  for (const data::Example& e : fresh.examples) {
    if (!known.contains(e.label)) brought.insert(e.label);
  }
  labels.insert(labels.end(), brought.begin(), brought.end());

  // The buffer: the rows to replay now, and the buffer after the update.
  const fs::path replay_file = u.run / "replay.json";
  const data::ReplayBuffer before = fs::exists(replay_file)
                                        ? data::ReplayBuffer::load(replay_file)
                                        : data::ReplayBuffer(c.replay_examples, c.replay_bytes, c.seed);
  UpdateResult result;
  result.update = before.updates() + 1;
  const std::uint64_t seed = c.seed + result.update;
  const auto wanted = static_cast<std::size_t>(std::llround(u.replay_ratio * static_cast<double>(fresh.examples.size())));
  const std::vector<data::Example> replayed = before.sample(std::min(wanted, before.size()), seed);
  auto after = std::make_shared<data::ReplayBuffer>(before);
  for (const data::Example& e : fresh.examples) after->add(e);
  after->set_updates(result.update);

  auto mix = std::make_shared<data::Dataset>();
  mix->source = fresh.source;
  mix->examples = fresh.examples;
  mix->examples.insert(mix->examples.end(), replayed.begin(), replayed.end());

  const fs::path staging = u.run / kStaging;
  const fs::path trained = staging / "run";
  c.train_file.clear();
  c.train_data = mix;
  c.eval_file.clear();
  c.eval_split = 0;
  c.early_stopping = 0;
  c.save_every = 0;
  c.init_adapter = u.run;
  c.out = trained;
  c.data = u.data;
  c.epochs = u.epochs;
  c.max_steps = update_steps(u, c, mix->examples.size());
  c.lr = u.lr;
  c.seed = seed;
  c.threads = u.threads;
  static_cast<MemorySettings&>(c) = u;
  c.labels = labels;
  c.replay = after;

  std::ostringstream head;
  head << "update " << result.update << " of " << u.run.string() << ": " << fresh.examples.size()
       << " new rows, " << replayed.size() << " replayed of " << before.size() << " in the buffer";
  if (!brought.empty()) head << ", " << brought.size() << " new label(s): the head grows to " << labels.size();
  say(head.str() + "\n");

  try {
    result.train = Trainer(std::move(c), log).run(hooks);
    if (result.train.interrupted) {
      fs::remove_all(staging);
      say("update stopped: " + u.run.string() + " is as it was\n");
      return result;
    }
    const fs::path commit = staging / "commit";
    fs::create_directories(commit);
    const std::vector<std::string> copied = {"adapter_config.json", "adapter_model.safetensors",
                                             "labels.json", "replay.json"};
    for (const std::string& name : copied) write_file_atomic(commit / name, read_file(trained / name));
    const nlohmann::json summary = {{"type", "update"},
                                    {"update", result.update},
                                    {"new_rows", fresh.examples.size()},
                                    {"replayed_rows", replayed.size()},
                                    {"new_labels", std::vector<std::string>(brought.begin(), brought.end())},
                                    {"steps", result.train.steps},
                                    {"settings", settings::to_json(u)},
                                    {"replay_size", after->size()},
                                    {"replay_seen", after->seen()}};
    write_file_atomic(commit / "metrics.jsonl", merged_metrics(u.run, trained, result.update, summary));
    nlohmann::json files = copied;
    files.push_back("metrics.jsonl");
    write_file_atomic(staging / kCommitted, files.dump() + "\n");
  } catch (...) {
    if (!fs::exists(staging / kCommitted)) fs::remove_all(staging);
    throw;
  }
  apply_commit(u.run);
  result.new_rows = fresh.examples.size();
  result.replayed_rows = replayed.size();
  result.new_labels.assign(brought.begin(), brought.end());
  result.replay_size = after->size();
  result.replay_seen = after->seen();
  return result;
}

}  // namespace edgetune
