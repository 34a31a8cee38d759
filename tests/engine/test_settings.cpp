// The typed settings tables (engine/settings.h) as the trainer, the pretrainer and the C ABI use
// them: a run.json without a newer field reads with the default; unknown keys, unknown enum values
// and wrong JSON types are one-line errors naming the key; to_json -> from_json is the identity;
// ranges, a --max-length above the model's positions and a single-class training file are
// rejected before the run folder exists.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "edgetune/c_api.h"
#include "edgetune/core/file_io.h"
#include "edgetune/engine/pretrain.h"
#include "edgetune/engine/trainer.h"
#include "test_support.h"

using namespace edgetune;
using edgetune::test::error_of;
namespace fs = std::filesystem;

namespace {

fs::path tiny() { return test::golden_dir() / "bert" / "tiny"; }

// Four labelled rows of two classes in `dir`/train.tsv.
fs::path two_class_file(const fs::path& dir) {
  const fs::path p = dir / "train.tsv";
  std::ofstream(p) << "sentence\tlabel\ngood film\tpos\nbad film\tneg\ngreat acting\tpos\nawful plot\tneg\n";
  return p;
}

// A short fine-tuning run of the tiny model on `train` into `out`: 2 epochs of 2 steps.
TrainConfig tiny_run(const fs::path& train, const fs::path& out) {
  TrainConfig c;
  c.model_dir = tiny();
  c.train_file = train;
  c.out = out;
  c.epochs = 2;
  c.batch_size = 2;
  c.threads = 1;
  c.log_every = 1000;
  return c;
}


// One line naming `key` (as a whole word between quotes or at the start) and holding every one of
// `also`.
void require_one_line_naming(const std::string& message, const std::string& key,
                             std::initializer_list<const char*> also = {}) {
  INFO(message);
  REQUIRE(message.find('\n') == std::string::npos);
  REQUIRE((message.find("'" + key + "'") != std::string::npos || message.starts_with(key + " ")));
  for (const char* s : also) REQUIRE(message.find(s) != std::string::npos);
}

// A TrainConfig whose fields differ from their defaults, with the enums at value `i` of their
// tables (modulo the table's size), so a few of them cover every value of every enum.
TrainConfig non_default_train(std::size_t i) {
  TrainConfig c;
  c.model_dir = "/models/bert";
  c.train_file = "train.tsv";
  c.eval_file = "eval.tsv";
  c.eval_split = 0.2;
  c.out = "/runs/a";
  c.init_adapter = "/runs/previous";
  c.data.text_column = data::ColumnRef("review");
  c.data.text_pair_column = data::ColumnRef(2);
  c.data.label_column = data::ColumnRef("stars");
  c.data.header = kHeaderNames[i % std::size(kHeaderNames)].value;
  c.data.skip_bad_rows = true;
  c.data.max_length = 96;
  c.method.method = kMethodNames[i % std::size(kMethodNames)].value;
  c.method.lora.rank = 4;
  c.method.lora.alpha = 8;
  c.method.lora.dropout = 0.05;
  c.method.lora_targets = {"query", "key", "intermediate"};
  c.method.lora.freeze_a = true;
  c.method.adapter_size = 32;
  c.method.adapter_act = kBottleneckActNames[i % std::size(kBottleneckActNames)].value;
  c.quant = kQuantNames[i % std::size(kQuantNames)].value;
  c.quant_embeddings = true;
  c.compute = kComputeNames[i % std::size(kComputeNames)].value;
  c.budget_scope = kBudgetScopeNames[i % std::size(kBudgetScopeNames)].value;
  c.epochs = 5;
  c.batch_size = 8;
  c.lr = 2e-4;
  c.weight_decay = 0.1;
  c.optimizer = kOptimizerNames[i % std::size(kOptimizerNames)].value;
  c.momentum = 0.5;
  c.dampening = 0.25;
  c.nesterov = true;
  c.adam_beta1 = 0.8;
  c.adam_beta2 = 0.98;
  c.adam_eps = 1e-6;
  c.schedule = kScheduleNames[i % std::size(kScheduleNames)].value;
  c.warmup_ratio = 0.1;
  c.max_grad_norm = 0.5;
  c.grad_accum = 2;
  c.seed = 7;
  c.shuffle = false;
  c.dropout = 0.0;
  c.threads = 3;
  c.early_stopping = 2;
  c.save_every = 10;
  c.max_steps = 100;
  c.log_every = 5;
  c.eval_batch_size = 32;
  (i % 2 == 0 ? c.dp.noise_multiplier : c.dp.target_epsilon) = 1.5;
  c.dp.max_grad_norm = 0.25;
  c.dp.delta = 1e-6;
  c.replay_examples = 500;
  c.replay_bytes = 256u << 10;
  c.memory_budget = 128u << 20;
  c.micro_batch = 4;
  c.checkpoint_layers = i % 2 == 0;
  return c;
}

PretrainConfig non_default_pretrain() {
  PretrainConfig c;
  c.model_dir = "/models/init";
  c.corpus = {"/corpus/a.txt", "/corpus/b.txt"};
  c.task_data = {"/data/train.tsv"};
  c.out = "/runs/pre";
  c.max_length = 64;
  c.batch_size = 8;
  c.lr = 1e-3;
  c.weight_decay = 0.0;
  c.adam_beta1 = 0.85;
  c.adam_beta2 = 0.98;
  c.adam_eps = 1e-6;
  c.warmup_ratio = 0.1;
  c.max_grad_norm = 2.0;
  c.epochs = 3;
  c.max_steps = 50;
  c.seed = 3;
  c.dropout = 0.05;
  c.threads = 2;
  c.eval_split = 0.1;
  c.eval_every = 20;
  c.save_every = 10;
  c.log_every = 2;
  c.eval_batch_size = 16;
  c.save_f16 = true;
  c.masking.probability = 0.2;
  c.masking.mask_fraction = 0.7;
  c.masking.random_fraction = 0.2;
  c.masking.whole_words = true;
  c.objective = PretrainObjective::Electra;
  c.generator_layers = 2;
  c.rtd_weight = 20;
  c.memory_budget = 64u << 20;
  c.budget_scope = BudgetScope::Session;
  c.micro_batch = 2;
  c.checkpoint_layers = false;
  return c;
}

// Every key holds a value other than the default's in at least one of `written`: round trips of
// them cover every field.
void require_every_field_set(const std::vector<nlohmann::json>& written, const nlohmann::json& defaults) {
  for (const nlohmann::json& j : written) REQUIRE(j.size() == defaults.size());
  for (const auto& [key, value] : defaults.items()) {
    INFO(key);
    CHECK(std::any_of(written.begin(), written.end(),
                      [&, k = key](const nlohmann::json& j) { return j.contains(k) && j.at(k) != value; }));
  }
}

}  // namespace

