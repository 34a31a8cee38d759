// The compressed model file (engine/model_file.h): a round trip through `compress` loads the same
// model as the folder (f32: the same logits; quantized: the same codes and scales as quantize-on-
// load), its base weights are mapped in place (file-backed, not charged to the accountant), layer
// cropping renumbers the kept layers, and a truncated, corrupt or version-mismatched file is
// refused with one line naming it.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>

#include "edgetune/autograd/quant.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/context.h"
#include "edgetune/core/file_io.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/model_file.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

fs::path tiny_dir() { return test::golden_dir() / "bert" / "tiny"; }

BertInputs golden_inputs() {
  safetensors::Reader g(tiny_dir() / "golden.safetensors");
  return {g.load("input_ids", DType::I32, MemCategory::Activations),
          g.load("token_type_ids", DType::I32, MemCategory::Activations),
          g.load("attention_mask", DType::I32, MemCategory::Activations)};
}

BertModel load(const fs::path& model, DType base) {
  LoadOptions lo;
  lo.base = base;
  return load_bert(model, lo);
}

CompressOptions options(DType quant, std::vector<std::int64_t> keep = {},
                        std::map<std::int64_t, std::vector<std::int64_t>> drop = {}) {
  CompressOptions o;
  o.quant = quant;
  o.keep_layers = std::move(keep);
  o.drop_heads = std::move(drop);
  return o;
}

fs::path compressed(const test::TempDir& tmp, DType quant, std::vector<std::int64_t> keep = {}) {
  const fs::path out = tmp.path / (std::string("tiny-") + dtype_name(quant) + ".safetensors");
  compress_model(tiny_dir(), out, options(quant, std::move(keep)));
  return out;
}

std::string bytes_of(const Tensor& t) {
  return std::string(static_cast<const char*>(t.impl()->storage->data()), t.impl()->storage->bytes());
}
std::string scales_of(const Tensor& t) {
  if (!t.impl()->scales) return {};
  return std::string(static_cast<const char*>(t.impl()->scales->data()), t.impl()->scales->bytes());
}

// A message of `f`'s ModelError.
template <class F>
std::string model_error(F&& f) {
  try {
    f();
  } catch (const ModelError& e) {
    return e.what();
  }
  FAIL("no ModelError");
  return {};
}

}  // namespace

TEST_CASE("an f32 model file gives the folder's logits") {
  test::TempDir tmp("model_file");
  const fs::path file = compressed(tmp, DType::F32);
  const BertInputs in = golden_inputs();
  const auto from_folder = load(tiny_dir(), DType::F32).classify(in, {}).to_vector();
  const auto from_file = load(file, DType::F32).classify(in, {}).to_vector();
  test::require_close("logits", from_file, from_folder, 0, 1e-6);
  const ModelFile f(file);
  CHECK(f.config().num_hidden_layers == 2);
  CHECK(f.tokenizer().vocab().size() == 2530);
  CHECK(f.metadata().at("edgetune.checksum").starts_with("blake2b-256:"));
  CHECK(nlohmann::json::parse(f.metadata().at("edgetune.provenance"))["options"]["quant"] == "f32");
}

