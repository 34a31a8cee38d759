// The compressed model file (see model_file.h).
#include "edgetune/engine/model_file.h"

#include <sodium.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>

#include "edgetune/autograd/quant.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/batch.h"
#include "edgetune/data/error.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/vocab_prune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/prune.h"
#include "edgetune/engine/session.h"

namespace edgetune {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormatName = "edgetune-model";
constexpr const char* kChecksumKey = "edgetune.checksum";
constexpr const char* kQuantEmbeddingsKey = "edgetune.quant_embeddings";

DType storage_from_name(const std::string& name, const std::string& label) {
  for (DType t : {DType::F32, DType::Q8, DType::Q4, DType::NF4, DType::PAL4}) {
    if (name == dtype_name(t)) return t;
  }
  throw ModelError(label + ": \"edgetune.storage\" is '" + name + "', expected f32, q8, q4, nf4 or pal4");
}

// Whole numbers separated by `sep`; `bad(item)` makes the error for one that is not.
template <class Bad>
std::vector<std::int64_t> parse_numbers(std::string_view text, char sep, Bad&& bad) {
  std::vector<std::int64_t> values;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(sep, start), text.size());
    const std::string_view item = text.substr(start, end - start);
    std::int64_t v = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size()) {
      throw bad("'" + std::string(item) + "' is not a whole number");
    }
    values.push_back(v);
    start = end + 1;
  }
  return values;
}

std::vector<std::vector<float>> as_floats(const std::vector<std::vector<double>>& scores) {
  std::vector<std::vector<float>> out;
  for (const auto& layer : scores) out.emplace_back(layer.begin(), layer.end());
  return out;
}

nlohmann::json as_json(const LayerUnits& units) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [layer, list] : units) out[std::to_string(layer)] = list;
  return out;
}

// Adam steps that fit a classifier for scoring when the source has none (prune.h fit_classifier).
constexpr int kFitSteps = 100;
// Calibration rows per backward pass.
constexpr std::size_t kCalibrationBatch = 16;

// --prune-heads / --prune-ffn: reads the calibration file, scores every head and neuron of `m`
// under its classifier (or, when the source has none, under one fitted on the calibration rows
// first), and removes the lowest. Returns the scores and what they removed for the provenance, or
// null when neither is asked for.
nlohmann::json prune_by_importance(BertModel& m, const fs::path& source, const CompressOptions& o, bool fresh_head) {
  for (const auto& [name, fraction] : {std::pair{"--prune-heads", o.prune_heads}, std::pair{"--prune-ffn", o.prune_ffn}}) {
    if (!(fraction >= 0 && fraction < 1)) {
      throw std::invalid_argument(std::string("compress: ") + name + " must be a fraction in [0, 1), got " +
                                  std::to_string(fraction));
    }
  }
  if (o.prune_heads == 0 && o.prune_ffn == 0) {
    if (!o.calibration.empty()) {
      throw std::invalid_argument("compress: --calibration is only read with --prune-heads or --prune-ffn");
    }
    return nullptr;
  }
  if (o.calibration.empty()) {
    throw std::invalid_argument("compress: --prune-heads and --prune-ffn score heads and neurons on labelled "
                                "examples: give --calibration FILE (TSV, CSV or JSONL, as train reads)");
  }
  if (o.prune_heads > 0 && (!o.drop_heads.empty() || !m.config.pruned_heads.empty())) {
    throw std::invalid_argument("compress: --prune-heads chooses the heads itself; it does not combine with "
                                "--drop-heads or a model that already has pruned heads");
  }
  if (o.prune_ffn > 0 && (!o.drop_neurons.empty() || !m.config.intermediate_sizes.empty())) {
    throw std::invalid_argument("compress: --prune-ffn chooses the neurons itself; it does not combine with "
                                "explicit neurons or a model that already has pruned neurons");
  }
  const data::WordPieceTokenizer tokenizer = load_model_tokenizer(source);
  std::optional<data::LabelMap> labels;
  if (!fresh_head) labels = eval_label_map(label_names(m.config));
  data::Dataset rows = read_data(o.calibration, DataOptions{}, true, labels ? &*labels : nullptr);
  if (rows.examples.empty()) {
    throw data::DataError(o.calibration.string(), "no rows (expected labelled examples to score heads and neurons on)");
  }
  if (!labels) {
    labels = data::LabelMap::from_dataset(rows);
    labels->assign(rows);
  }
  const int max_length = static_cast<int>(
      std::min<std::int64_t>(DataOptions::kDefaultMaxLength, m.config.max_position_embeddings));
  const std::vector<data::Encoding> encodings = data::encode_dataset(tokenizer, rows, max_length);
  const std::vector<std::int32_t> ids = data::label_ids(rows);
  std::vector<std::size_t> order(encodings.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::vector<TensorBatch> batches;
  for (const std::vector<std::size_t>& group : data::batch_rows(order, kCalibrationBatch)) {
    batches.push_back(to_tensors(data::make_batch(encodings, group, tokenizer.pad_id(), ids)));
  }
  BertModel scorer = m;
  if (fresh_head) fit_classifier(scorer, batches, labels->size(), kFitSteps);
  const MaskImportance scores = mask_importance(scorer, batches);
  const LayerUnits heads = o.prune_heads > 0 ? lowest_heads(normalize_per_layer(scores.heads), o.prune_heads)
                                             : LayerUnits{};
  const LayerUnits neurons = o.prune_ffn > 0 ? lowest_neurons(scores.neurons, o.prune_ffn) : LayerUnits{};
  prune_heads(m, heads);
  prune_neurons(m, neurons);
  return {{"loss", fresh_head ? "cross-entropy of a classifier fitted on the calibration rows (" +
                                    std::to_string(kFitSteps) + " Adam steps): the source has none"
                              : "cross-entropy of the source's classifier"},
          {"examples", rows.examples.size()},
          {"heads", as_floats(scores.heads)},
          {"heads_removed", as_json(heads)},
          {"neurons", as_floats(scores.neurons)},
          {"neurons_removed", as_json(neurons)}};
}

}  // namespace

