// Continual updates: a finished fine-tuning run's adapter continues on new labelled examples,
// mixed with the run's replay buffer (data/replay.h) so that it rehearses what came before, as
// one atomic step on the run folder. `edgetune update`, TuningSession::update and
// edgetune_session_update all come here.
//
// An update of RUN:
//   1. completes a committed update a kill left in RUN/update-staging/, or discards an unfinished
//      one (recover_update);
//   2. reads RUN/run.json (a fine-tuning run of an adapter method: not `full`, not pretraining),
//      labels.json and replay.json (a run from before replay buffers starts an empty one with
//      run.json's replay_examples and replay_bytes);
//   3. appends the labels of the new rows that labels.json lacks, in byte-wise order: the
//      classifier head grows by a row each, the old rows kept (load_trained's grow_head);
//   4. trains from RUN's adapter, with run.json's settings but for the update's (epochs, steps,
//      lr, data options, threads, memory), on the new rows plus round(replay_ratio x new rows)
//      rows drawn from the buffer (at most all of it), into RUN/update-staging/run/;
//   5. stages in RUN/update-staging/commit/ the files that change: adapter_config.json,
//      adapter_model.safetensors, labels.json, replay.json (the buffer with the new rows added,
//      its update count raised) and metrics.jsonl (RUN's lines, then the update's, each tagged
//      "update": n, then one "type": "update" summary line with the update's settings);
//   6. writes RUN/update-staging/COMMITTED (the list of staged files), copies each staged file over
//      RUN's, removes RUN/train_state.safetensors (its tensors are the run's before the update: a
//      `train --resume` of it would overwrite the update) and then RUN/update-staging/.
// A kill before step 6's marker leaves RUN as it was; after it, the next update (or
// recover_update) finishes the copy. Every file is written through core's atomic writer and read
// through read_file. An update stopped by its hooks (Ctrl-C, cancel) discards its staging folder
// and leaves RUN as it was.
// Update n (from 1) trains with run.json's seed + n and draws its replay rows with that seed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "edgetune/data/reader.h"
#include "edgetune/engine/run.h"
#include "edgetune/engine/session.h"
#include "edgetune/engine/settings.h"
#include "edgetune/engine/trainer.h"

namespace edgetune {

// The settings of an update. The defaults are for a handful to a few hundred new rows: a few
// passes over new + replayed rows, at least min_steps optimizer steps so that five corrections
// still move the adapter, at a learning rate below a first run's (5e-4 for adapters), with as
// many replayed rows as new ones.
struct UpdateConfig : MemorySettings {
  std::filesystem::path run;         // the run folder `train` wrote
  std::filesystem::path train_file;  // the new labelled rows
  // New rows already in memory (the C++ API and the C ABI); used instead of train_file when set.
  std::shared_ptr<const data::Dataset> train_data;
  DataOptions data;
  int epochs = 3;
  std::int64_t min_steps = 10;
  std::int64_t max_steps = 0;
  double lr = 2e-4;
  double replay_ratio = 1.0;
  int threads = 0;

  template <class Self, class V>
  static void fields(Self& c, V& v) {
    using namespace settings;
    v("run", c.run, "run folder of a finished fine-tuning run (train's --out)");
    v("train", c.train_file, "new labelled rows (TSV, CSV or JSONL; - for stdin)");
    DataOptions::fields(c.data, v);
    v("epochs", c.epochs, "passes over the new and replayed rows", at_least(1));
    v("min_steps", c.min_steps, "at least this many optimizer steps (a few rows are passed over again)",
      at_least(1));
    v("max_steps", c.max_steps, "exactly N optimizer steps, whatever the epochs (0: the epochs)", at_least(0));
    v("lr", c.lr, "peak learning rate of the update", above(0));
    v("replay_ratio", c.replay_ratio, "replayed rows per new row, drawn from the run's replay buffer",
      at_least(0));
    v("threads", c.threads, "threads for the kernels (0: all cores)", at_least(0));
    MemorySettings::fields(c, v);
  }
};

struct UpdateResult {
  TrainResult train;                    // the update's training (interrupted: RUN unchanged)
  std::uint64_t update = 0;             // its number in the run, from 1
  std::size_t new_rows = 0, replayed_rows = 0;
  std::vector<std::string> new_labels;  // labels the head grew by, in their new id order
  std::size_t replay_size = 0;          // examples in the buffer after the update
  std::uint64_t replay_seen = 0;        // examples the buffer has seen after the update
};

// Runs one update of config.run (see the top of this file). Throws std::invalid_argument (or
// SettingError, DataError, ModelError) with one line naming the run folder or file for a missing
// run, a run that is not a fine-tuning run of an adapter method, an unfinished run, or bad rows;
// PlanError / BudgetExceeded when the budget cannot hold it. A failure leaves RUN as it was.
UpdateResult update_run(const UpdateConfig& config, std::ostream* log = nullptr, const RunHooks& hooks = {});

// What a killed update left in run_dir: a committed one is completed (returns true), an
// unfinished one discarded (returns false); nothing left, nothing done (false).
bool recover_update(const std::filesystem::path& run_dir);

}  // namespace edgetune
