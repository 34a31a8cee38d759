// --key-file on the command line: a run trained with a key leaves nothing of its plaintext in the
// run folder; eval, predict, merge and --resume need the same key; a missing key, a wrong one, a
// key file of the wrong size, an altered or truncated file each end in one error line naming the
// file.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "cli_run.h"
#include "edgetune/core/encryption.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

const char* const kSentences[] = {"the lighthouse keeper sang", "marmalade on burnt toast",
                                  "a quiet harbour at dawn", "thunder over the quarry"};

void write_data(const fs::path& p) {
  std::ofstream out(p);
  out << "sentence\tlabel\n";
  for (int i = 0; i < 24; ++i) {
    out << kSentences[i % 4] << " " << i << "\t" << (i % 2 ? "cheerful" : "gloomy") << "\n";
  }
}

void write_key(const fs::path& p, char fill, std::size_t n = 32) {
  std::ofstream(p, std::ios::binary) << std::string(n, fill);
}

// One error line on stderr, exit code 1, naming `file` and saying `what`.
void require_one_line_error(const RunResult& r, const fs::path& file, const std::string& what) {
  INFO(r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.starts_with("edgetune: error: "));
  CHECK(r.err.find('\n') == r.err.size() - 1);
  CHECK(r.err.find(file.string()) != std::string::npos);
  CHECK(r.err.find(what) != std::string::npos);
}

struct EncryptedRun {
  ScratchDir d{"encrypted-run"};
  fs::path run = d / "run", key = d / "run.key", data = d / "train.tsv";
  std::string model = q(golden_dir() / "bert" / "tiny");

  EncryptedRun() {
    REQUIRE(cli_built());
    write_data(data);
    write_key(key, 'k');
    const RunResult r =
        run_cli("train --model " + model + " --train " + q(data) + " --out " + q(run) +
                " --method lora --epochs 2 --batch-size 4 --save-every 2 --eval-split 0.25 --threads 1"
                " --key-file " + q(key));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  RunResult eval(const std::string& extra) const {
    return run_cli("eval --model " + model + " --adapter " + q(run) + " --data " + q(data) +
                   " --threads 1 --json" + extra);
  }
};

}  // namespace

TEST_CASE("a run trained with --key-file holds nothing of its plaintext", "[cli][encryption]") {
  EncryptedRun r;
  const std::vector<std::string> expected = {"adapter_config.json", "adapter_model.safetensors",
                                             "labels.json", "metrics.jsonl", "replay.json",
                                             "run.json", "train_state.safetensors"};
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(r.run)) found.push_back(e.path().filename().string());
  std::sort(found.begin(), found.end());
  REQUIRE(found == expected);
  // Training text, label names, JSON keys and values, tensor names, the data file's name.
  std::vector<std::string> secrets = {"cheerful", "gloomy", "id2label", "peft_type", "lora_A",
                                      "target_modules", "__metadata__", "\"loss\"", "accuracy",
                                      "train.tsv", "learning", "optim/", "param/"};
  for (const char* s : kSentences) {
    secrets.push_back(s);
    secrets.push_back(std::string(s).substr(0, 8));
  }
  for (const std::string& name : found) {
    INFO(name);
    const std::string bytes = slurp(r.run / name);
    CHECK(encryption::is_encrypted(bytes));
    for (const std::string& s : secrets) {
      INFO(s);
      CHECK(bytes.find(s) == std::string::npos);
    }
  }
}

TEST_CASE("update continues an encrypted run with its key, refuses it without, and writes nothing plain",
          "[cli][encryption][update]") {
  EncryptedRun r;
  const fs::path fresh = r.d / "fresh.tsv";
  {
    std::ofstream out(fresh);
    out << "sentence\tlabel\nsea shanty at the quay\tcheerful\nfog on the moor\tgloomy\n";
  }
  const std::string update = "update --run " + q(r.run) + " --train " + q(fresh) + " --threads 1";
  const RunResult without = run_cli(update);
  require_one_line_error(without, r.run, "--key-file");
  const RunResult with = run_cli(update + " --key-file " + q(r.key));
  INFO(with.err);
  REQUIRE(with.exit_code == 0);
  for (const auto& e : fs::directory_iterator(r.run)) {
    INFO(e.path().filename().string());
    const std::string bytes = slurp(e.path());
    CHECK(encryption::is_encrypted(bytes));
    CHECK(bytes.find("sea shanty") == std::string::npos);
  }
  const RunResult ev = r.eval(" --key-file " + q(r.key));
  INFO(ev.err);
  CHECK(ev.exit_code == 0);
}

