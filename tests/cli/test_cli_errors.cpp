// Bad input reaches the user as one line on stderr, `edgetune: error: ...` naming the file (and the
// line where there is one) and what was expected, with exit code 1; usage errors exit 2. Nothing is
// written when a command fails.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "cli_run.h"

using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

fs::path tiny() { return golden_dir() / "bert" / "tiny"; }

// A copy of the tiny model folder to damage.
fs::path copy_model(const ScratchDir& d) {
  const fs::path m = d / "model";
  fs::copy(tiny(), m, fs::copy_options::recursive);
  return m;
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// Replaces the first `from` in the file by `to`.
void edit(const fs::path& p, const std::string& from, const std::string& to) {
  std::string text = slurp(p);
  const size_t at = text.find(from);
  REQUIRE(at != std::string::npos);
  write(p, text.substr(0, at) + to + text.substr(at + from.size()));
}

// Exactly one line on stderr, an error, mentioning `needle`.
void require_one_line_error(const RunResult& r, const std::string& needle, int code = 1) {
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == code);
  REQUIRE(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  REQUIRE(r.err.rfind("edgetune: ", 0) == 0);
  REQUIRE(r.err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("bad JSON in config.json is one line naming the file and line", "[cli][errors]") {
  if (!cli_built()) return;
  ScratchDir d("badjson");
  const fs::path m = copy_model(d);
  write(m / "config.json", "{\n  \"hidden_size\": 64,\n  \"vocab_size\": oops\n}\n");
  require_one_line_error(run_cli("predict --model " + q(m) + " --data - --text-column 0 --header absent", "hello\n"),
                         "config.json:3: invalid JSON");
}

TEST_CASE("a config field of the wrong type names the field", "[cli][errors]") {
  if (!cli_built()) return;
  ScratchDir d("badfield");
  const fs::path m = copy_model(d);
  edit(m / "config.json", "\"num_attention_heads\": 4", "\"num_attention_heads\": \"four\"");
  require_one_line_error(run_cli("inspect --model " + q(m)), "num_attention_heads");
}

TEST_CASE("a truncated model.safetensors is one line naming the file", "[cli][errors]") {
  if (!cli_built()) return;
  ScratchDir d("truncated");
  const fs::path m = copy_model(d);
  fs::resize_file(m / "model.safetensors", fs::file_size(m / "model.safetensors") / 2);
  require_one_line_error(run_cli("inspect --model " + q(m)), "model.safetensors");
}

TEST_CASE("a tensor of the wrong shape names the tensor and the expected shape",
          "[cli][errors]") {
  if (!cli_built()) return;
  ScratchDir d("shape");
  const fs::path m = copy_model(d);
  edit(m / "config.json", "\"intermediate_size\": 128", "\"intermediate_size\": 100");
  require_one_line_error(run_cli("inspect --model " + q(m)), "expected (100, 64)");
}

TEST_CASE("a missing model folder says what a model folder holds", "[cli][errors]") {
  if (!cli_built()) return;
  require_one_line_error(run_cli("inspect --model /nonexistent/model"), "config.json");
}

TEST_CASE("a bad TSV row names the file and line", "[cli][errors]") {
  if (!cli_built()) return;
  ScratchDir d("badrow");
  write(d / "train.tsv", "sentence\tlabel\ngood film\t1\nno label here\n");
  const RunResult r = run_cli("train --model " + q(tiny()) + " --train " + q(d / "train.tsv") +
                              " --out " + q(d / "run") + " --max-steps 1");
  require_one_line_error(r, "train.tsv:3:");
  REQUIRE_FALSE(fs::exists(d / "run" / "adapter_model.safetensors"));
}

TEST_CASE("skipping bad rows counts and reports them instead", "[cli][errors]") {
  if (!cli_built()) return;
  ScratchDir d("skiprow");
  write(d / "data.tsv", "sentence\tlabel\ngood film\t1\nno label here\nbad film\t0\n");
  const RunResult r = run_cli("eval --model " + q(tiny()) + " --data " + q(d / "data.tsv") +
                              " --skip-bad-rows --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.err.find("skipped 1 bad rows") != std::string::npos);
  REQUIRE(r.out.find("\"rows\":2") != std::string::npos);
}

TEST_CASE("invalid UTF-8 in a JSONL file is one line naming the file and line",
          "[cli][errors]") {
  if (!cli_built()) return;
  ScratchDir d("utf8");
  write(d / "data.jsonl", "{\"text\": \"fine\", \"label\": 1}\n{\"text\": \"bad \xff\xfe byte\", \"label\": 0}\n");
  require_one_line_error(run_cli("eval --model " + q(tiny()) + " --data " + q(d / "data.jsonl")),
                         "data.jsonl:2:");
}

TEST_CASE("invalid UTF-8 in a TSV row is replaced, counted and the row still classified",
          "[cli][errors]") {
  if (!cli_built()) return;
  ScratchDir d("utf8tsv");
  write(d / "data.tsv", "sentence\nbad \xff byte here\nfine\n");
  const RunResult r = run_cli("predict --model " + q(tiny()) + " --data " + q(d / "data.tsv"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(std::count(r.out.begin(), r.out.end(), '\n') == 2);
  REQUIRE(r.err.find("invalid UTF-8") != std::string::npos);
}

TEST_CASE("usage errors exit 2", "[cli][errors]") {
  if (!cli_built()) return;
  REQUIRE(run_cli("train --method nonsense").exit_code == 2);
  REQUIRE(run_cli("predict --model x").exit_code == 2);  // --data is required
  REQUIRE(run_cli("no-such-command").exit_code == 2);
  REQUIRE(run_cli("train --memory-budget lots --model x --train y --out z").exit_code == 2);
}
