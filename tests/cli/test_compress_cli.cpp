// `edgetune compress` as a process: the file it writes predicts as the folder does with --quant
// taken from the file, and a --quant that differs, bad --keep-layers / --drop-heads and an --out
// over the input are refused with one line.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <string>

#include "cli_run.h"

using namespace edgetune::test;
namespace fs = std::filesystem;

TEST_CASE("compress writes a model file that predicts as the folder does", "[cli][compress]") {
  REQUIRE(cli_built());
  ScratchDir tmp("compress");
  const fs::path tiny = golden_dir() / "bert" / "tiny";
  {
    std::ofstream f(tmp.path / "data.tsv");
    f << "sentence\nthe battery lasts all day\nit broke after two weeks\n";
  }
  const fs::path file = tmp.path / "tiny-q4.safetensors";
  const RunResult c = run_cli("compress --model " + q(tiny) + " --out " + q(file) + " --quant q4");
  INFO(c.err);
  REQUIRE(c.exit_code == 0);
  const RunResult from_folder = run_cli("predict --model " + q(tiny) + " --quant q4 --data " + q(tmp.path / "data.tsv"));
  const RunResult from_file = run_cli("predict --model " + q(file) + " --data " + q(tmp.path / "data.tsv"));
  INFO(from_folder.err << from_file.err);
  REQUIRE(from_folder.exit_code == 0);
  REQUIRE(from_file.exit_code == 0);
  CHECK(from_file.out == from_folder.out);

  const RunResult other = run_cli("predict --model " + q(file) + " --quant q8 --data " + q(tmp.path / "data.tsv"));
  CHECK(other.exit_code == 1);
  CHECK(other.err.find("stores q4 base weights, not q8") != std::string::npos);
  CHECK(std::count(other.err.begin(), other.err.end(), '\n') == 1);

  const RunResult over = run_cli("compress --model " + q(tiny) + " --out " + q(tiny / "model.safetensors"));
  CHECK(over.exit_code == 1);
  CHECK(over.err.find("would overwrite the model it compresses") != std::string::npos);
  for (const char* bad : {"--keep-layers 3", "--keep-layers 1,0", "--drop-heads 0:0,1,2,3", "--drop-heads 2:0"}) {
    INFO(bad);
    const RunResult r = run_cli("compress --model " + q(tiny) + " --out " + q(tmp.path / "x.safetensors") + " " + bad);
    CHECK(r.exit_code == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(fs::exists(tmp.path / "x.safetensors"));
  }
}

TEST_CASE("compress --quant nf4 and pal4: the file predicts as the folder quantized on load",
          "[cli][compress]") {
  REQUIRE(cli_built());
  ScratchDir tmp("compress_4bit");
  const fs::path tiny = golden_dir() / "bert" / "tiny";
  {
    std::ofstream f(tmp.path / "data.tsv");
    f << "sentence\nthe battery lasts all day\nit broke after two weeks\n";
  }
  for (const std::string quant : {"nf4", "pal4"}) {
    INFO(quant);
    const fs::path file = tmp.path / ("tiny-" + quant + ".safetensors");
    const RunResult c = run_cli("compress --model " + q(tiny) + " --out " + q(file) + " --quant " + quant);
    INFO(c.err);
    REQUIRE(c.exit_code == 0);
    CHECK(c.err.find(quant + " base") != std::string::npos);
    const RunResult from_folder =
        run_cli("predict --model " + q(tiny) + " --quant " + quant + " --data " + q(tmp.path / "data.tsv"));
    const RunResult from_file = run_cli("predict --model " + q(file) + " --data " + q(tmp.path / "data.tsv"));
    INFO(from_folder.err << from_file.err);
    REQUIRE(from_folder.exit_code == 0);
    REQUIRE(from_file.exit_code == 0);
    CHECK(from_file.out == from_folder.out);
    CHECK_FALSE(from_file.out.empty());
  }
}
