// Continual updates (engine/update.h): an update moves the adapter and learns its rows, a new
// label grows the head with the old rows kept bit for bit, a stopped or committed-then-killed
// update leaves the run folder as before or completes it, and bad runs and files are refused in
// one line.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <map>
#include <fstream>
#include <string>
#include <vector>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/replay.h"
#include "edgetune/engine/api.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/update.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

fs::path tiny() { return test::golden_dir() / "bert" / "tiny"; }

fs::path scratch(const std::string& tag) {
  const fs::path p = fs::temp_directory_path() / ("edgetune-update-" + tag + "-" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

std::vector<LabelledText> first_rows() {
  std::vector<LabelledText> rows;
  for (int i = 0; i < 16; ++i) {
    rows.push_back({"a good film number " + std::to_string(i), "pos"});
    rows.push_back({"a bad film number " + std::to_string(i), "neg"});
  }
  return rows;
}

// A session that trained `run` on first_rows(); threads 1 so the figures are reproducible.
std::unique_ptr<TuningSession> trained_session(const fs::path& run) {
  SessionOptions o;
  o.threads = 1;
  o.max_length = 16;
  auto s = TuningSession::open(tiny(), o);
  for (const auto& r : first_rows()) s->add_example(r);
  s->train({{"epochs", 2}, {"batch_size", 8}, {"dropout", 0.0}}, run);
  return s;
}

std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) out[e.path().filename().string()] = read_file(e.path());
  }
  return out;
}

std::vector<float> tensor_values(const fs::path& file, const std::string& name) {
  safetensors::Reader r(file);
  const Tensor t = r.load(name);
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// The one-line message of what `f` throws.
template <class F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  FAIL("nothing was thrown");
  return "";
}

}  // namespace

TEST_CASE("update: the adapter moves and learns the new rows; the buffer takes them", "[update]") {
  const fs::path run = scratch("learns");
  auto s = trained_session(run);
  const std::string before = read_file(run / "adapter_model.safetensors");
  const data::ReplayBuffer seeded = data::ReplayBuffer::load(run / "replay.json");
  REQUIRE(seeded.seen() == 32);
  REQUIRE(seeded.size() == 32);

  // Rows the run never saw, in words of its positive rows, all labelled negative.
  std::vector<LabelledText> fresh;
  for (int i = 0; i < 6; ++i) fresh.push_back({"great great film " + std::to_string(i), "neg"});
  const EvalReport old_eval = s->evaluate(fresh);
  s->clear_examples();
  for (const auto& r : fresh) s->add_example(r);
  const UpdateResult u = s->update(run, {{"lr", 5e-3}, {"min_steps", 30}});
  REQUIRE(u.update == 1);
  REQUIRE(u.new_rows == 6);
  REQUIRE(u.replayed_rows == 6);
  REQUIRE(u.train.steps == 30);
  REQUIRE(u.new_labels.empty());
  REQUIRE(read_file(run / "adapter_model.safetensors") != before);
  const EvalReport new_eval = s->evaluate(fresh);
  INFO("loss on the new rows before " << old_eval.loss << ", after " << new_eval.loss);
  REQUIRE(new_eval.loss < old_eval.loss);
  REQUIRE(new_eval.accuracy >= old_eval.accuracy);

  const data::ReplayBuffer after = data::ReplayBuffer::load(run / "replay.json");
  REQUIRE(after.seen() == 38);
  REQUIRE(after.updates() == 1);
  REQUIRE_FALSE(fs::exists(run / "update-staging"));
  REQUIRE_FALSE(fs::exists(run / "train_state.safetensors"));
  const std::string metrics = read_file(run / "metrics.jsonl");
  REQUIRE(metrics.find("\"type\":\"update\"") != std::string::npos);
  REQUIRE(metrics.find("\"min_steps\":30") != std::string::npos);  // the update's settings
  fs::remove_all(run);
}

TEST_CASE("update: a new label grows the head, and labels.json gains it after the old ones", "[update]") {
  const fs::path run = scratch("grow");
  auto s = trained_session(run);
  s->clear_examples();
  s->add_example({"so so, nothing special", "meh"});
  s->add_example({"fine i guess", "meh"});
  const UpdateResult u = s->update(run, {{"max_steps", 2}});
  REQUIRE(u.new_labels == std::vector<std::string>{"meh"});
  REQUIRE(s->labels() == std::vector<std::string>{"neg", "pos", "meh"});
  REQUIRE(data::LabelMap::load(run / "labels.json").id2label() == s->labels());
  const auto w = tensor_values(run / "adapter_model.safetensors", "base_model.model.classifier.weight");
  REQUIRE(w.size() == 3 * 64);
  REQUIRE(s->predict_proba({"fine i guess"}).shape()[1] == 3);
  fs::remove_all(run);
}

TEST_CASE("update: growing the head keeps the saved rows bit for bit, the new row as initialised",
          "[update]") {
  const fs::path run = scratch("rows");
  trained_session(run);
  const auto saved_w = tensor_values(run / "adapter_model.safetensors", "base_model.model.classifier.weight");
  const auto saved_b = tensor_values(run / "adapter_model.safetensors", "base_model.model.classifier.bias");
  MethodOptions method;
  LoadOptions lo = load_options_for(method, DType::Q8, false);
  lo.id2label = {"neg", "pos", "meh"};
  lo.seed = 9;
  const BertModel fresh = load_bert(tiny(), lo);
  BertModel grown = load_bert(tiny(), lo);
  load_trained(grown, run, true);
  const Tensor& w = grown.classifier.weight;
  const Tensor& b = grown.classifier.bias;
  REQUIRE(w.dim(0) == 3);
  const std::int64_t c = w.dim(1);
  for (std::int64_t i = 0; i < 2 * c; ++i) REQUIRE(w.data<float>()[i] == saved_w[static_cast<std::size_t>(i)]);
  for (std::int64_t i = 2 * c; i < 3 * c; ++i) REQUIRE(w.data<float>()[i] == fresh.classifier.weight.data<float>()[i]);
  REQUIRE(b.data<float>()[0] == saved_b[0]);
  REQUIRE(b.data<float>()[1] == saved_b[1]);
  REQUIRE(b.data<float>()[2] == fresh.classifier.bias.data<float>()[2]);
  REQUIRE(w.requires_grad());
  // Without grow_head the shapes must match, as before.
  BertModel strict = load_bert(tiny(), lo);
  const std::string e = refusal([&] { load_trained(strict, run); });
  REQUIRE(e.find("another number of labels") != std::string::npos);
  fs::remove_all(run);
}

