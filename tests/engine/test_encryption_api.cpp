// Encryption at rest through the C++ API: fine_tune with a key writes every file of the run
// encrypted, a Classifier opens it only with that key (the same predictions as the plain run), a
// TuningSession's key covers what it saves and loads; the safetensors reader decrypts into memory
// counted by the accountant.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/context.h"
#include "edgetune/core/encryption.h"
#include "edgetune/engine/api.h"
#include "test_support.h"

using namespace edgetune;
using edgetune::test::error_of;
namespace fs = std::filesystem;

namespace {

fs::path tiny() { return test::golden_dir() / "bert" / "tiny"; }

std::shared_ptr<const EncryptionKey> key_of(unsigned char fill) {
  return std::make_shared<const EncryptionKey>(std::vector<unsigned char>(EncryptionKey::kBytes, fill));
}

std::string raw(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

const std::vector<LabelledText> kExamples = {
    {"good", "pos"}, {"bad", "neg"}, {"great", "pos"}, {"awful", "neg"}};

TrainConfig config(const fs::path& out) {
  TrainConfig cfg;
  cfg.model_dir = tiny();
  cfg.out = out;
  cfg.epochs = 2;
  cfg.batch_size = 2;
  cfg.threads = 1;
  cfg.save_every = 1;
  return cfg;
}

}  // namespace

TEST_CASE("api: fine_tune with a key encrypts the run, and a Classifier needs the same key",
          "[api][encryption]") {
  test::TempDir plain_dir("api_enc_plain"), keyed_dir("api_enc_keyed");
  fine_tune(config(plain_dir.path), kExamples);
  TrainConfig cfg = config(keyed_dir.path);
  cfg.key = key_of(0x21);
  fine_tune(cfg, kExamples);
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(keyed_dir.path)) {
    INFO(e.path().filename().string());
    CHECK(encryption::is_encrypted(raw(e.path())));
    ++files;
  }
  // run.json, metrics.jsonl, train_state, adapter_config.json, adapter_model.safetensors,
  // labels.json, replay.json.
  CHECK(files == 7);

  // The same training, so the same predictions as the plain run.
  ClassifierOptions o;
  o.threads = 1;
  const Classifier plain = Classifier::open(tiny(), plain_dir.path, o);
  o.key = key_of(0x21);
  const Classifier keyed = Classifier::open(tiny(), keyed_dir.path, o);
  const std::vector<std::string> texts = {"good", "awful", "something else"};
  const auto a = plain.predict_proba(texts), b = keyed.predict_proba(texts);
  REQUIRE(a.shape() == b.shape());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a.flat(i) == b.flat(i));

  ClassifierOptions none;
  const std::string missing = error_of([&] { Classifier::open(tiny(), keyed_dir.path, none); });
  CHECK(missing.find((keyed_dir.path / "adapter_config.json").string()) == 0);
  CHECK(missing.find("it is encrypted") != std::string::npos);
  ClassifierOptions wrong;
  wrong.key = key_of(0x22);
  CHECK(error_of([&] { Classifier::open(tiny(), keyed_dir.path, wrong); }).find("another key") !=
        std::string::npos);
  // A plain adapter is refused while a key is set: a file edgetune wrote must be encrypted.
  CHECK(error_of([&] { Classifier::open(tiny(), plain_dir.path, wrong); })
            .find("not encrypted, but a key is set") != std::string::npos);
}

TEST_CASE("api: a TuningSession's key covers training, save, load and resume", "[api][encryption]") {
  test::TempDir dir("api_enc_session");
  SessionOptions o;
  o.threads = 1;
  o.key = key_of(0x31);
  auto s = TuningSession::open(tiny(), o);
  for (const LabelledText& e : kExamples) s->add_example(e);
  const TrainResult r = s->train({{"epochs", 1}, {"batch_size", 2}, {"save_every", 1}}, dir.path / "run");
  CHECK(r.steps == 2);
  CHECK(encryption::is_encrypted(raw(dir.path / "run" / "train_state.safetensors")));
  s->save_adapter(dir.path / "saved");
  CHECK(encryption::is_encrypted(raw(dir.path / "saved" / "adapter_model.safetensors")));
  const auto before = s->predict_proba({"good"});
  // Resume reads run.json and the checkpoint with the session's key (the run is already done).
  CHECK(s->resume(dir.path / "run").steps == 2);

  s->set_key(nullptr);
  CHECK(error_of([&] { s->load_adapter(dir.path / "saved"); }).find("it is encrypted") != std::string::npos);
  CHECK(error_of([&] { s->resume(dir.path / "run"); }).find("run.json") != std::string::npos);
  s->set_key(key_of(0x31));
  s->load_adapter(dir.path / "saved");
  const auto after = s->predict_proba({"good"});
  for (std::size_t i = 0; i < before.size(); ++i) CHECK(before.flat(i) == after.flat(i));
}

TEST_CASE("safetensors: an encrypted file is decrypted into memory the accountant counts",
          "[safetensors][encryption]") {
  test::TempDir dir("api_enc_reader");
  const fs::path p = dir.path / "weights.safetensors";
  Context keyed;
  keyed.key = key_of(0x41);
  const ContextScope scope(keyed);
  Tensor t = Tensor::zeros(Shape{64, 32});
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i) * 0.5f;
  safetensors::save(p, {{"w", t}});
  REQUIRE(encryption::is_encrypted(raw(p)));
  const std::size_t before = keyed.accountant->stats().live[static_cast<int>(MemCategory::Workspace)];
  {
    const safetensors::Reader r(p, FileOrigin::Output);
    // The decrypted image: 8-byte length, the JSON header, 64 * 32 floats.
    CHECK(keyed.accountant->stats().live[static_cast<int>(MemCategory::Workspace)] >=
          before + 64 * 32 * 4);
    const Tensor back = r.load("w", DType::F32, MemCategory::Trainable);
    CHECK(back.to_vector() == t.to_vector());
  }
  CHECK(keyed.accountant->stats().live[static_cast<int>(MemCategory::Workspace)] == before);
  // Altered: one error line naming the file, from the reader's own error type.
  std::string bytes = raw(p);
  bytes[bytes.size() / 2] ^= 0x04;
  std::ofstream(p, std::ios::binary) << bytes;
  CHECK_THROWS_AS(safetensors::Reader(p), safetensors::SafetensorsError);
  CHECK(error_of([&] { safetensors::Reader r(p); }).find(p.string() + ": cannot decrypt") == 0);
}