std::map<std::int64_t, std::vector<std::int64_t>> parse_drop_heads(std::string_view text, std::int64_t layers,
                                                                    std::int64_t heads) {
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("--drop-heads '" + std::string(text) + "': " + why +
                                 " (expected layer:heads;... like 0:1,3;5:0, of the model's " +
                                 std::to_string(layers) + " layers of " + std::to_string(heads) + " heads)");
  };
  std::map<std::int64_t, std::vector<std::int64_t>> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(';', start), text.size());
    const std::string_view item = text.substr(start, end - start);
    const std::size_t colon = item.find(':');
    if (colon == std::string_view::npos) throw bad("'" + std::string(item) + "' has no ':'");
    const std::vector<std::int64_t> layer_part = parse_numbers(item.substr(0, colon), ',', bad);
    if (layer_part.size() != 1) throw bad("one layer goes before each ':'");
    const std::int64_t layer = layer_part[0];
    if (layer < 0 || layer >= layers) throw bad("layer " + std::to_string(layer) + " does not exist");
    if (out.count(layer)) throw bad("layer " + std::to_string(layer) + " is named twice");
    std::vector<std::int64_t> list = parse_numbers(item.substr(colon + 1), ',', bad);
    std::sort(list.begin(), list.end());
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (list[i] < 0 || list[i] >= heads) throw bad("head " + std::to_string(list[i]) + " does not exist");
      if (i > 0 && list[i] == list[i - 1]) throw bad("head " + std::to_string(list[i]) + " is named twice");
    }
    if (static_cast<std::int64_t>(list.size()) >= heads) throw bad("layer " + std::to_string(layer) + " would keep no head");
    out[layer] = std::move(list);
    start = end + 1;
  }
  return out;
}

std::vector<std::int64_t> parse_keep_layers(std::string_view text, std::int64_t layers) {
  auto bad = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument("--keep-layers '" + std::string(text) + "': " + why +
                                 " (expected a count like 6 or ascending layer indices like 0,2,4 "
                                 "of the model's " + std::to_string(layers) + " layers)");
  };
  std::vector<std::int64_t> values = parse_numbers(text, ',', bad);
  if (values.size() == 1 && text.find(',') == std::string_view::npos) {
    const std::int64_t n = values[0];
    if (n < 1 || n > layers) throw bad("a count must be in [1, " + std::to_string(layers) + "]");
    values.clear();
    for (std::int64_t i = 0; i < n; ++i) values.push_back(i);
    return values;
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] < 0 || values[i] >= layers) throw bad("layer " + std::to_string(values[i]) + " does not exist");
    if (i > 0 && values[i] <= values[i - 1]) throw bad("indices must be ascending and distinct");
  }
  return values;
}

bool is_model_file(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::string model_file_checksum(const std::map<std::string, std::string>& metadata,
                                const std::vector<safetensors::RawTensor>& tensors) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, crypto_generichash_BYTES);
  auto add = [&state](const void* p, std::size_t n) {
    crypto_generichash_update(&state, static_cast<const unsigned char*>(p), n);
  };
  const char zero = 0;
  for (const auto& [key, value] : metadata) {
    if (key == kChecksumKey) continue;
    add(key.data(), key.size());
    add(&zero, 1);
    add(value.data(), value.size());
    add(&zero, 1);
  }
  for (const safetensors::RawTensor& t : tensors) {
    add(t.name.data(), t.name.size());
    add(&zero, 1);
    add(t.dtype.data(), t.dtype.size());
    add(&zero, 1);
    for (std::int64_t d : t.shape) add(&d, sizeof d);  // little-endian hosts only (safetensors.cpp)
    add(t.bytes.data(), t.bytes.size());
  }
  unsigned char digest[crypto_generichash_BYTES];
  crypto_generichash_final(&state, digest, sizeof digest);
  char hex[2 * sizeof digest + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return std::string("blake2b-256:") + hex;
}