TEST_CASE("settings: a run.json without a newer field reads with that field's default",
          "[settings]") {
  nlohmann::json j = non_default_train(1).to_json();
  j.erase("eval_batch_size");
  j.erase("checkpoint_layers");
  REQUIRE(j.at("compute") == "f32");
  j.erase("compute");
  const TrainConfig c = TrainConfig::from_json(j, "run.json");
  CHECK(c.eval_batch_size == TrainConfig{}.eval_batch_size);
  CHECK_FALSE(c.checkpoint_layers.has_value());
  CHECK(c.compute == Compute::Int8);  // quantized bases compute on the integer kernels
  // The keys that are there still apply.
  CHECK(c.epochs == 5);
  CHECK(c.method.method == Method::Adapter);

  nlohmann::json p = non_default_pretrain().to_json();
  p.erase("micro_batch");
  p.erase("random_fraction");
  const PretrainConfig pc = PretrainConfig::from_json(p, "run.json");
  CHECK(pc.micro_batch == 0);
  CHECK(pc.masking.random_fraction == PretrainConfig{}.masking.random_fraction);
  CHECK(pc.max_length == 64);
}

TEST_CASE("settings: a real run whose run.json lacks a newer field resumes to the same adapter",
          "[settings][resume]") {
  test::TempDir dir("settings-resume");
  const fs::path train = two_class_file(dir.path);
  TrainConfig c = tiny_run(train, dir.path / "straight");
  c.dropout = 0.1;  // the resumed run must also restore the dropout generator
  REQUIRE(Trainer(c, nullptr).run().steps == 4);

  c.out = dir.path / "cut";
  int asked = 0;
  const TrainResult first = Trainer(c, nullptr).run(RunHooks{[&] { return ++asked == 2; }, {}});
  REQUIRE(first.interrupted);
  // As an older version wrote it: without the settings added since.
  nlohmann::json j = nlohmann::json::parse(read_file(c.out / "run.json"));
  for (const char* newer : {"eval_batch_size", "micro_batch", "checkpoint_layers", "memory_budget"}) {
    REQUIRE(j.erase(newer) == 1);
  }
  write_file_atomic(c.out / "run.json", j.dump(2));
  const TrainResult second = Trainer::resume(c.out, nullptr).run();
  CHECK_FALSE(second.interrupted);
  CHECK(second.steps == 4);
  CHECK(read_file(c.out / "adapter_model.safetensors") ==
        read_file(dir.path / "straight" / "adapter_model.safetensors"));
}