TEST_CASE("quantized model files hold the codes and scales quantize-on-load makes, mapped in place") {
  test::TempDir tmp("model_file");
  for (DType q : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    INFO(dtype_name(q));
    const fs::path file = compressed(tmp, q);
    Context loading_folder, loading_file;
    std::optional<BertModel> folder, mapped;
    {
      ContextScope scope(loading_folder);
      folder.emplace(load(tiny_dir(), q));
    }
    {
      ContextScope scope(loading_file);
      mapped.emplace(load(file, q));
    }
    const auto a = folder->named_tensors(), b = mapped->named_tensors();
    REQUIRE(a.size() == b.size());
    std::size_t quantized = 0, mapped_bytes = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO(a[i].first);
      REQUIRE(a[i].first == b[i].first);
      REQUIRE(a[i].second.dtype() == b[i].second.dtype());
      REQUIRE(a[i].second.shape() == b[i].second.shape());
      CHECK(bytes_of(a[i].second) == bytes_of(b[i].second));
      CHECK(scales_of(a[i].second) == scales_of(b[i].second));
      CHECK(b[i].second.is_mapped());
      quantized += is_quantized(b[i].second.dtype());
      mapped_bytes += b[i].second.nbytes();
    }
    CHECK(quantized == 2 * 6 + 1);  // 6 matrices a layer and the pooler
    // The mapped base costs the accountant nothing; the folder's quantized copy costs its bytes.
    CHECK(loading_file.accountant->live(MemCategory::BaseWeights) == 0);
    CHECK(loading_folder.accountant->live(MemCategory::BaseWeights) >= mapped_bytes);
  }
}

TEST_CASE("the mapped base is clean, file-backed memory") {
  test::TempDir tmp("model_file");
  const fs::path file = compressed(tmp, DType::Q8);
  const BertModel m = load(file, DType::Q8);
  const BertInputs in = golden_inputs();
  m.classify(in, {});  // touches every base weight
  std::ifstream smaps("/proc/self/smaps");
  REQUIRE(smaps);
  std::string line;
  bool in_file = false, found = false;
  std::int64_t private_dirty = -1;
  const std::string name = fs::canonical(file).string();
  while (std::getline(smaps, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < 20) {
      in_file = line.size() >= name.size() && line.ends_with(name);
      found = found || in_file;
    } else if (in_file && line.starts_with("Private_Dirty:")) {
      private_dirty = std::max<std::int64_t>(private_dirty, std::stoll(line.substr(14)));
    }
  }
  REQUIRE(found);
  CHECK(private_dirty == 0);
}

TEST_CASE("compress --keep-layers keeps the chosen layers, renumbered") {
  test::TempDir tmp("model_file");
  CHECK(parse_keep_layers("1", 2) == std::vector<std::int64_t>{0});
  CHECK(parse_keep_layers("0,1", 2) == std::vector<std::int64_t>{0, 1});
  for (const char* bad : {"0", "3", "1,0", "0,0", "0,2", "x", "1,", ""}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_keep_layers(bad, 2), std::invalid_argument);
  }
  const fs::path file = compressed(tmp, DType::F32, {1});
  BertModel cropped = load(file, DType::F32);
  BertModel source = load(tiny_dir(), DType::F32);
  REQUIRE(cropped.config.num_hidden_layers == 1);
  REQUIRE(cropped.layers.size() == 1);
  CHECK(cropped.layers[0].query.weight.to_vector() == source.layers[1].query.weight.to_vector());
  CHECK(cropped.layers[0].output_norm.bias.to_vector() == source.layers[1].output_norm.bias.to_vector());
  source.layers.erase(source.layers.begin());
  source.config.num_hidden_layers = 1;
  const BertInputs in = golden_inputs();
  CHECK(cropped.classify(in, {}).to_vector() == source.classify(in, {}).to_vector());
}

