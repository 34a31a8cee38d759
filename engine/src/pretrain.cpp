// Masked-language-model pretraining (see pretrain.h).
#include "edgetune/engine/pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/batch.h"
#include "edgetune/data/error.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/optim/clip.h"
#include "edgetune/optim/optimizer.h"
#include "edgetune/optim/schedule.h"

namespace edgetune {

namespace fs = std::filesystem;

// ---- corpus -------------------------------------------------------------------------------------

std::vector<std::vector<std::int32_t>> tokenize_documents(const data::WordPieceTokenizer& tokenizer,
                                                          std::span<const fs::path> files) {
  std::vector<std::vector<std::int32_t>> docs;
  std::vector<std::int32_t> doc;
  auto end_document = [&] {
    if (!doc.empty()) docs.push_back(std::move(doc));
    doc.clear();
  };
  for (const fs::path& file : files) {
    std::string text;
    try {
      text = read_file(file);
    } catch (const std::runtime_error& e) {
      throw data::DataError(file.string(),
                            std::string("cannot read the corpus file (") + e.what() + ")");
    }
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      const std::string_view line(text.data() + start, end - start);
      start = end + 1;
      if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) {
        end_document();
        continue;
      }
      const data::Encoding e = tokenizer.encode(line, std::nullopt, data::kNoTruncation);
      doc.insert(doc.end(), e.ids.begin() + 1, e.ids.end() - 1);  // without [CLS] and [SEP]
    }
    end_document();
  }
  return docs;
}

std::vector<std::vector<std::int32_t>> pack_segments(
    const std::vector<std::vector<std::int32_t>>& docs, std::int32_t cls_id, std::int32_t sep_id,
    int max_length) {
  if (max_length < 3) {
    throw std::invalid_argument(
        "pack_segments: max_length must be at least 3 ([CLS], a token, [SEP])");
  }
  const size_t room = static_cast<size_t>(max_length - 2);
  std::vector<std::vector<std::int32_t>> segments;
  std::vector<std::int32_t> content;  // tokens between [CLS] and [SEP]
  bool separator_pending = false;     // a document ended; its [SEP] goes before the next token
  auto flush = [&] {
    if (content.empty()) return;
    std::vector<std::int32_t> s;
    s.reserve(content.size() + 2);
    s.push_back(cls_id);
    s.insert(s.end(), content.begin(), content.end());
    s.push_back(sep_id);
    segments.push_back(std::move(s));
    content.clear();
  };
  for (const auto& doc : docs) {
    for (const std::int32_t id : doc) {
      // The separator is written only once a token follows it in the same segment: it neither
      // starts a segment nor doubles the closing [SEP].
      if (separator_pending && !content.empty() && content.size() + 1 < room)
        content.push_back(sep_id);
      separator_pending = false;
      if (content.size() == room) flush();
      content.push_back(id);
    }
    separator_pending = true;
  }
  flush();
  return segments;
}

// ---- masking ------------------------------------------------------------------------------------

namespace {
// splitmix64's finalizer: a bijective mix of 64 bits.
std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
// The "epoch" of the held-out masks: fixed, and never an epoch of training.
constexpr std::uint64_t kEvalEpoch = ~std::uint64_t{0};
}  // namespace

std::uint64_t mask_seed(std::uint64_t seed, std::uint64_t epoch, std::uint64_t segment) {
  return mix64(mix64(mix64(seed + 0x6D6C6D) ^ epoch) + segment);
}