TEST_CASE("update: stopped, or failed, it leaves the run folder as it was", "[update]") {
  const fs::path run = scratch("stopped");
  trained_session(run);
  const auto before = files_of(run);
  UpdateConfig u;
  u.run = run;
  u.threads = 1;
  auto rows = std::make_shared<data::Dataset>();
  rows->source = "<memory>";
  rows->examples.push_back({"new text", std::nullopt, "pos", -1, 1});
  u.train_data = rows;
  RunHooks stop;
  stop.should_stop = [] { return true; };
  const UpdateResult r = update_run(u, nullptr, stop);
  REQUIRE(r.train.interrupted);
  REQUIRE(files_of(run) == before);
  REQUIRE_FALSE(fs::exists(run / "update-staging"));
  // A budget far too small fails in the planner: nothing changes either.
  u.memory_budget = 1024;
  u.budget_scope = BudgetScope::Session;
  REQUIRE_THROWS(update_run(u));
  REQUIRE(files_of(run) == before);
  REQUIRE_FALSE(fs::exists(run / "update-staging"));
  fs::remove_all(run);
}

TEST_CASE("update: what a kill leaves is discarded before the commit and completed after it",
          "[update]") {
  const fs::path run = scratch("recover");
  trained_session(run);
  const auto before = files_of(run);
  // Killed while staging: the half-made folder goes, the run is untouched.
  fs::create_directories(run / "update-staging" / "commit");
  write_file_atomic(run / "update-staging" / "commit" / "labels.json", "{\"torn");
  REQUIRE_FALSE(recover_update(run));
  REQUIRE(files_of(run) == before);
  REQUIRE_FALSE(fs::exists(run / "update-staging"));
  // Killed after the commit marker, with one file copied: recovery copies the rest.
  fs::create_directories(run / "update-staging" / "commit");
  write_file_atomic(run / "update-staging" / "commit" / "labels.json", "{\"id2label\": [\"a\", \"b\"]}\n");
  write_file_atomic(run / "update-staging" / "commit" / "replay.json", "replayed\n");
  write_file_atomic(run / "labels.json", "{\"id2label\": [\"a\", \"b\"]}\n");
  write_file_atomic(run / "update-staging" / "COMMITTED", "[\"labels.json\", \"replay.json\"]\n");
  REQUIRE(recover_update(run));
  REQUIRE(read_file(run / "replay.json") == "replayed\n");
  REQUIRE(read_file(run / "labels.json") == "{\"id2label\": [\"a\", \"b\"]}\n");
  REQUIRE(read_file(run / "adapter_model.safetensors") == before.at("adapter_model.safetensors"));
  REQUIRE_FALSE(fs::exists(run / "update-staging"));
  REQUIRE_FALSE(recover_update(run));
  fs::remove_all(run);
}

TEST_CASE("update: a missing run, a run that is not fine-tuning, an unfinished run and a bad file "
          "are refused in one line",
          "[update]") {
  const fs::path dir = scratch("refusals");
  fs::create_directories(dir);
  UpdateConfig u;
  u.threads = 1;
  u.train_file = dir / "new.tsv";
  std::ofstream(u.train_file) << "sentence\tlabel\nfine\tpos\n";
  auto one_line = [](const std::string& e, const std::string& expected) {
    INFO(e);
    REQUIRE(e.find(expected) != std::string::npos);
    REQUIRE(e.find('\n') == std::string::npos);
  };
  u.run = dir / "missing";
  one_line(refusal([&] { update_run(u); }), "missing: no such run folder");
  u.run = dir / "empty";
  fs::create_directories(u.run);
  one_line(refusal([&] { update_run(u); }), "no run.json");
  u.run = dir / "pretrain";
  fs::create_directories(u.run);
  write_file_atomic(u.run / "run.json", "{\"corpus\": \"c.txt\", \"mlm_probability\": 0.15}\n");
  one_line(refusal([&] { update_run(u); }), "not a fine-tuning run");
  u.run = dir / "full";
  fs::create_directories(u.run);
  write_file_atomic(u.run / "run.json", "{\"method\": \"full\"}\n");
  one_line(refusal([&] { update_run(u); }), "full fine-tuning run has no adapter");
  u.run = dir / "unfinished";
  fs::create_directories(u.run);
  write_file_atomic(u.run / "run.json", "{\"method\": \"lora\"}\n");
  one_line(refusal([&] { update_run(u); }), "did not finish");

  const fs::path run = dir / "run";
  trained_session(run);
  const auto before = files_of(run);
  u.run = run;
  std::ofstream(u.train_file) << "sentence\tlabel\nfine\tpos\nno label column here\n";
  one_line(refusal([&] { update_run(u); }), (dir / "new.tsv").string() + ":3");
  std::ofstream(u.train_file) << "sentence\tlabel\n";
  one_line(refusal([&] { update_run(u); }), "no training rows");
  REQUIRE(files_of(run) == before);
  fs::remove_all(dir);
}
