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
#include "edgetune/engine/model_file.h"

namespace edgetune {

namespace fs = std::filesystem;

BertConfig load_config(const fs::path& dir) {
  if (is_model_file(dir)) return ModelFile(dir, false).config();
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

std::vector<BertTensor> bert_tensors(BertModel& model, const LoadOptions& opt) {
  std::vector<BertTensor> out;
  for (const TensorSlot& s : model.tensor_slots()) {
    const bool trainable = opt.trainable && opt.trainable(s.name);
    const bool embeddings =
        s.kind == TensorKind::WordEmbeddings || s.kind == TensorKind::PositionEmbeddings;
    const bool base = s.kind == TensorKind::BaseMatrix || (embeddings && opt.quant_embeddings);
    // The position table is added to every token and is small (P rows): q8 even over a q4 base.
    const DType quantized = s.kind == TensorKind::PositionEmbeddings ? DType::Q8 : opt.base;
    const DType storage = trainable || !base                ? DType::F32
                          : is_quantized(opt.base)          ? quantized
                                                            : opt.base;
    out.push_back({s.name, s.shape, storage, trainable,
                   trainable ? MemCategory::Trainable : MemCategory::BaseWeights, s.tensor});
  }
  return out;
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

  // `mapped`: the reader is a model file's, whose frozen tensors are used in place.
  Builder(std::shared_ptr<const safetensors::Reader> reader, bool mapped, const LoadOptions& opt,
          BertConfig& cfg, LoadReport& report)
      : reader_(std::move(reader)), mapped_(mapped), opt_(opt), cfg_(cfg), report_(report) {
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

  // The tensor `t` from the file, checked against its expected shape and stored as the table
  // says; a fresh one as Hugging Face initialises it when there is no file.
  Tensor get(const BertTensor& t) {
    if (!reader_) return fresh(t);
    const std::string file_name = file_name_of(t.name);
    const safetensors::TensorInfo* info = file_name.empty() ? nullptr : reader_->find(file_name);
    if (info == nullptr) {
      throw ModelError(reader_->label() + ": missing tensor '" + (file_name.empty() ? t.name : file_name) +
                       "' (expected shape " + t.shape.str() + " from config.json)");
    }
    const Shape got(std::span<const std::int64_t>(info->shape.data(), info->shape.size()));
    const bool packed = mapped_ && info->dtype == "U8";  // 4-bit codes: (N, ceil(K/2)), checked by map()
    if (!packed && (info->shape.size() > 4 || got != t.shape)) {
      throw ModelError(reader_->label() + ": tensor '" + file_name + "' has shape " + shape_str(*info) +
                       ", expected " + t.shape.str() + " from config.json (hidden_size " +
                       std::to_string(cfg_.hidden_size) + ", intermediate_size " +
                       std::to_string(cfg_.intermediate_size) + ", vocab_size " +
                       std::to_string(cfg_.vocab_size) + ")");
    }
    Tensor out = mapped_ ? map(t, *info) : reader_->load(*info, t.storage, t.category);
    if (!out.is_mapped()) reader_->release(*info);
    used_.insert(file_name);
    out.set_name(t.name);
    if (t.trainable) out.set_requires_grad(true);
    return out;
  }

  // A model file's tensor `t`: frozen ones used in place from the mapping (codes beside their
  // "<name>.scales", as quant_file_layout gives them), trainable ones copied as float32.
  Tensor map(const BertTensor& t, const safetensors::TensorInfo& info) {
    const QuantFileLayout layout =
        is_quantized(t.storage) ? quant_file_layout(t.shape[0], t.shape[1], t.storage) : QuantFileLayout{"F32", {}, {}};
    const char* expected = layout.codes_dtype;
    if (t.trainable) {
      if (info.dtype != "F32") {
        throw ModelError(reader_->label() + ": tensor '" + info.name + "' is stored " + info.dtype +
                         " and cannot be trained (train it from an f32 model file or the folder)");
      }
      return reader_->load(info, DType::F32, t.category);
    }
    if (info.dtype != expected) {
      throw ModelError(reader_->label() + ": tensor '" + info.name + "' is " + info.dtype + ", expected " +
                       expected + " for " + dtype_name(t.storage) + " storage");
    }
    if (!is_quantized(t.storage)) {
      return Tensor::mapped(t.shape, DType::F32, reader_, reader_->bytes(info).data(), nullptr, t.category);
    }
    const safetensors::TensorInfo* s = reader_->find(info.name + ".scales");
    if (info.shape != layout.codes || s == nullptr || s->dtype != "F32" || s->shape != layout.scales) {
      throw ModelError(reader_->label() + ": tensor '" + info.name + "' is not " + dtype_name(t.storage) +
                       " codes of shape " + t.shape.str() + " with F32 '" + info.name +
                       ".scales' (a corrupt model file?)");
    }
    used_.insert(s->name);
    return Tensor::mapped(t.shape, t.storage, reader_, reader_->bytes(info).data(),
                          reinterpret_cast<const float*>(reader_->bytes(*s).data()), t.category);
  }

  // A fresh tensor as Hugging Face's _init_weights makes it, stored as `t.storage`: LayerNorm
  // weights 1, biases 0, other weights normal(0, initializer_range); the padding token's
  // embedding row 0.
  Tensor fresh(const BertTensor& t) {
    report_.initialised.push_back(t.name);
    const bool is_norm_weight = t.name.ends_with("LayerNorm.weight");
    const bool is_bias = t.name.ends_with(".bias");
    const bool word_embeddings = t.name == "bert.embeddings.word_embeddings.weight";
    if (is_quantized(t.storage)) {
      // Drawn and quantized a row (pal4: a palette's group of rows) at a time: no float copy of
      // the whole matrix.
      const std::uint64_t seed = opt_.seed + fresh_count_++;
      const std::int64_t n = t.shape[0], k = t.shape[1], group = quant_row_group(t.storage);
      Tensor q = quantized_empty(n, k, t.storage, t.category);
      std::vector<float> rows(static_cast<size_t>(group * k));
      for (std::int64_t r0 = 0; r0 < n; r0 += group) {
        const std::int64_t count = std::min(group, n - r0);
        for (std::int64_t r = r0; r < r0 + count; ++r) {
          float* row = rows.data() + (r - r0) * k;
          if (word_embeddings && r == cfg_.pad_token_id) {
            std::fill_n(row, k, 0.0f);
          } else {
            adapters::normal_values(row, k, cfg_.initializer_range, seed, static_cast<std::uint64_t>(r * k));
          }
        }
        quantize_rows(q, r0, count, rows.data());
      }
      q.set_name(t.name);
      return q;
    }
    Tensor out = is_norm_weight ? adapters::ones_param(t.shape, t.trainable)
                 : is_bias      ? adapters::zeros_param(t.shape, t.trainable)
                                : adapters::normal_param(t.shape, cfg_.initializer_range,
                                                         opt_.seed + fresh_count_++, 0, t.trainable);
    if (word_embeddings) {
      float* row = out.data<float>() + cfg_.pad_token_id * cfg_.hidden_size;
      std::fill_n(row, cfg_.hidden_size, 0.0f);
    }
    out.set_name(t.name);
    return out;
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
  bool from_file() const { return reader_ != nullptr; }
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

  std::shared_ptr<const safetensors::Reader> reader_;
  bool mapped_ = false;
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

// Fills m (laid out by bert_layout) from the builder, walking bert_tensors; file_labels: the
// classifier rows in the file.
void build(BertModel& m, Builder& b, const LoadOptions& opt, std::int64_t file_labels,
           LoadReport& report) {
  if (!(opt.base == DType::F32 || is_quantized(opt.base))) {
    throw std::invalid_argument("load_bert: base storage must be f32, q8, q4, nf4 or pal4");
  }
  const bool has_pooler = b.has("bert.pooler.dense.weight");
  m.fresh_pooler = !has_pooler;
  const bool has_classifier = b.has("classifier.weight");
  const bool keep_classifier = has_classifier && m.config.num_labels == file_labels;
  if (has_classifier && !keep_classifier) b.set_fresh_classifier();
  const bool has_mlm_head = b.has("cls.predictions.transform.dense.weight");
  for (BertTensor& t : bert_tensors(m, opt)) {
    const bool missing = (t.name.starts_with("bert.pooler.") && !has_pooler) ||
                         (t.name.starts_with("classifier.") && !keep_classifier) ||
                         (t.name.starts_with("cls.") && !has_mlm_head);
    if (missing) {
      // A head the file lacks (or a classifier for other labels) is initialised float32 whatever
      // the base storage.
      t.storage = DType::F32;
      *t.slot = b.fresh(t);
    } else {
      *t.slot = b.get(t);
    }
  }
  b.check_leftovers();
  if (b.prefix().empty()) {
    report.layout = "bare";
  } else if (has_classifier) {
    report.layout = "sequence-classification";
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

namespace {

// A model file: its storage must be the one asked for (re-quantizing is compress's), and its
// embeddings load as the file stores them.
BertModel load_model_file(const fs::path& path, const LoadOptions& asked, LoadReport& report) {
  const ModelFile file(path);
  if (file.quant_embeddings() && asked.trainable &&
      (asked.trainable("bert.embeddings.word_embeddings.weight") ||
       asked.trainable("bert.embeddings.position_embeddings.weight"))) {
    throw ModelError(file.label() + ": the model file stores its embeddings " + dtype_name(file.storage()) +
                     ", and full fine-tuning trains them, which needs float32 (fine-tune with lora, adapter, "
                     "bitfit or head, or compress the model without --quant-embeddings)");
  }
  if (asked.base != file.storage()) {
    throw ModelError(file.label() + ": the model file stores " + dtype_name(file.storage()) +
                     " base weights, not " + dtype_name(asked.base) + " (leave --quant out, or give --quant " +
                     dtype_name(file.storage()) + "; re-quantize with edgetune compress)");
  }
  if (asked.quant_embeddings && !file.quant_embeddings()) {
    throw ModelError(file.label() + ": the model file keeps its embeddings float32 (leave --quant-embeddings "
                     "out; quantizing them is edgetune compress --quant-embeddings's job)");
  }
  LoadOptions opt = asked;
  opt.quant_embeddings = file.quant_embeddings();
  BertConfig config = file.config();
  const std::int64_t file_labels = config.num_labels;
  apply_labels(config, opt);
  BertModel m = bert_layout(config, opt.with_mlm_head);
  Builder b(file.reader(), true, opt, m.config, report);
  build(m, b, opt, file_labels, report);
  return m;
}

}  // namespace

BertModel load_bert(const fs::path& dir, const LoadOptions& opt, LoadReport* report_out) {
  LoadReport report;
  if (is_model_file(dir)) {
    BertModel m = load_model_file(dir, opt, report);
    if (report_out) *report_out = std::move(report);
    return m;
  }
  BertConfig config = load_config(dir);
  const std::int64_t file_labels = config.num_labels;
  apply_labels(config, opt);
  std::error_code ec;
  if (!fs::exists(dir / "model.safetensors", ec)) {
    throw ModelError((dir / "model.safetensors").string() +
                     ": missing (expected the model's weights in safetensors format)");
  }
  BertModel m = bert_layout(config, opt.with_mlm_head);
  Builder b(std::make_shared<const safetensors::Reader>(dir / "model.safetensors"), false, opt, m.config,
            report);
  build(m, b, opt, file_labels, report);
  if (report_out) *report_out = std::move(report);
  return m;
}

BertModel init_bert(const BertConfig& config, const LoadOptions& opt) {
  LoadReport report;
  BertConfig labelled = config;
  apply_labels(labelled, opt);
  labelled.validate("config");
  BertModel m = bert_layout(labelled, opt.with_mlm_head);
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
