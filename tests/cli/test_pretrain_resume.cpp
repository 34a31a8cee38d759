// `edgetune pretrain` as the run layer makes it: killed (kill -9, or Ctrl-C) and resumed, it ends
// with the same model bytes as an uninterrupted run, as fine-tuning does (test_resume.cpp); and
// micro-batches with checkpointing give the loss curve of whole batches.
#include <catch2/catch.hpp>

#include <signal.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "interrupted_run.h"
#include "mini_corpus.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

// dir/init: a fresh 2-layer model over the mini vocabulary (32 positions); dir/corpus.txt: the
// mini corpus `copies` times.
void make_inputs(const fs::path& dir, int copies) {
  REQUIRE(cli_built());
  const RunResult create =
      run_cli("create-model --vocab " + q(golden_dir() / "tokenizer" / "mini-uncased-vocab.txt") +
              " --out " + q(dir / "init") + " --layers 2 --hidden 32 --heads 2 --intermediate 64 --max-positions 32");
  INFO(create.err);
  REQUIRE(create.exit_code == 0);
  std::ofstream corpus(dir / "corpus.txt");
  for (int i = 0; i < copies; ++i) corpus << kMiniCorpus << "\n";
}

void interrupted_pretraining_matches(int sig) {
  ScratchDir d(sig == SIGKILL ? "pretrain-kill" : "pretrain-sigint");
  make_inputs(d.path, 8);
  InterruptibleCommand pretrain;
  pretrain.command = "pretrain";
  // The model's dropout (0.1) stays on, so the resumed run must also restore the dropout
  // generator; the steps cross epoch boundaries, and evaluations fall before and after the cut.
  // 400 steps: a step of this model takes milliseconds, and the run must still be going when the
  // signal comes (150 ms after its first checkpoint).
  pretrain.args = [&d](const fs::path& out) {
    return "--model " + q(d / "init") + " --corpus " + q(d / "corpus.txt") + " --out " + q(out) +
           " --max-length 16 --batch-size 4 --max-steps 400 --eval-split 0.1 --eval-every 50"
           " --save-every 1 --log-every 1000 --threads 1";
  };
  pretrain.same_files = {"model.safetensors", "config.json", "vocab.txt"};
  pretrain.planted_temporaries = {"train_state.safetensors.tmp-4242", "model.safetensors.tmp-4242",
                                  "config.json.tmp.4242"};
  interrupted_run_matches(pretrain, d.path, sig);
}

// The "loss" of every "train" line of metrics.jsonl.
std::vector<double> train_losses(const fs::path& metrics) {
  std::vector<double> out;
  std::istringstream in(slurp(metrics));
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("type") == "train") out.push_back(j.at("loss").get<double>());
  }
  return out;
}

}  // namespace

TEST_CASE("kill -9 during pretraining, then --resume, gives the same model bytes",
          "[cli][pretrain][resume]") {
  interrupted_pretraining_matches(SIGKILL);
}

TEST_CASE("Ctrl-C during pretraining saves a checkpoint, and --resume gives the same model bytes",
          "[cli][pretrain][resume]") {
  interrupted_pretraining_matches(SIGINT);
}

TEST_CASE("pretraining with micro-batches and checkpointing has the loss curve of whole batches",
          "[cli][pretrain]") {
  ScratchDir d("pretrain-micro");
  make_inputs(d.path, 4);
  // No dropout: the two runs differ only in how each batch's loss is summed.
  const std::string common = "pretrain --model " + q(d / "init") + " --corpus " + q(d / "corpus.txt") +
                             " --max-length 16 --batch-size 4 --lr 2e-3 --max-steps 12 --eval-split 0"
                             " --log-every 1 --threads 1 --dropout 0";
  const RunResult whole = run_cli(common + " --out " + q(d / "whole"));
  INFO(whole.err);
  REQUIRE(whole.exit_code == 0);
  REQUIRE(whole.err.find("plan: checkpointing off, micro-batch 4 x 1") != std::string::npos);
  const RunResult parts = run_cli(common + " --micro-batch 2 --checkpointing on --out " + q(d / "parts"));
  INFO(parts.err);
  REQUIRE(parts.exit_code == 0);
  REQUIRE(parts.err.find("plan: checkpointing on, micro-batch 2 x 2") != std::string::npos);

  const std::vector<double> a = train_losses(d / "whole" / "metrics.jsonl");
  const std::vector<double> b = train_losses(d / "parts" / "metrics.jsonl");
  REQUIRE(a.size() == 12);
  REQUIRE(b.size() == 12);
  // The budget: float32 rounding only. A step's loss is a float32 mean over the batch's masked
  // tokens in one run, and in the other the masked-token-weighted sum of two float32 part means;
  // the two orders of summation differ by a few units of float32 rounding (u = 2^-24, 6e-8
  // relative: 1 ulp of the loss at step 1 here), and the parameters after each step differ by as
  // little, so the curve stays within a few u. 1e-6 relative (about 16 u) holds that with room;
  // weighting the parts by rows instead of masked tokens moves the losses here by up to 2.5e-2.
  const double rtol = 1e-6;
  require_close("training loss per step", b, a, rtol, 0.0);
}