TEST_CASE("settings: unknown keys and enum values are one-line errors naming the key",
          "[settings]") {
  const std::string q5 = error_of([] { TrainConfig::from_json({{"quant", "q5"}}, "run.json"); });
  require_one_line_naming(q5, "quant", {"run.json", "q5", "f32, q8, q4, nf4 or pal4"});
  struct Bad {
    const char* key;
    const char* value;
    const char* expected;
  };
  for (const Bad& b : {Bad{"method", "prefix", "lora, adapter, bitfit, head or full"},
                       Bad{"optimizer", "lamb", "adamw, adam or sgd"},
                       Bad{"schedule", "step", "linear, cosine or constant"},
                       Bad{"adapter_act", "tanh", "gelu or relu"},
                       Bad{"header", "maybe", "auto, present or absent"}}) {
    const std::string m = error_of([&] { TrainConfig::from_json({{b.key, b.value}}); });
    require_one_line_naming(m, b.key, {b.value, b.expected});
  }
  const std::string unknown = error_of([] { TrainConfig::from_json({{"epochs", 2}, {"epochz", 3}}); });
  require_one_line_naming(unknown, "epochz", {"unknown setting"});
  // A pretraining key is not a fine-tuning one, and the other way round.
  require_one_line_naming(error_of([] { TrainConfig::from_json({{"mlm_probability", 0.2}}); }),
                          "mlm_probability", {"unknown setting"});
  require_one_line_naming(error_of([] { PretrainConfig::from_json({{"quant", "q8"}}, "run.json"); }),
                          "quant", {"run.json", "unknown setting"});
  require_one_line_naming(error_of([] { PretrainConfig::from_json({{"corpuss", {"a.txt"}}}); }),
                          "corpuss", {"unknown setting"});
}

TEST_CASE("settings: wrong JSON types are one-line errors naming the key", "[settings]") {
  struct Wrong {
    nlohmann::json j;
    const char* key;
    const char* expected;
  };
  for (const Wrong& w : {Wrong{{{"epochs", "3"}}, "epochs", "an integer"},
                         Wrong{{{"lr", "1e-3"}}, "lr", "a number"},
                         Wrong{{{"shuffle", 1}}, "shuffle", "true or false"},
                         Wrong{{{"seed", -1}}, "seed", "a non-negative integer"},
                         Wrong{{{"quant", 8}}, "quant", "a string"},
                         Wrong{{{"model", 3}}, "model", "a string"},
                         Wrong{{{"lora_targets", "query"}}, "lora_targets", "an array of strings"},
                         Wrong{{{"memory_budget", true}}, "memory_budget", "a byte count"},
                         Wrong{{{"text_column", 1.5}}, "text_column", "a column name or index"}}) {
    require_one_line_naming(error_of([&] { TrainConfig::from_json(w.j, "run.json"); }), w.key,
                            {"run.json", w.expected});
  }
  require_one_line_naming(error_of([] { PretrainConfig::from_json({{"corpus", "a.txt"}}); }), "corpus",
                          {"an array of strings"});
  require_one_line_naming(error_of([] { PretrainConfig::from_json({{"max_length", 16.5}}); }),
                          "max_length", {"an integer"});
  CHECK_THAT(error_of([] { TrainConfig::from_json(nlohmann::json::array(), "run.json"); }),
             Catch::Equals("run.json: expected a JSON object of settings"));
}