TEST_CASE("model files that are truncated, corrupt or of another version are refused") {
  test::TempDir tmp("model_file");
  const fs::path file = compressed(tmp, DType::Q4);
  const std::string bytes = read_file(file);

  const fs::path truncated = tmp.path / "truncated.safetensors";
  write_file_atomic(truncated, bytes.substr(0, bytes.size() / 2));
  CHECK_THAT(model_error([&] { load(truncated, DType::Q4); }),
             Catch::Contains("truncated.safetensors") && Catch::Contains("truncated"));

  const fs::path corrupt = tmp.path / "corrupt.safetensors";
  std::string flipped = bytes;
  flipped[flipped.size() - 100] ^= 0x10;
  write_file_atomic(corrupt, flipped);
  CHECK_THAT(model_error([&] { load(corrupt, DType::Q4); }),
             Catch::Contains("corrupt.safetensors: checksum mismatch"));

  const fs::path other = tmp.path / "v2.safetensors";
  {
    const safetensors::Reader r(file);
    std::vector<safetensors::RawTensor> raw;
    for (const auto& info : r.tensors()) raw.push_back({info.name, info.dtype, info.shape, r.bytes(info)});
    auto meta = r.metadata();
    meta["edgetune.format_version"] = "2";
    safetensors::save_aligned(other, raw, meta, kModelFileAlignment);
  }
  CHECK_THAT(model_error([&] { load(other, DType::Q4); }),
             Catch::Contains("v2.safetensors: model file format version 2"));

  CHECK_THAT(model_error([&] { load(file, DType::Q8); }),
             Catch::Contains("stores q4 base weights, not q8"));
  CHECK_THAT(model_error([&] { load_bert(tiny_dir() / "model.safetensors", LoadOptions{}); }),
             Catch::Contains("no \"edgetune.format\""));
  CHECK_THAT(model_error([&] { compress_model(tiny_dir(), tiny_dir() / "model.safetensors", options(DType::Q8)); }),
             Catch::Contains("would overwrite the model it compresses"));
  CHECK_THAT(model_error([&] { compress_model(file, file, options(DType::Q8)); }),
             Catch::Contains("would overwrite the model it compresses"));
  CHECK(read_file(file) == bytes);
}

TEST_CASE("compress --drop-heads and --keep-layers give PyTorch's logits for the pruned model") {
  // tests/golden/bert/make_pruned_golden.py: Hugging Face prune_heads({0: [1, 3], 1: [0]}), then
  // only layer 1 kept.
  test::TempDir tmp("model_file");
  const safetensors::Reader golden(tiny_dir() / "pruned_golden.safetensors");
  const std::map<std::int64_t, std::vector<std::int64_t>> drop{{0, {1, 3}}, {1, {0}}};
  CHECK(parse_drop_heads("0:1,3;1:0", 2, 4) == drop);
  for (const char* bad : {"0", "0:4", "2:0", "0:1;0:2", "0:0,1,2,3", "0:1,1", "0,1:2", "x:1", ""}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_drop_heads(bad, 2, 4), std::invalid_argument);
  }
  const BertInputs in = golden_inputs();

  const fs::path heads = tmp.path / "heads.safetensors";
  compress_model(tiny_dir(), heads, options(DType::F32, {}, drop));
  BertModel pruned = load(heads, DType::F32);
  CHECK(pruned.config.pruned_heads == drop);
  CHECK(pruned.config.to_json()["pruned_heads"] == nlohmann::json{{"0", {1, 3}}, {"1", {0}}});
  CHECK(pruned.layers[0].query.weight.shape() == Shape{32, 64});
  CHECK(pruned.layers[0].attention_output.weight.shape() == Shape{64, 32});
  CHECK(pruned.layers[1].value.bias.shape() == Shape{48});
  test::require_close("logits, heads pruned", pruned.classify(in, {}).to_vector(),
                      golden.load("logits.heads").to_vector(), 1e-4, 1e-6);

  const fs::path both = tmp.path / "both.safetensors";
  compress_model(tiny_dir(), both, options(DType::F32, {1}, drop));
  BertModel cropped = load(both, DType::F32);
  CHECK(cropped.config.pruned_heads == std::map<std::int64_t, std::vector<std::int64_t>>{{0, {0}}});
  test::require_close("logits, heads pruned and layer 1 kept", cropped.classify(in, {}).to_vector(),
                      golden.load("logits.heads_layers").to_vector(), 1e-4, 1e-6);

  // The quantized file of the pruned model holds what quantizing its f32 file on load gives.
  const fs::path q8 = tmp.path / "heads-q8.safetensors";
  compress_model(heads, q8, options(DType::Q8));
  const BertModel a = load(q8, DType::Q8);
  CHECK(a.layers[0].key.weight.dtype() == DType::Q8);
  CHECK(a.layers[0].key.weight.shape() == Shape{32, 64});
  CHECK(bytes_of(a.layers[0].key.weight) == bytes_of(quantize(pruned.layers[0].key.weight, DType::Q8)));
}