MaskedSegment mask_segment(std::span<const std::int32_t> ids, const data::WordPieceTokenizer& tok,
                           std::uint64_t seed, const MaskingOptions& o) {
  const std::int32_t specials[] = {tok.pad_id(), tok.unk_id(), tok.cls_id(), tok.sep_id(),
                                   tok.mask_id()};
  auto special = [&](std::int32_t id) {
    return std::find(std::begin(specials), std::end(specials), id) != std::end(specials);
  };
  const std::uint64_t vocab = static_cast<std::uint64_t>(tok.vocab().size());
  // The collator's second draw is "random among the chosen that were not masked" with
  // probability random / (1 - mask): 0.5 for 80/10/10.
  const double random_given_unmasked =
      o.mask_fraction < 1 ? o.random_fraction / (1.0 - o.mask_fraction) : 0.0;
  data::Rng rng(seed);
  MaskedSegment m;
  m.input_ids.assign(ids.begin(), ids.end());
  std::int32_t first_candidate = -1;
  auto choose = [&](std::int32_t i) {
    m.positions.push_back(i);
    m.labels.push_back(ids[static_cast<size_t>(i)]);
    if (rng.uniform() < o.mask_fraction) {
      m.input_ids[static_cast<size_t>(i)] = tok.mask_id();
    } else if (rng.uniform() < random_given_unmasked) {
      m.input_ids[static_cast<size_t>(i)] = static_cast<std::int32_t>(rng.below(vocab));
    }
  };
  for (size_t i = 0; i < ids.size(); ++i) {
    if (special(ids[i])) continue;
    if (first_candidate < 0) first_candidate = static_cast<std::int32_t>(i);
    if (rng.uniform() < o.probability) choose(static_cast<std::int32_t>(i));
  }
  if (m.positions.empty() && first_candidate >= 0) choose(first_candidate);
  return m;
}

MlmBatch make_mlm_batch(std::span<const MaskedSegment> rows, std::int32_t pad_id) {
  if (rows.empty()) throw std::invalid_argument("make_mlm_batch: no rows");
  size_t t = 0;
  for (const MaskedSegment& r : rows) t = std::max(t, r.input_ids.size());
  const size_t b = rows.size();
  std::vector<std::int32_t> ids(b * t, pad_id), types(b * t, 0), mask(b * t, 0), positions, labels;
  MlmBatch out;
  for (size_t i = 0; i < b; ++i) {
    const MaskedSegment& r = rows[i];
    if (r.positions.empty())
      throw std::invalid_argument("make_mlm_batch: a segment has no masked token");
    std::copy(r.input_ids.begin(), r.input_ids.end(),
              ids.begin() + static_cast<std::ptrdiff_t>(i * t));
    std::fill_n(mask.begin() + static_cast<std::ptrdiff_t>(i * t), r.input_ids.size(), 1);
    out.tokens += static_cast<std::int64_t>(r.input_ids.size());
    for (size_t k = 0; k < r.positions.size(); ++k) {
      positions.push_back(static_cast<std::int32_t>(i * t) + r.positions[k]);
      labels.push_back(r.labels[k]);
    }
  }
  const Shape bt{static_cast<std::int64_t>(b), static_cast<std::int64_t>(t)};
  out.inputs = {Tensor::from_ints(bt, ids), Tensor::from_ints(bt, types),
                Tensor::from_ints(bt, mask)};
  const Shape m{static_cast<std::int64_t>(positions.size())};
  out.positions = Tensor::from_ints(m, positions);
  out.labels = Tensor::from_ints(m, labels);
  return out;
}

// ---- loss ---------------------------------------------------------------------------------------

namespace {
template <class T>
std::int64_t count_correct(const T* logits, const std::int32_t* labels, std::int64_t m,
                           std::int64_t v) {
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < m; ++i) {
    const T* row = logits + i * v;
    if (std::max_element(row, row + v) - row == labels[i]) ++correct;
  }
  return correct;
}
}  // namespace

MlmOutput mlm_loss(const BertModel& model, const Tensor& hidden, const Tensor& positions,
                   const Tensor& labels, const ForwardOptions& options) {
  if (hidden.rank() != 3)
    throw std::invalid_argument("mlm_loss: hidden must be (B, T, C), got " + hidden.shape().str());
  const std::int64_t rows = hidden.dim(0) * hidden.dim(1), c = hidden.dim(2);
  // Only the masked rows reach the head: the (M, V) logits are ~15 % of the (B*T, V) ones.
  const Tensor picked = ops::gather_rows(ops::reshape(hidden, {rows, c}), positions);  // (M, C)
  const Tensor logits = model.mlm_logits(picked, options);                             // (M, V)
  MlmOutput out;
  out.count = positions.numel();
  out.loss = ops::cross_entropy(logits, labels);
  const std::int64_t v = logits.dim(1);
  out.correct =
      logits.dtype() == DType::F64
          ? count_correct(logits.data<double>(), labels.data<std::int32_t>(), out.count, v)
          : count_correct(logits.data<float>(), labels.data<std::int32_t>(), out.count, v);
  return out;
}