TEST_CASE("settings: to_json -> from_json gives back the same settings, every enum value included",
          "[settings]") {
  const nlohmann::json defaults = TrainConfig{}.to_json();
  std::vector<nlohmann::json> written;
  // Enough configurations that each value of the longest enum table (method, 5) occurs.
  for (std::size_t i = 0; i < std::size(kMethodNames); ++i) {
    const TrainConfig c = non_default_train(i);
    const nlohmann::json j = c.to_json();
    INFO(j.dump());
    written.push_back(j);
    const TrainConfig back = TrainConfig::from_json(j, "run.json");
    CHECK(back.to_json() == j);
    CHECK(back.method.method == c.method.method);
    CHECK(back.quant == c.quant);
    CHECK(back.optimizer == c.optimizer);
    CHECK(back.schedule == c.schedule);
    CHECK(back.method.adapter_act == c.method.adapter_act);
    CHECK(back.data.header == c.data.header);
    CHECK(back.checkpoint_layers == c.checkpoint_layers);
    CHECK(back.data.text_pair_column->index() == 2);
    CHECK(back.memory_budget == c.memory_budget);
    CHECK(back.budget_scope == c.budget_scope);
  }
  require_every_field_set(written, defaults);
  // The defaults round-trip too (unset optionals stay unset).
  const TrainConfig d = TrainConfig::from_json(defaults);
  CHECK(d.to_json() == defaults);
  CHECK_FALSE(d.dropout.has_value());
  CHECK_FALSE(d.data.label_column.has_value());
  // A byte size may be written as text.
  CHECK(TrainConfig::from_json({{"memory_budget", "128M"}}).memory_budget == 128u << 20);

  const nlohmann::json pdefaults = PretrainConfig{}.to_json();
  const nlohmann::json p = non_default_pretrain().to_json();
  require_every_field_set({p}, pdefaults);
  CHECK(PretrainConfig::from_json(p).to_json() == p);
  CHECK(PretrainConfig::from_json(pdefaults).to_json() == pdefaults);
}

TEST_CASE("settings: out-of-range values are rejected with one line before the run folder exists",
          "[settings]") {
  test::TempDir dir("settings-range");
  const fs::path train = two_class_file(dir.path);
  struct Case {
    const char* key;
    void (*set)(TrainConfig&);
  };
  for (const Case& k : {Case{"lr", [](TrainConfig& c) { c.lr = -1e-3; }},
                        Case{"batch_size", [](TrainConfig& c) { c.batch_size = 0; }},
                        Case{"dropout", [](TrainConfig& c) { c.dropout = 1.0; }},
                        Case{"epochs", [](TrainConfig& c) { c.epochs = 0; }},
                        Case{"eval_split", [](TrainConfig& c) { c.eval_split = 1.0; }},
                        Case{"lora_rank", [](TrainConfig& c) { c.method.lora.rank = 0; }}}) {
    TrainConfig c = tiny_run(train, dir.path / "run");
    k.set(c);
    const std::string m = error_of([&] { Trainer(c, nullptr).run(); });
    require_one_line_naming(m, k.key);
    CHECK_FALSE(fs::exists(dir.path / "run"));
  }
  CHECK_THAT(error_of([] {
               TrainConfig c;
               c.lr = -1;
               c.validate();
             }),
             Catch::Equals("lr must be at least 0, got -1"));
  CHECK_THAT(error_of([] {
               TrainConfig c;
               c.dropout = 1.0;
               c.validate();
             }),
             Catch::Equals("dropout must be below 1, got 1"));

  PretrainConfig p;
  p.lr = -1;
  require_one_line_naming(error_of([&] { p.validate(); }), "lr");
  p = PretrainConfig{};
  p.max_length = 2;
  require_one_line_naming(error_of([&] { p.validate(); }), "max_length");
}

