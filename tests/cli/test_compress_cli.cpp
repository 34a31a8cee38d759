// `edgetune compress` as a process: the file it writes predicts as the folder does with --quant
// taken from the file, and a --quant that differs, bad --keep-layers / --drop-heads and an --out
// over the input are refused with one line; the shipped model (which has no classifier) pruned by
// importance on a calibration file, and the pruning options' refusals.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

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

TEST_CASE("compress prunes the shipped model's heads and neurons by importance", "[cli][compress]") {
  REQUIRE(cli_built());
  ScratchDir tmp("compress");
  const fs::path model = fs::path(EDGETUNE_TEST_DIR).parent_path() / "models" / "edgetune-mini-uncased";
  REQUIRE(fs::exists(model / "model.safetensors"));
  const fs::path calibration = tmp.path / "calibration.tsv";
  {
    std::ofstream f(calibration);
    f << "sentence\tlabel\n";
    const char* good[] = {"a moving and beautiful film", "the best acting of the year", "funny , warm and wise",
                          "a triumph of style", "i loved every minute", "smart and touching"};
    const char* bad[] = {"a dull , lifeless mess", "the worst script in years", "boring and far too long",
                         "nothing works here", "i hated every minute", "flat and lazy"};
    for (int i = 0; i < 6; ++i) f << good[i] << "\t1\n" << bad[i] << "\t0\n";
  }
  const fs::path file = tmp.path / "mini-pruned.safetensors";
  const std::string base = "compress --model " + q(model) + " --quant q4 --calibration " + q(calibration);
  const RunResult c = run_cli(base + " --out " + q(file) + " --prune-heads 0.25 --prune-ffn 0.3");
  INFO(c.err);
  REQUIRE(c.exit_code == 0);
  const RunResult shown = run_cli("inspect --model " + q(file));
  INFO(shown.err);
  REQUIRE(shown.exit_code == 0);
  // The provenance: 4 of 16 heads, 230 of each layer's 768 neurons, scored under a fitted head.
  std::ifstream in(file, std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, ' ');
  in.read(header.data(), static_cast<std::streamsize>(n));
  const auto meta = nlohmann::json::parse(header)["__metadata__"];
  const auto provenance = nlohmann::json::parse(meta["edgetune.provenance"].get<std::string>());
  const auto config = nlohmann::json::parse(meta["edgetune.config"].get<std::string>());
  CHECK(provenance["importance"]["loss"].get<std::string>().find("fitted on the calibration rows") != std::string::npos);
  std::size_t heads = 0;
  for (const auto& [layer, list] : config["pruned_heads"].items()) heads += list.size();
  CHECK(heads == 4);
  CHECK(config["edgetune_intermediate_sizes"] == nlohmann::json{538, 538, 538, 538});

  const fs::path x = tmp.path / "x.safetensors";
  for (const char* refused : {"--prune-heads 1", "--prune-ffn -0.1", "--prune-heads 0.25 --drop-heads 0:1"}) {
    INFO(refused);
    const RunResult r = run_cli(base + " --out " + q(x) + " " + refused);
    CHECK(r.exit_code == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(fs::exists(x));
  }
  const RunResult missing = run_cli("compress --model " + q(model) + " --out " + q(x) + " --prune-ffn 0.3");
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("give --calibration FILE") != std::string::npos);
  {
    std::ofstream f(tmp.path / "bad.tsv");
    f << "sentence\tlabel\na fine film\t1\nno label\n";
  }
  const RunResult bad_line = run_cli("compress --model " + q(model) + " --out " + q(x) + " --prune-ffn 0.3 --calibration " +
                                     q(tmp.path / "bad.tsv"));
  CHECK(bad_line.exit_code == 1);
  CHECK(bad_line.err.find("bad.tsv:3:") != std::string::npos);
  CHECK(std::count(bad_line.err.begin(), bad_line.err.end(), '\n') == 1);
  CHECK_FALSE(fs::exists(x));
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
