// The embedding APIs: the C++ Classifier / fine_tune and the C ABI, including how errors cross it.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "edgetune/c_api.h"
#include "edgetune/engine/api.h"
#include "edgetune/engine/model_file.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {
fs::path tiny() { return test::golden_dir() / "bert" / "tiny"; }

fs::path scratch(const char* tag) {
  const fs::path p = fs::temp_directory_path() / (std::string("edgetune-api-") + tag);
  fs::remove_all(p);
  return p;
}
}  // namespace

TEST_CASE("api: fine_tune on examples in memory, then classify with the run folder", "[api]") {
  const fs::path run = scratch("finetune");
  TrainConfig cfg;
  cfg.model_dir = tiny();
  cfg.out = run;
  cfg.epochs = 2;
  cfg.batch_size = 2;
  cfg.threads = 1;
  const std::vector<LabelledText> ex = {{"good", "pos"}, {"bad", "neg"}, {"great", "pos"}, {"awful", "neg"}};
  const TrainResult r = fine_tune(cfg, ex);
  REQUIRE(r.steps == 4);
  REQUIRE(fs::exists(run / "adapter_model.safetensors"));
  const Classifier c = Classifier::open(tiny(), run);
  REQUIRE(c.labels() == std::vector<std::string>{"neg", "pos"});
  const auto p = c.predict_proba({"good", "bad", "a longer sentence about nothing"});
  REQUIRE(p.shape()[0] == 3);
  REQUIRE(p.shape()[1] == 2);
  for (std::size_t i = 0; i < 3; ++i) REQUIRE(p(i, 0) + p(i, 1) == Approx(1.0f));
  const auto labels = c.predict({"good"});
  REQUIRE((labels[0] == "neg" || labels[0] == "pos"));
  fs::remove_all(run);
}

TEST_CASE("api: the C ABI opens, predicts, and reports errors as codes and one-line messages",
          "[api][c]") {
  char err[256] = "";
  edgetune_classifier* c = nullptr;
  REQUIRE(edgetune_open("/no/such/model", nullptr, "q8", &c, err, sizeof err) == EDGETUNE_ERROR);
  REQUIRE(std::string(err).find("/no/such/model") != std::string::npos);
  REQUIRE(c == nullptr);
  REQUIRE(edgetune_open(tiny().c_str(), nullptr, "q5", &c, err, sizeof err) == EDGETUNE_ERROR);
  REQUIRE(std::string(err).find("q5") != std::string::npos);
  REQUIRE(edgetune_open(tiny().c_str(), nullptr, "q4", &c, err, sizeof err) == EDGETUNE_OK);
  REQUIRE(edgetune_num_labels(c) == 2);
  REQUIRE(std::string(edgetune_label(c, 1)) == "LABEL_1");
  REQUIRE(edgetune_label(c, 2) == nullptr);
  const char* texts[] = {"hello there", "another text"};
  float probs[4];
  REQUIRE(edgetune_predict(c, texts, 2, probs, err, sizeof err) == EDGETUNE_OK);
  REQUIRE(probs[0] + probs[1] == Approx(1.0f));
  REQUIRE(probs[2] + probs[3] == Approx(1.0f));
  edgetune_close(c);
  // A message longer than the buffer is cut, never overrun.
  char small[8];
  REQUIRE(edgetune_open("/no/such/model", nullptr, "q8", &c, small, sizeof small) == EDGETUNE_ERROR);
  REQUIRE(std::strlen(small) == 7);
}

TEST_CASE("api: edgetune_train takes run.json settings and rejects unknown ones", "[api][c]") {
  char err[512] = "";
  REQUIRE(edgetune_train("{\"model\": \"x\", \"epochz\": 3}", err, sizeof err) == EDGETUNE_ERROR);
  REQUIRE(std::string(err).find("epochz") != std::string::npos);
  REQUIRE(edgetune_train("{\"epochs\": 1}", err, sizeof err) == EDGETUNE_ERROR);
  REQUIRE(std::string(err).find("required") != std::string::npos);
  const fs::path run = scratch("ctrain");
  fs::create_directories(run);
  const fs::path data = run.parent_path() / "edgetune-api-ctrain.tsv";
  std::ofstream(data) << "sentence\tlabel\ngood\t1\nbad\t0\ngreat\t1\nawful\t0\n";
  const nlohmann::json opts = {{"model", tiny().string()}, {"train", data.string()}, {"out", run.string()},
                               {"epochs", 1}, {"batch_size", 2}, {"threads", 1}, {"memory_budget", 1}};
  // A 1-byte budget cannot fit: the planner's error comes back as EDGETUNE_OUT_OF_BUDGET.
  REQUIRE(edgetune_train(opts.dump().c_str(), err, sizeof err) == EDGETUNE_OUT_OF_BUDGET);
  REQUIRE(std::string(err).find("memory budget") != std::string::npos);
  nlohmann::json ok = opts;
  ok["memory_budget"] = 0;
  REQUIRE(edgetune_train(ok.dump().c_str(), err, sizeof err) == EDGETUNE_OK);
  REQUIRE(fs::exists(run / "adapter_model.safetensors"));
  fs::remove_all(run);
  fs::remove(data);
}

TEST_CASE("api: a model file with quantized embeddings through the C++ API and the C ABI's settings",
          "[api][c]") {
  const fs::path dir = scratch("quant-embeddings");
  fs::create_directories(dir);
  CompressOptions o;
  o.quant = DType::Q4;
  o.quant_embeddings = true;
  const fs::path file = dir / "tiny-q4-emb.safetensors";
  compress_model(tiny(), file, o);
  ClassifierOptions folder_options;
  folder_options.base = DType::Q4;
  folder_options.quant_embeddings = true;
  ClassifierOptions file_options;
  file_options.base = DType::Q4;  // quant_embeddings left out: the file's are used
  const std::vector<std::string> texts = {"hello there", "another text"};
  const auto from_folder = Classifier::open(tiny(), {}, folder_options).logits(texts);
  const auto from_file = Classifier::open(file, {}, file_options).logits(texts);
  CHECK(from_file == from_folder);

  char err[512] = "";
  const fs::path data = dir / "train.tsv";
  std::ofstream(data) << "sentence\tlabel\ngood\t1\nbad\t0\ngreat\t1\nawful\t0\n";
  const nlohmann::json opts = {{"model", file.string()}, {"train", data.string()}, {"out", (dir / "run").string()},
                               {"quant", "q4"}, {"epochs", 1}, {"batch_size", 2}, {"threads", 1}};
  nlohmann::json full = opts;
  full["method"] = "full";
  REQUIRE(edgetune_train(full.dump().c_str(), err, sizeof err) == EDGETUNE_ERROR);
  CHECK(std::string(err).find("full fine-tuning trains them") != std::string::npos);
  REQUIRE(edgetune_train(opts.dump().c_str(), err, sizeof err) == EDGETUNE_OK);

  const fs::path plain = dir / "tiny-q4.safetensors";
  o.quant_embeddings = false;
  compress_model(tiny(), plain, o);
  nlohmann::json asked = opts;
  asked["model"] = plain.string();
  asked["quant_embeddings"] = true;
  asked["out"] = (dir / "run2").string();
  REQUIRE(edgetune_train(asked.dump().c_str(), err, sizeof err) == EDGETUNE_ERROR);
  CHECK(std::string(err).find("keeps its embeddings float32") != std::string::npos);
  fs::remove_all(dir);
}
