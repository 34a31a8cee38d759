// The command line on a real model folder: predict reproduces the PyTorch golden logits, inspect
// prints the model's figures, merge folds a LoRA so predict gives the same logits without it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_run.h"
#include "edgetune/autograd/safetensors.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

TEST_CASE("predict reproduces the PyTorch golden logits of the tiny and small models",
          "[cli][golden]") {
  if (!cli_built()) return;
  for (const char* name : {"tiny", "small"}) {
    const fs::path dir = golden_dir() / "bert" / name;
    // sentences.json: the golden batch's rows (text, and text_pair for the pair row). Rows with
    // and without a pair go through predict separately (a pair column applies to a whole file).
    const auto sentences = nlohmann::json::parse(slurp(dir / "sentences.json"));
    ScratchDir d(std::string("predict-") + name);
    std::vector<std::vector<double>> got(sentences.size());
    for (bool pairs : {false, true}) {
      std::string jsonl;
      std::vector<size_t> rows;
      for (size_t i = 0; i < sentences.size(); ++i) {
        const auto& s = sentences[i];
        const bool is_pair = s.contains("text_pair") && !s.at("text_pair").is_null();
        if (is_pair != pairs) continue;
        nlohmann::json row = {{"text", s.at("text")}};
        if (pairs) row["text_pair"] = s.at("text_pair");
        jsonl += row.dump() + "\n";
        rows.push_back(i);
      }
      if (rows.empty()) continue;
      std::ofstream(d / "rows.jsonl") << jsonl;
      const RunResult r = run_cli("predict --quant f32 --model " + q(dir) + " --data " + q(d / "rows.jsonl") +
                                  (pairs ? " --text-pair-column text_pair" : ""));
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      std::istringstream lines(r.out);
      std::string line;
      for (size_t k = 0; k < rows.size(); ++k) {
        REQUIRE(std::getline(lines, line));
        got[rows[k]] = nlohmann::json::parse(line).at("logits").get<std::vector<double>>();
      }
    }
    safetensors::Reader g(dir / "golden.safetensors");
    const auto want = g.load("logits").to_vector();
    size_t i = 0;
    for (const auto& row : got) {
      for (double v : row) {
        REQUIRE(i < want.size());
        REQUIRE(v == Approx(want[i]).epsilon(1e-4).margin(1e-6));
        ++i;
      }
    }
    REQUIRE(i == want.size());
  }
}

TEST_CASE("predict over a q8 base computes in int8 by default and in f32 with --compute f32",
          "[cli][qgemm]") {
  if (!cli_built()) return;
  const fs::path dir = golden_dir() / "bert" / "tiny";
  ScratchDir d("predict-compute");
  std::ofstream(d / "rows.tsv") << "a lovely day at the beach\nthe service was slow and rude\nfine\n";
  auto logits = [&](const std::string& flags) {
    const RunResult r = run_cli("predict --quant q8 --model " + q(dir) + " --data " + q(d / "rows.tsv") +
                                " --text-column 0 --header absent " + flags);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::vector<double> out;
    std::istringstream lines(r.out);
    std::string line;
    while (std::getline(lines, line)) {
      for (double v : nlohmann::json::parse(line).at("logits").get<std::vector<double>>()) out.push_back(v);
    }
    REQUIRE(out.size() == 6);
    return out;
  };
  const std::vector<double> by_default = logits(""), int8 = logits("--compute int8"), f32 = logits("--compute f32");
  CHECK(by_default == int8);
  CHECK(int8 != f32);  // the integer kernels ran
  // Sanity bound only: the error budgets of the integer path are the op-level ones of
  // test_qgemm.cpp. Through a whole model the activation rounding (step max|a| / 127 per block
  // of 32) stays a few percent of the logits' scale.
  double scale = 0;
  for (double v : f32) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < f32.size(); ++i) CHECK(std::fabs(int8[i] - f32[i]) <= 0.05 * scale);

  const RunResult bad = run_cli("predict --quant q8 --model " + q(dir) + " --data " + q(d / "rows.tsv") +
                                " --text-column 0 --header absent --compute f16");
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--compute") != std::string::npos);
}

TEST_CASE("inspect prints config, parameter count, bytes per storage and tokenizer settings",
          "[cli]") {
  if (!cli_built()) return;
  const fs::path dir = golden_dir() / "bert" / "small";
  const RunResult r = run_cli("inspect --json --quant q4 --model " + q(dir) + " --batch-size 8 --max-length 32");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j.at("config").at("num_hidden_layers") == 4);
  REQUIRE(j.at("parameters") == 887555);
  REQUIRE(j.at("bytes_by_storage").contains("q4"));
  REQUIRE(j.at("bytes_by_storage").contains("f32"));
  REQUIRE(j.at("tokenizer").at("do_lower_case") == true);
  REQUIRE(j.at("training_estimate").at("bytes").at("total").get<std::size_t>() > 0);
  const RunResult text = run_cli("inspect --model " + q(dir));
  REQUIRE(text.exit_code == 0);
  REQUIRE(text.out.find("parameters 887555") != std::string::npos);
}