// ---- settings -----------------------------------------------------------------------------------

bool in_masked_lm_checkpoint(const std::string& name) {
  return !name.starts_with("bert.pooler.") && !name.starts_with("classifier.");
}

nlohmann::json PretrainConfig::to_json() const {
  nlohmann::json files = nlohmann::json::array();
  for (const fs::path& f : corpus) files.push_back(f.string());
  return {{"model", model_dir.string()},
          {"corpus", files},
          {"out", out.string()},
          {"max_length", max_length},
          {"batch_size", batch_size},
          {"lr", lr},
          {"weight_decay", weight_decay},
          {"adam_beta1", adam_beta1},
          {"adam_beta2", adam_beta2},
          {"adam_eps", adam_eps},
          {"warmup_ratio", warmup_ratio},
          {"max_grad_norm", max_grad_norm},
          {"epochs", epochs},
          {"max_steps", max_steps},
          {"seed", seed},
          {"dropout", dropout ? nlohmann::json(*dropout) : nlohmann::json(nullptr)},
          {"threads", threads},
          {"eval_split", eval_split},
          {"eval_every", eval_every},
          {"save_every", save_every},
          {"log_every", log_every},
          {"eval_batch_size", eval_batch_size},
          {"save_f16", save_f16},
          {"mlm_probability", masking.probability},
          {"mask_fraction", masking.mask_fraction},
          {"random_fraction", masking.random_fraction}};
}

PretrainConfig PretrainConfig::from_json(const nlohmann::json& j) {
  PretrainConfig c;
  c.model_dir = j.at("model").get<std::string>();
  for (const auto& f : j.at("corpus")) c.corpus.emplace_back(f.get<std::string>());
  c.out = j.at("out").get<std::string>();
  c.max_length = j.at("max_length").get<int>();
  c.batch_size = j.at("batch_size").get<int>();
  c.lr = j.at("lr").get<double>();
  c.weight_decay = j.at("weight_decay").get<double>();
  c.adam_beta1 = j.at("adam_beta1").get<double>();
  c.adam_beta2 = j.at("adam_beta2").get<double>();
  c.adam_eps = j.at("adam_eps").get<double>();
  c.warmup_ratio = j.at("warmup_ratio").get<double>();
  c.max_grad_norm = j.at("max_grad_norm").get<double>();
  c.epochs = j.at("epochs").get<int>();
  c.max_steps = j.at("max_steps").get<std::int64_t>();
  c.seed = j.at("seed").get<std::uint64_t>();
  if (!j.at("dropout").is_null()) c.dropout = j.at("dropout").get<double>();
  c.threads = j.at("threads").get<int>();
  c.eval_split = j.at("eval_split").get<double>();
  c.eval_every = j.at("eval_every").get<std::int64_t>();
  c.save_every = j.at("save_every").get<std::int64_t>();
  c.log_every = j.at("log_every").get<int>();
  c.eval_batch_size = j.at("eval_batch_size").get<int>();
  c.save_f16 = j.at("save_f16").get<bool>();
  c.masking.probability = j.at("mlm_probability").get<double>();
  c.masking.mask_fraction = j.at("mask_fraction").get<double>();
  c.masking.random_fraction = j.at("random_fraction").get<double>();
  return c;
}

// ---- the pretrainer -----------------------------------------------------------------------------

struct Pretrainer::Impl {
  PretrainConfig cfg;
  std::ostream* log = nullptr;
  bool resuming = false;

  std::optional<data::WordPieceTokenizer> tokenizer;
  std::vector<std::vector<std::int32_t>> segments;
  std::vector<size_t> train_rows;          // indices into segments
  std::vector<MaskedSegment> eval_masked;  // held-out segments, masked once
  std::uint64_t corpus_hash = 0;           // of the segments: a resume must see the same

  BertModel model;
  std::vector<optim::Param> params;
  std::unique_ptr<optim::Optimizer> optimizer;
  std::optional<optim::Schedule> schedule;

