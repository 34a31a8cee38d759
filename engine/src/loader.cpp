// Hugging Face BERT folders in and out (see loader.h).
#include "edgetune/engine/loader.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>

#include "edgetune/adapters/init.h"
#include "edgetune/autograd/quant.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"

namespace edgetune {

namespace fs = std::filesystem;

BertConfig load_config(const fs::path& dir) {
  const fs::path path = dir / "config.json";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw ModelError(dir.string() + ": not a folder (expected a Hugging Face model folder with "
                                    "config.json, model.safetensors and vocab.txt)");
  }
  if (!fs::exists(path, ec)) {
    throw ModelError(path.string() + ": missing (expected the model's Hugging Face config.json)");
  }
  return BertConfig::load(path);
}

namespace {

// Tensors a checkpoint may carry that this model does not use.
bool ignorable(const std::string& name, bool with_mlm_head) {
  if (name.ends_with("embeddings.position_ids")) return true;  // a buffer, not a weight
  if (name.starts_with("cls.seq_relationship.")) return true;   // next-sentence head
  if (name.starts_with("cls.predictions.")) return !with_mlm_head || name.ends_with("decoder.weight");
  return false;
}

class Builder {
 public:
  // Fresh weights only (no file): every tensor initialised as Hugging Face does.
  Builder(const LoadOptions& opt, BertConfig& cfg, LoadReport& report)
      : opt_(opt), cfg_(cfg), report_(report) {}

  Builder(const fs::path& dir, const LoadOptions& opt, BertConfig& cfg, LoadReport& report)
      : reader_(std::in_place, dir / "model.safetensors"), opt_(opt), cfg_(cfg), report_(report) {
    if (reader_->find("bert.embeddings.word_embeddings.weight")) {
      prefix_ = "bert.";
    } else if (reader_->find("embeddings.word_embeddings.weight")) {
      prefix_ = "";
    } else {
      throw ModelError(reader_->label() +
                       ": no tensor 'bert.embeddings.word_embeddings.weight' (nor "
                       "'embeddings.word_embeddings.weight' of a bare BertModel): not a BERT "
                       "checkpoint");
    }
  }

  // The tensor `hf` (a BertForSequenceClassification name) with the expected shape, stored as
  // `storage` unless it is trainable. Undefined when absent and not required.
  Tensor get(const std::string& hf, const Shape& expected, DType storage, bool required = true) {
    if (!reader_) return fresh_as(hf, expected, storage);
    const std::string file_name = file_name_of(hf);
    const safetensors::TensorInfo* info = file_name.empty() ? nullptr : reader_->find(file_name);
    if (info == nullptr) {
      if (required) {
        throw ModelError(reader_->label() + ": missing tensor '" + (file_name.empty() ? hf : file_name) +
                         "' (expected shape " + expected.str() + " from config.json)");
      }
      return Tensor();
    }
    const Shape got(std::span<const std::int64_t>(info->shape.data(), info->shape.size()));
    if (info->shape.size() > 4 || got != expected) {
      throw ModelError(reader_->label() + ": tensor '" + file_name + "' has shape " + shape_str(*info) +
                       ", expected " + expected.str() + " from config.json (hidden_size " +
                       std::to_string(cfg_.hidden_size) + ", intermediate_size " +
                       std::to_string(cfg_.intermediate_size) + ", vocab_size " +
                       std::to_string(cfg_.vocab_size) + ")");
    }
    const bool train = opt_.trainable && opt_.trainable(hf);
    Tensor t = reader_->load(*info, train ? DType::F32 : storage,
                             train ? MemCategory::Trainable : MemCategory::BaseWeights);
    reader_->release(*info);
    used_.insert(file_name);
    t.set_name(hf);
    if (train) t.set_requires_grad(true);
    return t;
  }

