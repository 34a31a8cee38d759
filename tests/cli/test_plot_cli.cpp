// What a user sees of runs: `train` and `pretrain` on a terminal (a pseudo-terminal made by
// script(1)) draw one live progress line and none of the plain lines, which they still print when
// stderr is not a terminal; `edgetune plot` draws a pretraining and a fine-tuning run in one SVG or
// PNG; its errors are one line.
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>

#include "cli_run.h"
#include "mini_corpus.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

// `text` as one word for sh, quotes within it included.
std::string sh_quote(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The edgetune command line with `args`, its stdout and stderr on a pseudo-terminal: what the
// terminal showed comes back as `out`.
RunResult run_cli_on_terminal(const std::string& args) {
  return run_shell("script -qefc " + sh_quote(cli_command() + " " + args) + " /dev/null");
}

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("on a terminal train and pretrain draw a live line, elsewhere the plain lines, and plot draws both runs",
          "[cli][plot]") {
  REQUIRE(cli_built());
  REQUIRE(run_shell("command -v script").exit_code == 0);  // util-linux, for a pseudo-terminal
  ScratchDir d("plot-cli");
  std::ofstream(d / "corpus.txt") << kMiniCorpus << "\n" << kMiniCorpus;
  std::ofstream(d / "reviews.tsv") << kMiniLabelled << kMiniLabelled;
  const RunResult create = run_cli("create-model --vocab " + q(golden_dir() / "tokenizer" / "mini-uncased-vocab.txt") +
                                   " --out " + q(d / "init") +
                                   " --layers 2 --hidden 32 --heads 2 --intermediate 64 --max-positions 32");
  INFO(create.err);
  REQUIRE(create.exit_code == 0);

  const std::string erase = "\r\033[K";
  const RunResult pre = run_cli_on_terminal(
      "pretrain --model " + q(d / "init") + " --corpus " + q(d / "corpus.txt") + " --out " + q(d / "mlm") +
      " --max-length 16 --batch-size 4 --lr 2e-3 --max-steps 8 --eval-split 0.2 --eval-every 4 --log-every 2"
      " --threads 1");
  INFO(pre.out);
  REQUIRE(pre.exit_code == 0);
  // The pseudo-terminal does not say its width: 80 columns, a bar of 10 cells.
  CHECK(occurrences(pre.out, erase + "[##--------] 2/8  ") == 1);
  CHECK(occurrences(pre.out, erase + "[##########] 8/8  ") == 1);
  CHECK(occurrences(pre.out, erase + "[") == 4);
  CHECK_THAT(pre.out, Catch::Contains(" tok/s  rss ") && Catch::Contains("eval at step 4:") &&
                          Catch::Contains("done: 8 steps"));
  CHECK_THAT(pre.out, !Catch::Contains("step 2/8") && !Catch::Contains("grad-norm"));

  const std::string train_args = "train --model " + q(d / "mlm") + " --train " + q(d / "reviews.tsv") +
                                 " --eval-split 0.25 --seed 1 --quant q4 --method lora --epochs 2 --batch-size 4"
                                 " --max-length 16 --log-every 1 --threads 1 --memory-budget " +
                                 process_budget("64M") + " --out ";
  // The budget as the line shows it: process_budget gives "64M", or "256M" in a sanitizer build.
  const std::string budget = process_budget("64M");
  const std::string shown_budget = "/" + budget.substr(0, budget.size() - 1) + ".0 MiB";
  const RunResult live = run_cli_on_terminal(train_args + q(d / "lora"));
  INFO(live.out);
  REQUIRE(live.exit_code == 0);
  CHECK(occurrences(live.out, erase + "[") == 6);  // 3 steps an epoch, 2 epochs
  CHECK_THAT(live.out, Catch::Contains("[##########] 6/6  ") && Catch::Contains(" left  loss ") &&
                           Catch::Contains(" ex/s  rss ") && Catch::Contains(shown_budget) &&
                           Catch::Contains("eval after epoch 1"));
  CHECK_THAT(live.out, !Catch::Contains("step 1/6"));
  // The evaluation report scrolls above the live line, which is drawn again below it.
  // (The terminal turns each \n into \r\n.)
  CHECK(std::regex_search(live.out, std::regex(R"(eval after epoch 1[^\[]*confusion[^\[]*\n\[#####-----\] 3/6  )")));

  const RunResult plain = run_cli(train_args + q(d / "lora-plain"));
  INFO(plain.err);
  REQUIRE(plain.exit_code == 0);
  CHECK_THAT(plain.err, Catch::Contains("step 1/6  epoch ") && Catch::Contains("step 6/6  epoch "));
  CHECK_THAT(plain.err, !Catch::Contains("\033[K") && !Catch::Contains("] 6/6"));
  CHECK(slurp(d / "lora" / "metrics.jsonl").size() > 0);

  const RunResult svg = run_cli("plot " + q(d / "mlm") + " " + q(d / "lora") + " --out " + q(d / "curves.svg"));
  INFO(svg.err);
  REQUIRE(svg.exit_code == 0);
  const std::string picture = slurp(d / "curves.svg");
  CHECK_THAT(picture, Catch::Contains(">mlm</text>") && Catch::Contains(">lora</text>"));
  CHECK(occurrences(picture, "data-panel=\"mlm_loss\" data-run=\"0\"") == 1);
  CHECK(occurrences(picture, "data-panel=\"eval\" data-run=\"1\"") == 2);
  CHECK(occurrences(picture, "data-panel=\"loss\" data-run=\"0\" data-series=\"raw\"") == 1);
  const RunResult png = run_cli("plot " + q(d / "lora") + " --out " + q(d / "curves.png"));
  INFO(png.err);
  REQUIRE(png.exit_code == 0);
  CHECK(slurp(d / "curves.png").substr(1, 3) == "PNG");
}

TEST_CASE("plot errors are one line: a bad metrics line, a missing run, no rsvg-convert for a .png",
          "[cli][plot]") {
  REQUIRE(cli_built());
  ScratchDir d("plot-cli-errors");
  fs::create_directories(d / "run");
  std::ofstream(d / "run" / "metrics.jsonl") << R"({"type":"train","step":1,"loss":0.7,"lr":0.001})" "\n"
                                             << R"({"type":"train","step":2,"loss":)" "\n";
  const RunResult bad = run_cli("plot " + q(d / "run") + " --out " + q(d / "x.svg"));
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.rfind("edgetune: error: " + (d / "run" / "metrics.jsonl").string() +
                          ":2: expected one JSON object per line", 0) == 0);
  CHECK(occurrences(bad.err, "\n") == 1);
  CHECK_FALSE(fs::exists(d / "x.svg"));

  const RunResult missing = run_cli("plot " + q(d / "none") + " --out " + q(d / "x.svg"));
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Catch::StartsWith("edgetune: error: " + (d / "none" / "metrics.jsonl").string()));
  CHECK(occurrences(missing.err, "\n") == 1);

  std::ofstream(d / "run" / "metrics.jsonl") << R"({"type":"train","step":1,"loss":0.7,"lr":0.001})" "\n";
  const RunResult no_rsvg =
      run_shell("PATH=" + q(d / "empty") + " " + cli_command() + " plot " + q(d / "run") + " --out " + q(d / "x.png"));
  CHECK(no_rsvg.exit_code == 1);
  CHECK_THAT(no_rsvg.err, Catch::Contains("rsvg-convert is not on PATH") && Catch::Contains("librsvg2-bin"));
  CHECK(occurrences(no_rsvg.err, "\n") == 1);
  CHECK_FALSE(fs::exists(d / "x.png"));

  CHECK(run_cli("plot " + q(d / "run")).exit_code == 2);  // --out is required
}