void compress_model(const fs::path& source, const fs::path& out, const CompressOptions& options) {
  if (!(options.quant == DType::F32 || is_quantized(options.quant))) {
    throw std::invalid_argument("compress: --quant must be f32, q8, q4, nf4 or pal4");
  }
  if (options.quant_embeddings && !is_quantized(options.quant)) {
    throw std::invalid_argument("compress: --quant-embeddings stores the embeddings as --quant does: give "
                                "--quant q8, q4, nf4 or pal4, not f32");
  }
  std::error_code ec;
  const fs::path src = fs::weakly_canonical(source, ec);
  const fs::path dst = fs::weakly_canonical(out, ec);
  const bool inside = dst == src || (fs::is_directory(src, ec) && dst.parent_path() == src);
  if (inside) {
    throw ModelError(out.string() + ": would overwrite the model it compresses (" + source.string() +
                     "); choose another --out");
  }
  if (fs::is_directory(out, ec)) {
    throw ModelError(out.string() + ": is a folder (expected the path of the model file to write)");
  }
  LoadOptions lo;
  lo.base = DType::F32;
  LoadReport report;
  BertModel m = load_bert(source, lo, &report);
  // Heads the source lacks stay out of the file, so loading it initialises them as loading the
  // folder does.
  const std::set<std::string> fresh(report.initialised.begin(), report.initialised.end());
  prune_heads(m, options.drop_heads);
  const nlohmann::json importance = prune_by_importance(m, source, options, fresh.count("classifier.weight") > 0);
  prune_neurons(m, options.drop_neurons);
  if (!options.keep_layers.empty()) keep_layers(m, options.keep_layers);
  std::string pruned_vocab;
  if (!options.vocab_from.empty()) {
    const data::WordPieceTokenizer tokenizer = load_model_tokenizer(source);
    data::TokenUsage usage(tokenizer);
    for (const fs::path& file : options.vocab_from) usage.add_file(file);
    const data::PrunedVocab kept = data::prune_vocab(tokenizer.vocab(), usage.counts());
    prune_vocabulary(m, tokenizer.vocab(), kept.tokens);
    for (const std::string& token : kept.tokens) pruned_vocab += token + "\n";
  }

  LoadOptions stored;
  stored.base = options.quant;
  stored.quant_embeddings = options.quant_embeddings;
  std::vector<Tensor> keep_alive;
  std::vector<safetensors::RawTensor> raw;
  auto bytes_of = [](const void* p, std::size_t n) {
    return std::span<const std::byte>(static_cast<const std::byte*>(p), n);
  };
  for (const BertTensor& t : bert_tensors(m, stored)) {
    if (!t.slot->defined() || fresh.count(t.name)) continue;
    const std::vector<std::int64_t> dims(t.shape.dims().begin(), t.shape.dims().end());
    if (!is_quantized(t.storage)) {
      raw.push_back({t.name, "F32", dims, bytes_of(t.slot->data<float>(), t.slot->nbytes())});
      continue;
    }
    const Tensor q = quantize(*t.slot, t.storage);
    keep_alive.push_back(q);
    const QuantFileLayout layout = quant_file_layout(t.shape[0], t.shape[1], t.storage);
    const std::size_t scales = static_cast<std::size_t>(scale_count(t.shape, t.storage));
    raw.push_back({t.name, layout.codes_dtype, layout.codes,
                   bytes_of(q.impl()->storage->data(), storage_bytes(t.shape, t.storage))});
    raw.push_back({t.name + ".scales", "F32", layout.scales, bytes_of(q.scales(), scales * sizeof(float))});
  }

  const bool from_file = is_model_file(source);
  std::map<std::string, std::string> meta;
  meta["format"] = "pt";
  meta["edgetune.format"] = kFormatName;
  meta["edgetune.format_version"] = std::to_string(kModelFileVersion);
  meta["edgetune.storage"] = dtype_name(options.quant);
  // Written only when set, so a file without quantized embeddings is as older versions wrote it.
  if (options.quant_embeddings) meta[kQuantEmbeddingsKey] = "true";
  meta["edgetune.config"] = m.config.to_json().dump();
  if (from_file) {
    const ModelFile f(source, false);
    for (const char* key : {"edgetune.vocab", "edgetune.tokenizer_config"}) {
      if (const auto it = f.metadata().find(key); it != f.metadata().end()) meta[key] = it->second;
    }
  } else {
    meta["edgetune.vocab"] = read_file(source / "vocab.txt");
    if (fs::exists(source / "tokenizer_config.json", ec)) {
      meta["edgetune.tokenizer_config"] = read_file(source / "tokenizer_config.json");
    }
  }
  if (!options.vocab_from.empty()) meta["edgetune.vocab"] = pruned_vocab;
  nlohmann::json keep = nlohmann::json::array();
  for (std::int64_t i : options.keep_layers) keep.push_back(i);
  nlohmann::json dropped = nlohmann::json::object();
  for (const auto& [layer, heads] : options.drop_heads) dropped[std::to_string(layer)] = heads;
  nlohmann::json neurons = nlohmann::json::object();
  for (const auto& [layer, list] : options.drop_neurons) neurons[std::to_string(layer)] = list;
  std::vector<std::string> vocab_from;
  for (const fs::path& file : options.vocab_from) vocab_from.push_back(file.string());
  nlohmann::json provenance = {
      {"source", source.string()},
      {"options",
       {{"quant", dtype_name(options.quant)},
        {"quant_embeddings", options.quant_embeddings},
        {"keep_layers", keep},
        {"drop_heads", dropped},
        {"drop_neurons", neurons},
        {"prune_heads", options.prune_heads},
        {"prune_ffn", options.prune_ffn},
        {"calibration", options.calibration.string()},
        {"vocab_from", vocab_from}}},
      {"edgetune_version", EDGETUNE_VERSION}};
  if (!importance.is_null()) provenance["importance"] = importance;
  meta["edgetune.provenance"] = provenance.dump();
  meta[kChecksumKey] = model_file_checksum(meta, raw);
  safetensors::save_aligned(out, raw, meta, kModelFileAlignment);
}

