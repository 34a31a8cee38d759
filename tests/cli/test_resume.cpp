// Killing fine-tuning (kill -9, or Ctrl-C) and resuming ends with the same adapter bytes as an
// uninterrupted run with the same settings and thread count; the run folder never holds a torn
// file. The same with the run folder encrypted (--key-file): the same decrypted bytes.
#include <catch2/catch.hpp>

#include <signal.h>

#include <fstream>

#include "interrupted_run.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

// 480 short labelled rows: enough optimizer steps that a kill lands in the middle of the run.
void write_data(const fs::path& p) {
  std::ofstream out(p);
  out << "sentence\tlabel\n";
  const char* good[] = {"a good film", "really great acting", "i loved it", "wonderful story"};
  const char* bad[] = {"a bad film", "really poor acting", "i hated it", "boring story"};
  for (int i = 0; i < 240; ++i) {
    out << good[i % 4] << " number " << i << "\t1\n";
    out << bad[i % 4] << " number " << i << "\t0\n";
  }
}

// `extra`: more arguments of the run (DP-SGD's, whose sampling and noise generator must resume too).
void interrupted_training_matches(int sig, bool encrypted = false, const std::string& extra = "") {
  ScratchDir d(std::string(sig == SIGKILL ? "kill" : "sigint") + (encrypted ? "-key" : ""));
  write_data(d / "train.tsv");
  InterruptibleCommand train;
  train.command = "train";
  // Dropout on, so the resumed run must also restore the dropout generator.
  train.args = [data = d / "train.tsv", extra](const fs::path& out) {
    return "--model " + q(golden_dir() / "bert" / "tiny") + " --train " + q(data) + " --out " + q(out) +
           " --method lora --epochs 2 --batch-size 4 --save-every 1 --threads 1 --dropout 0.1 --log-every 1000" +
           extra;
  };
  train.same_files = {"adapter_model.safetensors", "labels.json"};
  train.final_file = "adapter_model.safetensors";
  // A torn checkpoint under the writer's temporary name, and labels.json under the name older
  // versions wrote it through.
  train.planted_temporaries = {"train_state.safetensors.tmp-4242", "labels.json.tmp.4242"};
  if (encrypted) {
    train.key_file = d / "run.key";
    std::ofstream(train.key_file, std::ios::binary) << std::string(32, '\x5a');
  }
  interrupted_run_matches(train, d.path, sig);
  if (encrypted) {
    for (const auto& e : fs::directory_iterator(d / "cut")) {
      INFO(e.path().filename().string());
      CHECK(encryption::is_encrypted(slurp(e.path())));
    }
  }
}

}  // namespace

TEST_CASE("kill -9 during training, then --resume, gives the same adapter bytes",
          "[cli][resume]") {
  interrupted_training_matches(SIGKILL);
}

TEST_CASE("kill -9 during an encrypted training, then --resume with the key, gives the same "
          "decrypted adapter",
          "[cli][resume][encryption]") {
  interrupted_training_matches(SIGKILL, true);
}

TEST_CASE("Ctrl-C saves a checkpoint and exits, and --resume gives the same adapter bytes",
          "[cli][resume]") {
  interrupted_training_matches(SIGINT);
}

TEST_CASE("kill -9 during DP-SGD training, then --resume, gives the same adapter bytes", "[cli][resume][dp]") {
  interrupted_training_matches(SIGKILL, false, " --dp-noise-multiplier 0.8 --dp-max-grad-norm 0.5");
}