TEST_CASE("settings: C ABI: an unknown quant or compute is an error naming it, nothing is trained",
          "[settings][api][c]") {
  test::TempDir dir("settings-cabi");
  const fs::path train = two_class_file(dir.path);
  const fs::path out = dir.path / "run";
  nlohmann::json opts = {{"model", tiny().string()}, {"train", train.string()}, {"out", out.string()},
                         {"epochs", 1},  {"batch_size", 2}, {"threads", 1}, {"quant", "q5"}};
  char err[512] = "";
  REQUIRE(edgetune_train(opts.dump().c_str(), err, sizeof err) == EDGETUNE_ERROR);
  require_one_line_naming(err, "quant", {"q5", "f32, q8, q4, nf4 or pal4"});
  CHECK_FALSE(fs::exists(out));
  opts["quant"] = "q4";
  opts["compute"] = "int4";
  REQUIRE(edgetune_train(opts.dump().c_str(), err, sizeof err) == EDGETUNE_ERROR);
  require_one_line_naming(err, "compute", {"int4", "int8 or f32"});
  CHECK_FALSE(fs::exists(out));
  opts["compute"] = "f32";
  opts["epochs"] = "1";
  REQUIRE(edgetune_train(opts.dump().c_str(), err, sizeof err) == EDGETUNE_ERROR);
  require_one_line_naming(err, "epochs", {"an integer"});
  CHECK_FALSE(fs::exists(out));
  opts["epochs"] = 1;
  opts["lr"] = -1;
  REQUIRE(edgetune_train(opts.dump().c_str(), err, sizeof err) == EDGETUNE_ERROR);
  require_one_line_naming(err, "lr");
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("settings: a max_length above the model's positions is an error unless it is the default",
          "[settings]") {
  test::TempDir dir("settings-maxlen");
  const fs::path train = two_class_file(dir.path);
  // The tiny model has 64 positions.
  TrainConfig c = tiny_run(train, dir.path / "long");
  c.data.max_length = 100;
  const std::string m = error_of([&] { Trainer(c, nullptr).run(); });
  require_one_line_naming(m, "max_length", {"100", "max_position_embeddings (64)"});
  CHECK_FALSE(fs::exists(c.out));

  // The default (128) gives way to the model's 64, and run.json records what was used.
  c = tiny_run(train, dir.path / "default");
  c.epochs = 1;
  REQUIRE(c.data.max_length == DataOptions::kDefaultMaxLength);
  REQUIRE(Trainer(c, nullptr).run().steps == 2);
  CHECK(nlohmann::json::parse(read_file(c.out / "run.json")).at("max_length") == 64);

  // Pretraining has no default to give way: the length asked for must fit.
  PretrainConfig p;
  p.model_dir = tiny();
  p.corpus = {train};
  p.out = dir.path / "pre";
  p.max_length = 100;
  p.threads = 1;
  require_one_line_naming(error_of([&] { Pretrainer(p, nullptr).run(); }), "max_length",
                          {"max_position_embeddings (64)"});
}

TEST_CASE("settings: a training file with a single class is rejected before training, naming it",
          "[settings]") {
  test::TempDir dir("settings-oneclass");
  const fs::path train = dir.path / "one-class.tsv";
  std::ofstream(train) << "sentence\tlabel\ngood film\tpos\ngreat acting\tpos\nfine plot\tpos\n";
  const TrainConfig c = tiny_run(train, dir.path / "run");
  const std::string m = error_of([&] { Trainer(c, nullptr).run(); });
  INFO(m);
  REQUIRE(m.find('\n') == std::string::npos);
  CHECK(m.find(train.string()) != std::string::npos);
  CHECK(m.find("'pos'") != std::string::npos);
  CHECK(m.find("at least 2 classes") != std::string::npos);
  CHECK_FALSE(fs::exists(c.out));
}