  // Progress (saved in train_state.safetensors).
  std::int64_t step = 0;
  std::int64_t epoch = 0;
  std::int64_t batch_in_epoch = 0;
  std::int64_t tokens_seen = 0;
  double seconds_before = 0;  // training time of earlier sessions of the run
  double loss_acc = 0;        // since the last progress line
  std::int64_t loss_n = 0, correct_acc = 0, count_acc = 0;
  std::vector<std::string> metrics;

  std::int64_t steps_per_epoch = 0;
  std::int64_t total_steps = 0;

  void say(const std::string& s) {
    if (log) *log << s << std::flush;
  }
  void prepare();
  void save_model();
  // seconds: the run's training time so far (all sessions).
  void save_state(double seconds);
  void load_state();
  void write_metrics() {
    std::string text;
    for (const auto& l : metrics) text += l + "\n";
    write_file_atomic(cfg.out / "metrics.jsonl", text);
  }
  void add_metric(const nlohmann::json& j) {
    metrics.push_back(j.dump());
    write_metrics();
  }
  MlmEval evaluate();
};

namespace {
// FNV-1a over the segments' ids and lengths.
std::uint64_t hash_segments(const std::vector<std::vector<std::int32_t>>& segments) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  auto add = [&](std::uint64_t x) {
    for (int i = 0; i < 8; ++i) {
      h ^= (x >> (8 * i)) & 0xFF;
      h *= 0x100000001b3ULL;
    }
  };
  for (const auto& s : segments) {
    add(s.size());
    for (const std::int32_t id : s) add(static_cast<std::uint32_t>(id));
  }
  return h;
}
}  // namespace

void Pretrainer::Impl::prepare() {
  if (cfg.batch_size < 1 || cfg.epochs < 1 || cfg.eval_batch_size < 1) {
    throw std::invalid_argument("--batch-size and --epochs must be at least 1");
  }
  if (cfg.max_length < 3) throw std::invalid_argument("--max-length must be at least 3");
  if (cfg.out.empty()) throw std::invalid_argument("--out RUN_DIR is required");
  if (cfg.corpus.empty()) throw std::invalid_argument("--corpus needs at least one text file");
  if (!(cfg.eval_split >= 0 && cfg.eval_split < 1))
    throw std::invalid_argument("--eval-split must be in [0, 1)");
  kernels::set_num_threads(cfg.threads);
  fs::create_directories(cfg.out);
  // A resumed run reads its model (with the MLM head) back from the run folder.
  const fs::path source = resuming ? cfg.out : cfg.model_dir;

  // Data.
  tokenizer.emplace(data::load_tokenizer_from_model_dir(source));
  const BertConfig base = load_config(source);
  if (tokenizer->vocab().size() > base.vocab_size) {
    throw ModelError((source / "vocab.txt").string() + " holds " +
                     std::to_string(tokenizer->vocab().size()) +
                     " tokens but the model's vocab_size is " + std::to_string(base.vocab_size) +
                     " (create the model with this vocab.txt)");
  }
  if (cfg.max_length > base.max_position_embeddings) {
    throw std::invalid_argument("--max-length " + std::to_string(cfg.max_length) +
                                " is longer than the model's " + "max_position_embeddings (" +
                                std::to_string(base.max_position_embeddings) + ")");
  }
  segments = pack_segments(tokenize_documents(*tokenizer, cfg.corpus), tokenizer->cls_id(),
                           tokenizer->sep_id(), cfg.max_length);
  corpus_hash = hash_segments(segments);
  if (segments.size() < 2)
    throw std::invalid_argument("the corpus gives fewer than 2 segments: give more text");
  const data::Split split = data::train_eval_split(segments.size(), cfg.eval_split, cfg.seed);
  train_rows = split.train;
  for (const size_t i : split.eval) {
    eval_masked.push_back(
        mask_segment(segments[i], *tokenizer, mask_seed(cfg.seed, kEvalEpoch, i), cfg.masking));
  }

  // Model: every tensor but the pooler and the classifier trains (BertForMaskedLM has neither).
  LoadOptions lo;
  lo.base = DType::F32;
  lo.with_mlm_head = true;
  lo.seed = cfg.seed;
  lo.trainable = [](const std::string& name) { return in_masked_lm_checkpoint(name); };
  model = load_bert(source, lo);
  if (cfg.dropout) {
    model.config.hidden_dropout_prob = *cfg.dropout;
    model.config.attention_probs_dropout_prob = *cfg.dropout;
  }
  params = trainable_params(model);

  optim::AdamOptions ao;
  ao.beta1 = cfg.adam_beta1;
  ao.beta2 = cfg.adam_beta2;
  ao.eps = cfg.adam_eps;
  ao.weight_decay = cfg.weight_decay;
  optimizer = optim::make_adamw(ao);
  steps_per_epoch =
      (static_cast<std::int64_t>(train_rows.size()) + cfg.batch_size - 1) / cfg.batch_size;
  total_steps = cfg.max_steps > 0 ? cfg.max_steps : steps_per_epoch * cfg.epochs;
  schedule.emplace(optim::Schedule::Kind::Linear,
                   optim::warmup_steps_from_ratio(total_steps, cfg.warmup_ratio), total_steps);
  manual_seed(cfg.seed);

  std::int64_t n_params = 0, tokens = 0;
  for (const auto& p : params) n_params += p.tensor.numel();
  for (const size_t i : train_rows) tokens += static_cast<std::int64_t>(segments[i].size());
  std::ostringstream s;
  s << "model " << source.string() << ": " << model.config.num_hidden_layers << " layers, hidden "
    << model.config.hidden_size << ", intermediate " << model.config.intermediate_size << ", vocab "
    << model.config.vocab_size << ", " << n_params << " trainable parameters\n"
    << "corpus: " << segments.size() << " segments of up to " << cfg.max_length << " tokens; "
    << train_rows.size() << " for training (" << tokens << " tokens), " << eval_masked.size()
    << " held out\n"
    << "training: " << total_steps << " steps of " << cfg.batch_size << " segments ("
    << steps_per_epoch << " per epoch), lr " << cfg.lr << ", warmup " << schedule->warmup_steps()
    << " steps, " << kernels::num_threads() << " threads\n";
  say(s.str());
}