TEST_CASE("compress --quant-embeddings stores the embeddings as quantizing them at load does, mapped in place") {
  test::TempDir tmp("model_file");
  const BertInputs in = golden_inputs();
  for (DType q : {DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    INFO(dtype_name(q));
    CompressOptions o = options(q);
    o.quant_embeddings = true;
    const fs::path file = tmp.path / (std::string("tiny-emb-") + dtype_name(q) + ".safetensors");
    compress_model(tiny_dir(), file, o);
    const ModelFile f(file);
    CHECK(f.quant_embeddings());
    CHECK(nlohmann::json::parse(f.metadata().at("edgetune.provenance"))["options"]["quant_embeddings"] == true);
    LoadOptions from_folder;
    from_folder.base = q;
    from_folder.quant_embeddings = true;
    const BertModel folder = load_bert(tiny_dir(), from_folder);
    // --quant-embeddings left out: the file's storage is used.
    const BertModel mapped = load(file, q);
    CHECK(mapped.word_embeddings.dtype() == q);
    CHECK(mapped.position_embeddings.dtype() == DType::Q8);
    const auto a = folder.named_tensors(), b = mapped.named_tensors();
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO(a[i].first);
      REQUIRE(a[i].first == b[i].first);
      REQUIRE(a[i].second.dtype() == b[i].second.dtype());
      CHECK(bytes_of(a[i].second) == bytes_of(b[i].second));
      CHECK(scales_of(a[i].second) == scales_of(b[i].second));
      CHECK(b[i].second.is_mapped());
    }
    // The same bytes through the same kernels: the logits are bitwise the folder's.
    CHECK(mapped.classify(in, {}).to_vector() == folder.classify(in, {}).to_vector());
    // Given for the file that has them, it is accepted.
    LoadOptions given = from_folder;
    CHECK(load_bert(file, given).word_embeddings.is_mapped());
  }
}

TEST_CASE("quantized embeddings: compress needs a quantized base, a file without them and full fine-tuning refuse") {
  test::TempDir tmp("model_file");
  CompressOptions f32 = options(DType::F32);
  f32.quant_embeddings = true;
  CHECK_THROWS_WITH(compress_model(tiny_dir(), tmp.path / "x.safetensors", f32),
                    Catch::Contains("--quant-embeddings") && Catch::Contains("not f32"));
  CHECK_FALSE(fs::exists(tmp.path / "x.safetensors"));

  const fs::path plain = compressed(tmp, DType::Q4);
  CHECK_FALSE(ModelFile(plain).quant_embeddings());
  LoadOptions asked;
  asked.base = DType::Q4;
  asked.quant_embeddings = true;
  CHECK_THAT(model_error([&] { load_bert(plain, asked); }),
             Catch::Contains("tiny-q4.safetensors: the model file keeps its embeddings float32") &&
                 Catch::Contains("compress --quant-embeddings"));

  CompressOptions q4 = options(DType::Q4);
  q4.quant_embeddings = true;
  const fs::path file = tmp.path / "emb.safetensors";
  compress_model(tiny_dir(), file, q4);
  MethodOptions full;
  full.method = Method::Full;
  const std::string full_error = model_error([&] { load_bert(file, load_options_for(full, DType::Q4, false)); });
  CHECK_THAT(full_error, Catch::Contains("emb.safetensors: the model file stores its embeddings q4") &&
                             Catch::Contains("full fine-tuning"));
  CHECK(full_error.find('\n') == std::string::npos);
  MethodOptions lora;
  lora.method = Method::Lora;
  CHECK(load_bert(file, load_options_for(lora, DType::Q4, false)).word_embeddings.dtype() == DType::Q4);
}