TEST_CASE("eval, predict and merge read an encrypted run with its key", "[cli][encryption]") {
  EncryptedRun r;
  const std::string key = " --key-file " + q(r.key);
  const RunResult ev = r.eval(key);
  INFO(ev.err);
  REQUIRE(ev.exit_code == 0);
  CHECK(ev.out.find("\"accuracy\"") != std::string::npos);

  const RunResult pr = run_cli("predict --model " + r.model + " --adapter " + q(r.run) + " --data " +
                               q(r.data) + " --threads 1" + key);
  INFO(pr.err);
  REQUIRE(pr.exit_code == 0);
  // One line per row, each with one of the run's labels.
  CHECK(std::count(pr.out.begin(), pr.out.end(), '\n') == 24);
  CHECK((pr.out.find("\"label\":\"cheerful\"") != std::string::npos ||
         pr.out.find("\"label\":\"gloomy\"") != std::string::npos));

  const fs::path merged = r.d / "merged";
  const RunResult mg = run_cli("merge --model " + r.model + " --adapter " + q(r.run) + " --out " +
                               q(merged) + key);
  INFO(mg.err);
  REQUIRE(mg.exit_code == 0);
  // The merged model is written encrypted too, and reads back with the key.
  CHECK(encryption::is_encrypted(slurp(merged / "model.safetensors")));
  CHECK(encryption::is_encrypted(slurp(merged / "config.json")));
  const RunResult again = run_cli("eval --model " + q(merged) + " --data " + q(r.data) +
                                  " --threads 1 --json" + key);
  INFO(again.err);
  CHECK(again.exit_code == 0);
}

TEST_CASE("an encrypted run without its key, or with another, is one error line naming the file",
          "[cli][encryption]") {
  EncryptedRun r;
  require_one_line_error(r.eval(""), r.run / "adapter_config.json", "encrypted: give the key");
  require_one_line_error(r.eval(""), r.run / "adapter_config.json", "--key-file");

  const fs::path other = r.d / "other.key";
  write_key(other, 'o');
  require_one_line_error(r.eval(" --key-file " + q(other)), r.run / "adapter_config.json",
                         "encrypted with another key");

  const fs::path short_key = r.d / "short.key";
  write_key(short_key, 's', 16);
  require_one_line_error(r.eval(" --key-file " + q(short_key)), short_key,
                         "holds 16 bytes, expected exactly 32 raw bytes");

  const RunResult resume = run_cli("train --resume " + q(r.run) + " --threads 1");
  require_one_line_error(resume, r.run / "run.json", "encrypted");
  const RunResult merge = run_cli("merge --model " + r.model + " --adapter " + q(r.run) + " --out " +
                                  q(r.d / "merged"));
  require_one_line_error(merge, r.run / "adapter_config.json", "encrypted");
}

TEST_CASE("an altered or truncated encrypted adapter is one error line, never weights",
          "[cli][encryption]") {
  EncryptedRun r;
  const std::string key = " --key-file " + q(r.key);
  const fs::path weights = r.run / "adapter_model.safetensors";
  const std::string good = slurp(weights);
  const std::size_t chunk = encryption::kChunkBytes + encryption::kChunkOverhead;
  // A flipped bit in the header, the body and the last byte; then cuts at the end of the header,
  // inside the body and one byte short.
  for (std::size_t at : {std::size_t{3}, std::size_t{20}, good.size() / 2, good.size() - 1}) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 0x01);
    std::ofstream(weights, std::ios::binary) << bad;
    INFO("flipped byte " << at);
    require_one_line_error(r.eval(key), weights, "cannot ");
  }
  std::vector<std::size_t> cuts = {encryption::kHeaderBytes, good.size() / 2, good.size() - 1};
  if (good.size() > encryption::kHeaderBytes + chunk) cuts.push_back(encryption::kHeaderBytes + chunk);
  for (std::size_t n : cuts) {
    std::ofstream(weights, std::ios::binary) << good.substr(0, n);
    INFO("cut at " << n);
    require_one_line_error(r.eval(key), weights, "cannot decrypt");
  }
  // Replaced by a plain file: refused while a key is given, whatever it holds.
  std::ofstream(weights, std::ios::binary) << "plain";
  require_one_line_error(r.eval(key), weights, "not encrypted, but a key is set");
}