void Pretrainer::Impl::save_model() {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, t] : model.named_tensors()) {
    if (in_masked_lm_checkpoint(name)) tensors.emplace_back(name, t);
  }
  safetensors::save(cfg.out / "model.safetensors", tensors, {{"format", "pt"}}, cfg.save_f16);
  nlohmann::json c = model.config.to_json();
  c["architectures"] = {"BertForMaskedLM"};
  // The saved model's dropout is the model's own, not the run's override.
  const BertConfig original = load_config(resuming ? cfg.out : cfg.model_dir);
  c["hidden_dropout_prob"] = original.hidden_dropout_prob;
  c["attention_probs_dropout_prob"] = original.attention_probs_dropout_prob;
  write_file_atomic(cfg.out / "config.json", c.dump(2) + "\n");
  if (!resuming) {
    for (const char* name : {"vocab.txt", "tokenizer_config.json"}) {
      std::error_code ec;
      if (fs::exists(cfg.model_dir / name, ec))
        write_file_atomic(cfg.out / name, read_file(cfg.model_dir / name));
    }
  }
}

// train_state.safetensors: "param/<name>" float32 parameters, "optim/<entry>" AdamW state, the
// counters in the metadata (doubles as JSON, which prints them exactly).
void Pretrainer::Impl::save_state(double seconds) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& p : params) tensors.emplace_back("param/" + p.name, p.tensor);
  for (auto& [name, t] : optimizer->state()) tensors.emplace_back("optim/" + name, t);
  const RngState rng = dropout_rng();
  const std::map<std::string, std::string> meta = {
      {"format", "edgetune-pretrain-state"},
      {"version", "1"},
      {"step", std::to_string(step)},
      {"epoch", std::to_string(epoch)},
      {"batch_in_epoch", std::to_string(batch_in_epoch)},
      {"tokens_seen", std::to_string(tokens_seen)},
      {"seconds", nlohmann::json(seconds).dump()},
      {"loss_acc", nlohmann::json(loss_acc).dump()},
      {"loss_n", std::to_string(loss_n)},
      {"correct_acc", std::to_string(correct_acc)},
      {"count_acc", std::to_string(count_acc)},
      {"rng_seed", std::to_string(rng.seed)},
      {"rng_counter", std::to_string(rng.counter)},
      {"corpus_hash", std::to_string(corpus_hash)},
      {"metrics_lines", std::to_string(metrics.size())},
  };
  // The model first: a state always has a model folder at least as new beside it.
  save_model();
  safetensors::save(cfg.out / "train_state.safetensors", tensors, meta);
}

