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
  // inspect gives each layer's widths, as the config records them.
  REQUIRE(shown.out.find("pruned layers (heads, intermediate size): 0: ") != std::string::npos);
  const RunResult shown_json = run_cli("inspect --json --model " + q(file));
  REQUIRE(shown_json.exit_code == 0);
  const auto widths = nlohmann::json::parse(shown_json.out)["layer_widths"];
  REQUIRE(widths.size() == 4);
  std::size_t kept_heads = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    const auto layer = std::to_string(i);
    const std::size_t pruned = config["pruned_heads"].contains(layer) ? config["pruned_heads"][layer].size() : 0;
    CHECK(widths[i]["heads"] == 4 - pruned);
    CHECK(widths[i]["intermediate_size"] == 538);
    kept_heads += widths[i]["heads"].get<std::size_t>();
    CHECK(shown.out.find(layer + ": " + std::to_string(4 - pruned) + ", 538") != std::string::npos);
  }
  CHECK(kept_heads == 12);

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

TEST_CASE("compress --quant-embeddings: the file predicts as the folder with --quant-embeddings, inspect shows it",
          "[cli][compress]") {
  REQUIRE(cli_built());
  ScratchDir tmp("compress_emb");
  const fs::path tiny = golden_dir() / "bert" / "tiny";
  const fs::path data = tmp.path / "data.tsv";
  {
    std::ofstream f(data);
    f << "sentence\nthe battery lasts all day\nit broke after two weeks\n";
  }
  const fs::path file = tmp.path / "tiny-q4-emb.safetensors";
  const RunResult c = run_cli("compress --model " + q(tiny) + " --out " + q(file) + " --quant q4 --quant-embeddings");
  INFO(c.err);
  REQUIRE(c.exit_code == 0);
  const RunResult from_folder = run_cli("predict --model " + q(tiny) + " --quant q4 --quant-embeddings --data " + q(data));
  const RunResult from_file = run_cli("predict --model " + q(file) + " --data " + q(data));
  const RunResult given = run_cli("predict --model " + q(file) + " --quant-embeddings --data " + q(data));
  INFO(from_folder.err << from_file.err << given.err);
  REQUIRE(from_folder.exit_code == 0);
  REQUIRE(from_file.exit_code == 0);
  REQUIRE(given.exit_code == 0);
  CHECK(from_file.out == from_folder.out);
  CHECK(given.out == from_folder.out);

  const RunResult shown = run_cli("inspect --model " + q(file));
  REQUIRE(shown.exit_code == 0);
  CHECK(shown.out.find("model file: q4 base, embeddings q4 (positions q8)") != std::string::npos);
  CHECK(shown.out.find("--quant q4 --quant-embeddings") != std::string::npos);
  CHECK(shown.out.find("pruned layers") == std::string::npos);  // only when a layer is pruned
  const RunResult json = run_cli("inspect --json --model " + q(file));
  REQUIRE(json.exit_code == 0);
  const auto j = nlohmann::json::parse(json.out);
  CHECK(j["model_file"]["quant_embeddings"] == true);
  CHECK(j["layer_widths"] == nlohmann::json::parse(R"([{"heads":4,"intermediate_size":128},{"heads":4,"intermediate_size":128}])"));
  CHECK(j["model_file"]["provenance"]["options"]["quant_embeddings"] == true);
  CHECK(j["bytes_by_storage"].count("f32") == 1);  // LayerNorms, biases, token types
  CHECK(j["mapped_bytes"].get<std::size_t>() > j["bytes_by_storage"]["q4"].get<std::size_t>());

  const fs::path plain = tmp.path / "tiny-q4.safetensors";
  REQUIRE(run_cli("compress --model " + q(tiny) + " --out " + q(plain) + " --quant q4").exit_code == 0);
  const RunResult asked = run_cli("predict --model " + q(plain) + " --quant-embeddings --data " + q(data));
  CHECK(asked.exit_code == 1);
  CHECK(asked.err.find("keeps its embeddings float32") != std::string::npos);
  CHECK(std::count(asked.err.begin(), asked.err.end(), '\n') == 1);

  const fs::path x = tmp.path / "x.safetensors";
  const RunResult f32 = run_cli("compress --model " + q(tiny) + " --out " + q(x) + " --quant f32 --quant-embeddings");
  CHECK(f32.exit_code == 2);
  CHECK(std::count(f32.err.begin(), f32.err.end(), '\n') == 1);
  CHECK_FALSE(fs::exists(x));

  {
    std::ofstream f(tmp.path / "train.tsv");
    f << "sentence\tlabel\nthe battery lasts all day\t1\nit broke after two weeks\t0\n";
  }
  const RunResult full = run_cli("train --model " + q(file) + " --method full --epochs 1 --train " +
                                 q(tmp.path / "train.tsv") + " --out " + q(tmp.path / "run"));
  CHECK(full.exit_code == 1);
  // LoRA over the file: the plan gives the mapped base apart, the progress lines and metrics.jsonl
  // the resident set's private and file-backed parts.
  const RunResult lora = run_cli("train --model " + q(file) + " --epochs 1 --memory-budget 256M --train " +
                                 q(tmp.path / "train.tsv") + " --out " + q(tmp.path / "lora"));
  INFO(lora.err);
  REQUIRE(lora.exit_code == 0);
  CHECK(lora.err.find("; mapped from the model file ") != std::string::npos);
  CHECK(lora.err.find(" [private ") != std::string::npos);
  std::ifstream metrics(tmp.path / "lora" / "metrics.jsonl");
  std::string line;
  bool split = false;
  while (std::getline(metrics, line)) {
    const auto m = nlohmann::json::parse(line);
    if (m["type"] != "train") continue;
    CHECK(m["rss_private"].get<std::size_t>() > 0);
    CHECK(m["rss_file"].get<std::size_t>() > 0);
    split = true;
  }
  CHECK(split);

  // The plan is printed before the model loads; the error is the one line after it.
  const std::size_t error_line = full.err.find("edgetune: error: ");
  REQUIRE(error_line != std::string::npos);
  CHECK(full.err.find("full fine-tuning trains them", error_line) != std::string::npos);
  CHECK(full.err.find('\n', error_line) == full.err.size() - 1);
}