  // A freshly initialised tensor as Hugging Face's _init_weights makes it.
  Tensor fresh(const std::string& hf, const Shape& shape, char kind) {
    report_.initialised.push_back(hf);
    const bool train = opt_.trainable && opt_.trainable(hf);
    Tensor t = kind == 'n'   ? adapters::normal_param(shape, cfg_.initializer_range,
                                                      opt_.seed + fresh_count_++, 0, train)
               : kind == '1' ? adapters::ones_param(shape, train)
                             : adapters::zeros_param(shape, train);
    t.set_name(hf);
    return t;
  }

  LinearLayer linear(const std::string& hf, std::int64_t n, std::int64_t k, DType storage) {
    LinearLayer l;
    l.weight = get(hf + ".weight", {n, k}, storage);
    l.bias = get(hf + ".bias", {n}, DType::F32);
    return l;
  }

  LayerNormLayer norm(const std::string& hf, std::int64_t c) {
    return {get(hf + ".weight", {c}, DType::F32), get(hf + ".bias", {c}, DType::F32)};
  }

  bool has(const std::string& hf) const {
    if (!reader_) return true;  // fresh weights: every tensor "exists"
    const std::string f = file_name_of(hf);
    return !f.empty() && reader_->find(f) != nullptr;
  }

  // Everything in the file that was neither used nor known to be ignorable is an error.
  void check_leftovers() {
    if (!reader_) return;
    std::vector<std::string> unexpected;
    for (const auto& info : reader_->tensors()) {
      if (used_.count(info.name)) continue;
      if (ignorable(info.name, opt_.with_mlm_head) ||
          (info.name.starts_with("classifier.") && fresh_classifier_)) {
        report_.ignored.push_back(info.name);
      } else {
        unexpected.push_back(info.name);
      }
    }
    if (!unexpected.empty()) {
      std::string list;
      for (size_t i = 0; i < unexpected.size() && i < 5; ++i) list += (i ? ", '" : "'") + unexpected[i] + "'";
      if (unexpected.size() > 5) list += " and " + std::to_string(unexpected.size() - 5) + " more";
      throw ModelError(reader_->label() + ": unexpected tensor" + (unexpected.size() > 1 ? "s " : " ") +
                       list + " (expected the tensors of BertForSequenceClassification with " +
                       std::to_string(cfg_.num_hidden_layers) + " layers: " + prefix_ +
                       "embeddings.*, " + prefix_ + "encoder.layer.{0.." +
                       std::to_string(cfg_.num_hidden_layers - 1) + "}.*, " + prefix_ +
                       "pooler.dense.*, classifier.*)");
    }
  }

  const std::string& prefix() const { return prefix_; }
  void set_fresh_classifier() { fresh_classifier_ = true; }
  bool from_file() const { return reader_.has_value(); }
  bool file_has(const std::string& name) const { return reader_ && reader_->find(name); }