void Pretrainer::Impl::load_state() {
  const fs::path path = cfg.out / "train_state.safetensors";
  safetensors::Reader r(path);
  const auto meta = r.metadata();
  auto get = [&](const char* key) -> const std::string& {
    const auto it = meta.find(key);
    if (it == meta.end())
      throw std::runtime_error(path.string() + ": no '" + key + "' in the metadata");
    return it->second;
  };
  if (get("format") != "edgetune-pretrain-state") {
    throw std::runtime_error(
        path.string() +
        ": not a pretraining state (a fine-tuning run resumes with `edgetune train --resume`)");
  }
  if (std::stoull(get("corpus_hash")) != corpus_hash) {
    throw std::runtime_error(path.string() +
                             ": the corpus files differ from those the run started with "
                             "(the same files, unchanged, are needed to continue exactly)");
  }
  step = std::stoll(get("step"));
  epoch = std::stoll(get("epoch"));
  batch_in_epoch = std::stoll(get("batch_in_epoch"));
  tokens_seen = std::stoll(get("tokens_seen"));
  seconds_before = nlohmann::json::parse(get("seconds")).get<double>();
  loss_acc = nlohmann::json::parse(get("loss_acc")).get<double>();
  loss_n = std::stoll(get("loss_n"));
  correct_acc = std::stoll(get("correct_acc"));
  count_acc = std::stoll(get("count_acc"));
  dropout_rng() = RngState{std::stoull(get("rng_seed")), std::stoull(get("rng_counter"))};
  const size_t lines = std::stoul(get("metrics_lines"));
  for (auto& p : params) {
    const Tensor saved = r.load("param/" + p.name, DType::F32, MemCategory::Workspace);
    if (saved.shape() != p.tensor.shape()) {
      throw std::runtime_error(path.string() + ": 'param/" + p.name + "' has shape " +
                               saved.shape().str() + ", the model's is " + p.tensor.shape().str());
    }
    std::copy_n(saved.data<float>(), saved.numel(), p.tensor.data<float>());
  }
  std::vector<std::pair<std::string, Tensor>> state;
  for (const auto& info : r.tensors()) {
    if (info.name.starts_with("optim/")) {
      state.emplace_back(
          info.name.substr(6),
          r.load(info, info.dtype == "F64" ? DType::F64 : DType::F32, MemCategory::Workspace));
    }
  }
  optimizer->load_state(state, params);
  std::ifstream in(cfg.out / "metrics.jsonl");
  std::string line;
  while (metrics.size() < lines && std::getline(in, line)) metrics.push_back(line);
}

MlmEval Pretrainer::Impl::evaluate() {
  NoGradGuard no_grad;
  MlmEval r;
  double loss_sum = 0;
  std::int64_t correct = 0;
  ForwardOptions fo;
  for (size_t first = 0; first < eval_masked.size();
       first += static_cast<size_t>(cfg.eval_batch_size)) {
    const size_t n = std::min(static_cast<size_t>(cfg.eval_batch_size), eval_masked.size() - first);
    const MlmBatch b = make_mlm_batch(std::span<const MaskedSegment>(eval_masked).subspan(first, n),
                                      tokenizer->pad_id());
    const MlmOutput out = mlm_loss(model, model.encode(b.inputs, fo), b.positions, b.labels, fo);
    loss_sum += out.loss.item() * static_cast<double>(out.count);
    correct += out.correct;
    r.masked += out.count;
    r.segments += static_cast<std::int64_t>(n);
  }
  if (r.masked > 0) {
    r.loss = loss_sum / static_cast<double>(r.masked);
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.masked);
  }
  return r;
}

Pretrainer::Pretrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pretrainer::~Pretrainer() = default;
Pretrainer::Pretrainer(Pretrainer&&) noexcept = default;

