// `--memory-budget` bounds the whole process: the CLI, training the shipped model (q4 base and
// embeddings, LoRA) under a budget, prints the plan with its measured baseline, progress lines and
// a summary with VmHWM beside the budget, and that VmHWM is at most the budget.
#include <catch2/catch.hpp>

#include <fstream>

#include "cli_run.h"
#include "edgetune/core/memory.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

// The byte count written after `marker` in `text` ("30.1 MiB" -> bytes), from the first
// occurrence; 0 when the marker is missing.
std::size_t bytes_after(const std::string& text, const std::string& marker) {
  const std::size_t at = text.find(marker);
  if (at == std::string::npos) return 0;
  const std::size_t from = at + marker.size();
  const std::size_t space = text.find(' ', from);           // between number and unit
  const std::size_t end = text.find_first_of(" )\n", space + 1);  // after the unit
  return parse_bytes(text.substr(from, space - from) + text.substr(space + 1, end - space - 1));
}

}  // namespace

TEST_CASE("training the shipped model under --memory-budget keeps VmHWM within it", "[cli][memory]") {
  ScratchDir d("budget");
  {
    std::ofstream out(d / "train.tsv");
    out << "sentence\tlabel\n";
    const char* good[] = {"a good film", "really great acting", "i loved it", "wonderful story"};
    const char* bad[] = {"a bad film", "really poor acting", "i hated it", "boring story"};
    for (int i = 0; i < 200; ++i) {
      out << good[i % 4] << " number " << i << "\t1\n";
      out << bad[i % 4] << " number " << i << "\t0\n";
    }
  }
  const fs::path model = fs::path(EDGETUNE_TEST_DIR) / ".." / "models" / "edgetune-mini-uncased";
  REQUIRE(fs::exists(model / "model.safetensors"));
  const std::string budget = process_budget("32M");
  const std::string of_budget = " of " + format_bytes(parse_bytes(budget));
  const RunResult r = run_cli("train --model " + q(model) + " --train " + q(d / "train.tsv") + " --out " +
                              q(d / "run") + " --quant q4 --quant-embeddings --method lora" +
                              " --eval-split 0.1 --max-steps 4 --batch-size 16 --max-length 32 --threads 2" +
                              " --log-every 2 --memory-budget " + budget);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE_THAT(r.err, Catch::Contains("(accountant ") && Catch::Contains("baseline "));

  // Progress lines: "rss 20.1 MiB (VmHWM 25.3 MiB of 32.0 MiB)"; the summary: "process (VmHWM)
  // 28.4 MiB of 32.0 MiB".
  REQUIRE_THAT(r.err, Catch::Contains(of_budget + ")") && Catch::Contains("(VmHWM "));
  const std::size_t progress = bytes_after(r.err, "(VmHWM ");
  CHECK(progress > (std::size_t{1} << 20));
  CHECK(progress <= parse_bytes(budget));
  const std::size_t peak = bytes_after(r.err, "process (VmHWM) ");
  CHECK(peak >= progress);
  CHECK(peak <= parse_bytes(budget));
  REQUIRE_THAT(r.err, Catch::Contains("process (VmHWM) " + format_bytes(peak) + of_budget));
}