 private:
  std::string file_name_of(const std::string& hf) const {
    if (prefix_.empty()) {
      if (!hf.starts_with("bert.")) return "";  // a bare BertModel has no heads
      return hf.substr(5);
    }
    return hf;
  }
  static std::string shape_str(const safetensors::TensorInfo& info) {
    std::string s = "(";
    for (size_t i = 0; i < info.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(info.shape[i]);
    return s + ")";
  }

  // A fresh tensor of the model as Hugging Face's _init_weights makes it, stored as `storage`:
  // LayerNorm weights 1, biases 0, other weights normal(0, initializer_range); the padding
  // token's embedding row 0.
  Tensor fresh_as(const std::string& hf, const Shape& shape, DType storage) {
    const bool is_norm_weight = hf.ends_with("LayerNorm.weight");
    const bool is_bias = hf.ends_with(".bias");
    const bool train = opt_.trainable && opt_.trainable(hf);
    if (is_quantized(storage) && !train && !is_norm_weight && !is_bias) {
      // Drawn and quantized a row at a time: no float copy of the whole matrix.
      report_.initialised.push_back(hf);
      const std::uint64_t seed = opt_.seed + fresh_count_++;
      Tensor q = quantized_empty(shape[0], shape[1], storage, MemCategory::BaseWeights);
      std::vector<float> row(static_cast<size_t>(shape[1]));
      for (std::int64_t r = 0; r < shape[0]; ++r) {
        if (hf == "bert.embeddings.word_embeddings.weight" && r == cfg_.pad_token_id) {
          std::fill(row.begin(), row.end(), 0.0f);
        } else {
          adapters::normal_values(row.data(), shape[1], cfg_.initializer_range, seed,
                                  static_cast<std::uint64_t>(r * shape[1]));
        }
        quantize_row(q, r, row.data());
      }
      q.set_name(hf);
      return q;
    }
    Tensor t = fresh(hf, shape, is_norm_weight ? '1' : is_bias ? '0' : 'n');
    if (hf == "bert.embeddings.word_embeddings.weight") {
      float* row = t.data<float>() + cfg_.pad_token_id * cfg_.hidden_size;
      std::fill_n(row, cfg_.hidden_size, 0.0f);
    }
    return t;
  }

  std::optional<safetensors::Reader> reader_;
  const LoadOptions& opt_;
  BertConfig& cfg_;
  LoadReport& report_;
  std::string prefix_;
  std::set<std::string> used_;
  bool fresh_classifier_ = false;
  std::uint64_t fresh_count_ = 0;
};

}  // namespace

namespace {

// Fills m (whose config is set) from the builder; file_labels: the classifier rows in the file.
void build(BertModel& m, Builder& b, const LoadOptions& opt, std::int64_t file_labels,
           LoadReport& report) {
  BertConfig& cfg = m.config;
  const std::int64_t c = cfg.hidden_size, f = cfg.intermediate_size;
  const DType base = opt.base;
  if (!(base == DType::F32 || is_quantized(base))) {
    throw std::invalid_argument("load_bert: base storage must be f32, q8 or q4");
  }

  m.word_embeddings = b.get("bert.embeddings.word_embeddings.weight", {cfg.vocab_size, c},
                            opt.quant_embeddings ? base : DType::F32);
  m.position_embeddings =
      b.get("bert.embeddings.position_embeddings.weight", {cfg.max_position_embeddings, c}, DType::F32);
  m.token_type_embeddings =
      b.get("bert.embeddings.token_type_embeddings.weight", {cfg.type_vocab_size, c}, DType::F32);
  m.embeddings_norm = b.norm("bert.embeddings.LayerNorm", c);
  for (std::int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = "bert.encoder.layer." + std::to_string(i) + ".";
    EncoderLayer l;
    l.query = b.linear(p + "attention.self.query", c, c, base);
    l.key = b.linear(p + "attention.self.key", c, c, base);
    l.value = b.linear(p + "attention.self.value", c, c, base);
    l.attention_output = b.linear(p + "attention.output.dense", c, c, base);
    l.attention_norm = b.norm(p + "attention.output.LayerNorm", c);
    l.intermediate = b.linear(p + "intermediate.dense", f, c, base);
    l.output = b.linear(p + "output.dense", c, f, base);
    l.output_norm = b.norm(p + "output.LayerNorm", c);
    m.layers.push_back(std::move(l));
  }
  if (b.has("bert.pooler.dense.weight")) {
    m.pooler = b.linear("bert.pooler.dense", c, c, base);
  } else {
    m.pooler.weight = b.fresh("bert.pooler.dense.weight", {c, c}, 'n');
    m.pooler.bias = b.fresh("bert.pooler.dense.bias", {c}, '0');
  }

  const std::string layout_head = b.has("classifier.weight") ? "sequence-classification" : "";
  const bool keep_classifier = b.has("classifier.weight") && cfg.num_labels == file_labels;
  if (keep_classifier) {
    m.classifier = b.linear("classifier", cfg.num_labels, c, DType::F32);
  } else {
    if (b.has("classifier.weight")) b.set_fresh_classifier();
    m.classifier.weight = b.fresh("classifier.weight", {cfg.num_labels, c}, 'n');
    m.classifier.bias = b.fresh("classifier.bias", {cfg.num_labels}, '0');
  }
  if (opt.with_mlm_head) {
    MlmHead h;
    if (b.has("cls.predictions.transform.dense.weight")) {
      h.transform = b.linear("cls.predictions.transform.dense", c, c, DType::F32);
      h.norm = b.norm("cls.predictions.transform.LayerNorm", c);
      h.decoder_bias = b.get("cls.predictions.bias", {cfg.vocab_size}, DType::F32);
    } else {
      h.transform.weight = b.fresh("cls.predictions.transform.dense.weight", {c, c}, 'n');
      h.transform.bias = b.fresh("cls.predictions.transform.dense.bias", {c}, '0');
      h.norm.weight = b.fresh("cls.predictions.transform.LayerNorm.weight", {c}, '1');
      h.norm.bias = b.fresh("cls.predictions.transform.LayerNorm.bias", {c}, '0');
      h.decoder_bias = b.fresh("cls.predictions.bias", {cfg.vocab_size}, '0');
    }
    m.mlm = std::move(h);
  }
  b.check_leftovers();
  if (b.prefix().empty()) {
    report.layout = "bare";
  } else if (!layout_head.empty()) {
    report.layout = layout_head;
  } else if (b.file_has("cls.predictions.bias")) {
    report.layout = "masked-lm";
  } else {
    report.layout = b.from_file() ? "bert" : "fresh";
  }
}

void apply_labels(BertConfig& cfg, const LoadOptions& opt) {
  if (!opt.id2label.empty()) {
    cfg.id2label = opt.id2label;
    cfg.num_labels = static_cast<std::int64_t>(opt.id2label.size());
  }
}

}  // namespace

BertModel load_bert(const fs::path& dir, const LoadOptions& opt, LoadReport* report_out) {
  LoadReport report;
  BertModel m;
  m.config = load_config(dir);
  const std::int64_t file_labels = m.config.num_labels;
  apply_labels(m.config, opt);
  std::error_code ec;
  if (!fs::exists(dir / "model.safetensors", ec)) {
    throw ModelError((dir / "model.safetensors").string() +
                     ": missing (expected the model's weights in safetensors format)");
  }
  Builder b(dir, opt, m.config, report);
  build(m, b, opt, file_labels, report);
  if (report_out) *report_out = std::move(report);
  return m;
}

BertModel init_bert(const BertConfig& config, const LoadOptions& opt) {
  LoadReport report;
  BertModel m;
  m.config = config;
  apply_labels(m.config, opt);
  m.config.validate("config");
  Builder b(opt, m.config, report);
  build(m, b, opt, m.config.num_labels, report);
  return m;
}

void save_bert(const BertModel& model, const fs::path& dir, const fs::path& source_dir,
               bool as_f16) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, t] : model.named_tensors()) {
    tensors.emplace_back(name, is_quantized(t.dtype()) ? t.to(DType::F32, MemCategory::Workspace) : t);
  }
  safetensors::save(dir / "model.safetensors", tensors, {{"format", "pt"}}, as_f16);
  nlohmann::json cfg = model.config.to_json();
  if (model.mlm) cfg["architectures"] = {"BertForMaskedLM"};
  write_file_atomic(dir / "config.json", cfg.dump(2) + "\n");
  if (!source_dir.empty() && fs::absolute(source_dir) != fs::absolute(dir)) {
    for (const char* name : {"vocab.txt", "tokenizer_config.json"}) {
      std::error_code ec;
      if (!fs::exists(source_dir / name, ec)) continue;
      write_file_atomic(dir / name, read_file(source_dir / name));
    }
  }
}

}  // namespace edgetune