ModelFile::ModelFile(const fs::path& path, bool verify) {
  try {
    reader_ = std::make_shared<const safetensors::Reader>(path);
  } catch (const safetensors::SafetensorsError& e) {
    throw ModelError(e.what());
  }
  metadata_ = reader_->metadata();
  const std::string& name = label();
  auto get = [&](const char* key) -> const std::string& {
    const auto it = metadata_.find(key);
    if (it == metadata_.end()) {
      throw ModelError(name + ": no \"" + key + "\" in the metadata (expected a model file written by "
                       "edgetune compress)");
    }
    return it->second;
  };
  if (get("edgetune.format") != kFormatName) {
    throw ModelError(name + ": \"edgetune.format\" is '" + get("edgetune.format") + "', expected '" +
                     kFormatName + "'");
  }
  const std::string& version = get("edgetune.format_version");
  if (version != std::to_string(kModelFileVersion)) {
    throw ModelError(name + ": model file format version " + version + ", this edgetune reads version " +
                     std::to_string(kModelFileVersion) + " (compress the model again with this edgetune)");
  }
  storage_ = storage_from_name(get("edgetune.storage"), name);
  if (const auto it = metadata_.find(kQuantEmbeddingsKey); it != metadata_.end()) {
    if (it->second != "true" || !is_quantized(storage_)) {
      throw ModelError(name + ": \"" + kQuantEmbeddingsKey + "\" is '" + it->second + "' over " +
                       dtype_name(storage_) + " storage, expected 'true' over a quantized one");
    }
    quant_embeddings_ = true;
  }
  try {
    config_ = BertConfig::from_json(nlohmann::json::parse(get("edgetune.config")), name + " (edgetune.config)");
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(name + ": \"edgetune.config\" is not valid JSON (" + e.what() + ")");
  }
  config_.validate(name + " (edgetune.config)");
  get("edgetune.vocab");
  if (verify) {
    std::vector<safetensors::RawTensor> views;
    for (const safetensors::TensorInfo& info : reader_->tensors()) {
      views.push_back({info.name, info.dtype, info.shape, reader_->bytes(info)});
    }
    const std::string sum = model_file_checksum(metadata_, views);
    reader_->release_all();
    if (get(kChecksumKey) != sum) {
      throw ModelError(name + ": checksum mismatch (the file holds " + get(kChecksumKey) + ", its bytes give " +
                       sum + "): the file is corrupt; compress the model again");
    }
  }
}

data::WordPieceTokenizer ModelFile::tokenizer() const {
  const auto it = metadata_.find("edgetune.tokenizer_config");
  return data::tokenizer_from_texts(metadata_.at("edgetune.vocab"), label() + " (edgetune.vocab)",
                                    it == metadata_.end() ? std::string_view() : std::string_view(it->second),
                                    label() + " (edgetune.tokenizer_config)");
}

data::WordPieceTokenizer load_model_tokenizer(const fs::path& model) {
  if (is_model_file(model)) return ModelFile(model, false).tokenizer();
  return data::load_tokenizer_from_model_dir(model);
}

}  // namespace edgetune