Pretrainer::Pretrainer(PretrainConfig config, std::ostream* log) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
  impl_->log = log;
}

Pretrainer Pretrainer::resume(const fs::path& run_dir, std::ostream* log,
                              std::optional<int> threads) {
  const fs::path run_json = run_dir / "run.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(run_json));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(run_json.string() + ": not a run description (" + e.what() + ")");
  }
  std::error_code ec;
  if (!fs::exists(run_dir / "train_state.safetensors", ec)) {
    throw std::runtime_error((run_dir / "train_state.safetensors").string() +
                             ": missing: the run saved no checkpoint yet (use --save-every N)");
  }
  auto impl = std::make_unique<Impl>();
  impl->cfg = PretrainConfig::from_json(j);
  impl->cfg.out = run_dir;
  if (threads) impl->cfg.threads = *threads;
  impl->log = log;
  impl->resuming = true;
  return Pretrainer(std::move(impl));
}

PretrainResult Pretrainer::run(const std::function<bool()>& should_stop) {
  Impl& s = *impl_;
  using clock = std::chrono::steady_clock;
  s.prepare();
  if (s.resuming) {
    s.load_state();
    s.write_metrics();
    s.say("resumed at step " + std::to_string(s.step) + " (epoch " + std::to_string(s.epoch + 1) +
          ")\n");
  } else {
    nlohmann::json j = s.cfg.to_json();
    // Absolute corpus paths: a resume may start from another folder.
    j["corpus"] = nlohmann::json::array();
    for (const fs::path& f : s.cfg.corpus) j["corpus"].push_back(fs::absolute(f).string());
    write_file_atomic(s.cfg.out / "run.json", j.dump(2) + "\n");
    s.write_metrics();
  }
  const auto t0 = clock::now();
  auto elapsed = [&] {
    return s.seconds_before + std::chrono::duration<double>(clock::now() - t0).count();
  };
  Accountant& acc = Accountant::global();
  PretrainResult result;
  auto last_log = clock::now();
  std::int64_t tokens_at_log = s.tokens_seen;
  const auto eval_and_log = [&] {
    const MlmEval e = s.evaluate();
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "eval at step %lld: masked-LM loss %.4f, accuracy %.4f (%lld masked tokens)\n",
                  static_cast<long long>(s.step), e.loss, e.accuracy,
                  static_cast<long long>(e.masked));
    s.say(buf);
    s.add_metric({{"type", "eval"},
                  {"step", s.step},
                  {"mlm_loss", e.loss},
                  {"mlm_accuracy", e.accuracy},
                  {"masked_tokens", e.masked},
                  {"segments", e.segments},
                  {"tokens_seen", s.tokens_seen},
                  {"seconds", elapsed()}});
    return e;
  };

  bool done = s.step >= s.total_steps;
  while (!done) {
    // The order of an epoch depends only on (seed, epoch): a resume rebuilds it.
    std::vector<size_t> order = s.train_rows;
    data::Rng rng(s.cfg.seed + 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(s.epoch + 1));
    data::shuffle(std::span<size_t>(order), rng);
    const auto batches = data::batch_rows(order, static_cast<size_t>(s.cfg.batch_size));
    while (!done && static_cast<size_t>(s.batch_in_epoch) < batches.size()) {
      std::vector<MaskedSegment> rows;
      for (const size_t i : batches[static_cast<size_t>(s.batch_in_epoch)]) {
        rows.push_back(mask_segment(s.segments[i], *s.tokenizer,
                                    mask_seed(s.cfg.seed, static_cast<std::uint64_t>(s.epoch), i),
                                    s.cfg.masking));
      }
      const MlmBatch batch = make_mlm_batch(rows, s.tokenizer->pad_id());
      const double lr = s.cfg.lr * s.schedule->factor(s.step);
      ForwardOptions fo;
      fo.training = true;
      const MlmOutput out =
          mlm_loss(s.model, s.model.encode(batch.inputs, fo), batch.positions, batch.labels, fo);
      const double loss = out.loss.item();
      if (!std::isfinite(loss)) {
        throw std::runtime_error("the loss became " + std::to_string(loss) + " at step " +
                                 std::to_string(s.step + 1) +
                                 ": lower --lr, or keep --max-grad-norm on");
      }
      backward(out.loss);
      const double norm = optim::clip_grad_norm(s.params, s.cfg.max_grad_norm);
      s.optimizer->step(s.params, lr);
      optim::zero_grad(s.params);
      ++s.step;
      ++s.batch_in_epoch;
      s.tokens_seen += batch.tokens;
      s.loss_acc += loss;
      ++s.loss_n;
      s.correct_acc += out.correct;
      s.count_acc += out.count;
      done = s.step >= s.total_steps;

      if (s.step % std::max(s.cfg.log_every, 1) == 0 || done) {
        const auto now = clock::now();
        const double dt = std::chrono::duration<double>(now - last_log).count();
        const double tps = dt > 0 ? static_cast<double>(s.tokens_seen - tokens_at_log) / dt : 0.0;
        const double epoch_pos =
            static_cast<double>(s.epoch) +
            static_cast<double>(s.batch_in_epoch) / static_cast<double>(batches.size());
        const double mean_loss = s.loss_acc / static_cast<double>(s.loss_n);
        const double accuracy = static_cast<double>(s.correct_acc) /
                                static_cast<double>(std::max<std::int64_t>(s.count_acc, 1));
        const double eta = tps > 0 ? static_cast<double>(s.total_steps - s.step) *
                                         static_cast<double>(s.tokens_seen) /
                                         static_cast<double>(s.step) / tps
                                   : 0.0;
        const MemoryStats ms = acc.stats();
        char buf[360];
        std::snprintf(buf, sizeof buf,
                      "step %lld/%lld  epoch %.2f  loss %.4f  acc %.3f  lr %.3g  grad-norm %.3g  "
                      "%.0f tokens/s  "
                      "eta %.0f min  mem %s (peak %s)\n",
                      static_cast<long long>(s.step), static_cast<long long>(s.total_steps),
                      epoch_pos, mean_loss, accuracy, lr, norm, tps, eta / 60.0,
                      format_bytes(ms.live_total + ms.cached).c_str(),
                      format_bytes(ms.peak_total).c_str());
        s.say(buf);
        s.add_metric({{"type", "train"},
                      {"step", s.step},
                      {"epoch", epoch_pos},
                      {"loss", mean_loss},
                      {"mlm_accuracy", accuracy},
                      {"lr", lr},
                      {"grad_norm", norm},
                      {"tokens_per_second", tps},
                      {"tokens_seen", s.tokens_seen},
                      {"seconds", elapsed()},
                      {"memory_peak", ms.peak_total},
                      {"rss", process_rss()}});
        s.loss_acc = 0;
        s.loss_n = s.correct_acc = s.count_acc = 0;
        last_log = now;
        tokens_at_log = s.tokens_seen;
      }
      if (!s.eval_masked.empty() &&
          (done || (s.cfg.eval_every > 0 && s.step % s.cfg.eval_every == 0))) {
        result.final_eval = eval_and_log();
      }
      if (!done && should_stop && should_stop()) {
        result.interrupted = true;
        break;
      }
      if (!done && s.cfg.save_every > 0 && s.step % s.cfg.save_every == 0) {
        s.save_state(elapsed());
        s.say("checkpoint at step " + std::to_string(s.step) + " in " + s.cfg.out.string() + "\n");
      }
    }
    if (result.interrupted) break;
    if (static_cast<size_t>(s.batch_in_epoch) >= batches.size()) {
      ++s.epoch;
      s.batch_in_epoch = 0;
    }
  }
  const double total_seconds = elapsed();
  s.save_state(total_seconds);
  if (result.interrupted) {
    s.say("interrupted at step " + std::to_string(s.step) + ": checkpoint saved in " +
          s.cfg.out.string() + "; continue with: edgetune pretrain --resume " + s.cfg.out.string() +
          "\n");
  }
  result.steps = s.step;
  result.tokens = s.tokens_seen;
  result.seconds = total_seconds;
  result.accountant_peak = acc.stats().peak_total;
  result.peak_rss = process_peak_rss();
  return result;
}

}  // namespace edgetune
