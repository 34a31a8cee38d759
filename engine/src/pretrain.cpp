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
#include "edgetune/adapters/init.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/batch.h"
#include "edgetune/data/error.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/planner.h"
#include "edgetune/engine/session.h"
#include "runner_impl.h"
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

std::vector<std::vector<std::int32_t>> tokenize_task_rows(const data::WordPieceTokenizer& tokenizer,
                                                          std::span<const fs::path> files) {
  std::vector<std::vector<std::int32_t>> docs;
  for (const fs::path& file : files) {
    const data::Dataset ds = read_data(file, DataOptions{}, false);
    for (const data::Example& ex : ds.examples) {
      std::vector<std::int32_t> doc;
      for (const std::string* text : {&ex.text, ex.text_pair ? &*ex.text_pair : nullptr}) {
        if (text == nullptr) continue;
        const data::Encoding e = tokenizer.encode(*text, std::nullopt, data::kNoTruncation);
        doc.insert(doc.end(), e.ids.begin() + 1, e.ids.end() - 1);  // without [CLS] and [SEP]
      }
      if (!doc.empty()) docs.push_back(std::move(doc));
    }
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
  if (!o.whole_words) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (special(ids[i])) continue;
      if (first_candidate < 0) first_candidate = static_cast<std::int32_t>(i);
      if (rng.uniform() < o.probability) choose(static_cast<std::int32_t>(i));
    }
    if (m.positions.empty() && first_candidate >= 0) choose(first_candidate);
    return m;
  }
  // Whole words: a word is a non-special piece and the "##" pieces that follow it; one draw per
  // word, then every piece of a chosen word is chosen (each replaced by its own draws, as above).
  auto continues = [&](std::int32_t id) { return !special(id) && tok.vocab().token(id).starts_with("##"); };
  size_t first_end = 0;
  for (size_t i = 0; i < ids.size();) {
    if (special(ids[i])) {
      ++i;
      continue;
    }
    size_t end = i + 1;
    while (end < ids.size() && continues(ids[end])) ++end;
    if (first_candidate < 0) {
      first_candidate = static_cast<std::int32_t>(i);
      first_end = end;
    }
    if (rng.uniform() < o.probability) {
      for (size_t k = i; k < end; ++k) choose(static_cast<std::int32_t>(k));
    }
    i = end;
  }
  if (m.positions.empty() && first_candidate >= 0) {
    for (size_t k = static_cast<size_t>(first_candidate); k < first_end; ++k) choose(static_cast<std::int32_t>(k));
  }
  return m;
}

MlmBatch make_mlm_batch(std::span<const MaskedSegment> rows, std::int32_t pad_id, std::size_t min_length) {
  if (rows.empty()) throw std::invalid_argument("make_mlm_batch: no rows");
  size_t t = min_length;
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

// ---- replaced-token detection (ELECTRA) ---------------------------------------------------------

std::vector<std::pair<std::string, Tensor>> RtdHead::named_tensors() const {
  return {{"discriminator_predictions.dense.weight", dense.weight},
          {"discriminator_predictions.dense.bias", dense.bias},
          {"discriminator_predictions.dense_prediction.weight", dense_prediction.weight},
          {"discriminator_predictions.dense_prediction.bias", dense_prediction.bias}};
}

RtdHead make_rtd_head(const BertConfig& config, std::uint64_t seed) {
  const std::int64_t c = config.hidden_size;
  RtdHead h;
  h.dense.weight = adapters::normal_param({c, c}, config.initializer_range, seed);
  h.dense.bias = adapters::zeros_param({c});
  h.dense_prediction.weight = adapters::normal_param({1, c}, config.initializer_range, seed + 1);
  h.dense_prediction.bias = adapters::zeros_param({1});
  return h;
}

BertModel make_generator(const BertModel& discriminator, int layers, std::uint64_t seed) {
  if (layers < 1) throw std::invalid_argument("make_generator: the generator needs at least one encoder layer");
  BertConfig c = discriminator.config;
  c.num_hidden_layers = layers;
  c.pruned_heads.clear();  // the generator's layers are fresh and whole
  c.intermediate_sizes.clear();
  LoadOptions lo;
  lo.base = DType::F32;
  lo.with_mlm_head = true;
  lo.seed = seed;
  lo.trainable = [](const std::string& name) { return in_masked_lm_checkpoint(name); };
  BertModel g = init_bert(c, lo);
  // ELECTRA ties the generator's embeddings to the discriminator's: the same tensors.
  g.word_embeddings = discriminator.word_embeddings;
  g.position_embeddings = discriminator.position_embeddings;
  g.token_type_embeddings = discriminator.token_type_embeddings;
  g.embeddings_norm = discriminator.embeddings_norm;
  return g;
}

namespace {
// One masked piece's draw from softmax(z) (V values): the first k whose cumulative probability
// exceeds u, in double, and the arg-max. `weights` is scratch for the V exponentials.
struct Draw {
  std::int32_t sample = 0, best = 0;
};
template <class T>
Draw draw_from_logits(const T* z, std::int64_t v, double u, std::vector<double>& weights) {
  Draw d;
  d.best = static_cast<std::int32_t>(std::max_element(z, z + v) - z);
  const double top = static_cast<double>(z[d.best]);
  weights.resize(static_cast<size_t>(v));
  double total = 0;
  for (std::int64_t i = 0; i < v; ++i) total += weights[static_cast<size_t>(i)] = std::exp(static_cast<double>(z[i]) - top);
  const double target = u * total;
  double cumulative = 0;
  d.sample = static_cast<std::int32_t>(v - 1);  // when u * total rounds above the last sum
  for (std::int64_t i = 0; i < v; ++i) {
    cumulative += weights[static_cast<size_t>(i)];
    if (cumulative > target) {
      d.sample = static_cast<std::int32_t>(i);
      break;
    }
  }
  return d;
}
}  // namespace

ElectraOutput electra_loss(const BertModel& generator, const BertModel& discriminator, const RtdHead& head,
                           const MlmBatch& batch, std::span<const std::uint64_t> sample_seeds,
                           double rtd_weight, const ForwardOptions& options) {
  const Tensor& ids = batch.inputs.input_ids;
  const std::int64_t b = ids.dim(0), t = ids.dim(1);
  if (static_cast<std::int64_t>(sample_seeds.size()) != b) {
    throw std::invalid_argument("electra_loss: " + std::to_string(sample_seeds.size()) + " sample seeds for " +
                                std::to_string(b) + " rows");
  }
  ElectraOutput out;
  // The generator: masked-LM at the masked positions.
  const Tensor gh = generator.encode(batch.inputs, options);
  const std::int64_t c = gh.dim(2);
  const Tensor logits = generator.mlm_logits(ops::gather_rows(ops::reshape(gh, {b * t, c}), batch.positions), options);
  out.masked = batch.positions.numel();
  out.generator_loss = ops::cross_entropy(logits, batch.labels);

  // The samples, and the discriminator's input and targets.
  const std::int64_t v = logits.dim(1);
  const std::int32_t* pos = batch.positions.data<std::int32_t>();
  const std::int32_t* lab = batch.labels.data<std::int32_t>();
  std::vector<std::int32_t> replaced_ids(ids.data<std::int32_t>(), ids.data<std::int32_t>() + b * t);
  std::vector<double> replaced(static_cast<size_t>(b * t), 0.0);
  std::optional<data::Rng> rng;
  std::int64_t row = -1;
  std::vector<double> weights;
  out.samples.resize(static_cast<size_t>(out.masked));
  for (std::int64_t k = 0; k < out.masked; ++k) {
    const std::int64_t r = pos[k] / t;
    if (r != row) {
      rng.emplace(sample_seeds[static_cast<size_t>(r)]);
      row = r;
    }
    const double u = rng->uniform();
    const Draw d = logits.dtype() == DType::F64 ? draw_from_logits(logits.data<double>() + k * v, v, u, weights)
                                                : draw_from_logits(logits.data<float>() + k * v, v, u, weights);
    const std::int32_t sample = d.sample, best = d.best;
    out.samples[static_cast<size_t>(k)] = sample;
    if (best == lab[k]) ++out.generator_correct;
    replaced_ids[static_cast<size_t>(pos[k])] = sample;
    if (sample != lab[k]) {
      replaced[static_cast<size_t>(pos[k])] = 1.0;
      ++out.replaced;
    }
  }

  // The discriminator: every non-padding token, replaced or not.
  const BertInputs di{Tensor::from_ints({b, t}, replaced_ids), batch.inputs.token_type_ids,
                      batch.inputs.attention_mask};
  const Tensor dh = discriminator.encode(di, options);
  const std::int32_t* mask = batch.inputs.attention_mask.data<std::int32_t>();
  std::vector<std::int32_t> tokens;
  std::vector<double> targets;
  for (std::int64_t i = 0; i < b * t; ++i) {
    if (mask[i] == 0) continue;
    tokens.push_back(static_cast<std::int32_t>(i));
    targets.push_back(replaced[static_cast<size_t>(i)]);
  }
  out.tokens = static_cast<std::int64_t>(tokens.size());
  const Shape n1{out.tokens, 1};
  const Tensor rows = ops::gather_rows(ops::reshape(dh, {b * t, c}), Tensor::from_ints({out.tokens}, tokens));
  const Tensor z = head.dense_prediction.forward(ops::gelu(head.dense.forward(rows, options)), options);  // (N, 1)
  out.rtd_loss = ops::bce_with_logits(z, Tensor::from_values(n1, targets, z.dtype(), MemCategory::Activations));
  for (std::int64_t i = 0; i < out.tokens; ++i) {
    const double zi = z.dtype() == DType::F64 ? z.data<double>()[i] : static_cast<double>(z.data<float>()[i]);
    if ((zi > 0) == (targets[static_cast<size_t>(i)] > 0.5)) ++out.rtd_correct;
  }
  out.loss = ops::add(out.generator_loss, ops::scale(out.rtd_loss, rtd_weight));
  return out;
}

// ---- settings -----------------------------------------------------------------------------------

bool in_masked_lm_checkpoint(const std::string& name) {
  return !name.starts_with("bert.pooler.") && !name.starts_with("classifier.");
}

nlohmann::json PretrainConfig::to_json() const { return settings::to_json(*this); }

PretrainConfig PretrainConfig::from_json(const nlohmann::json& j, const std::string& source) {
  return settings::from_json<PretrainConfig>(j, source);
}

void PretrainConfig::validate() const {
  settings::check_ranges(*this);
  if (masking.mask_fraction + masking.random_fraction > 1) {
    throw settings::SettingError("mask_fraction + random_fraction must be at most 1");
  }
}

// ---- the pretrainer -----------------------------------------------------------------------------

namespace {

// What the objectives' batches share: masked segments, their tokens, a part of them as a batch.
class MaskedStepBatch : public StepBatch {
 public:
  MaskedStepBatch(std::vector<MaskedSegment> rows, std::int32_t pad_id) : rows_(std::move(rows)), pad_id_(pad_id) {
    for (const MaskedSegment& r : rows_) longest_ = std::max(longest_, r.input_ids.size());
  }
  std::size_t rows() const override { return rows_.size(); }
  std::int64_t tokens() const override { return tokens_of(0, rows_.size()); }

 protected:
  std::int64_t tokens_of(std::size_t start, std::size_t n) const {
    std::int64_t t = 0;
    for (std::size_t i = start; i < start + n; ++i) t += static_cast<std::int64_t>(rows_[i].input_ids.size());
    return t;
  }
  MlmBatch part(std::size_t start, std::size_t n) const {
    // A micro-batch keeps the whole batch's length, so that its dropout masks are its rows' part of
    // the batch's (autograd's DropoutRows).
    return make_mlm_batch(std::span<const MaskedSegment>(rows_).subspan(start, n), pad_id_, longest_);
  }
  std::vector<MaskedSegment> rows_;
  std::int32_t pad_id_;
  std::size_t longest_ = 0;
};

// A batch of masked segments as the run layer's StepBatch: the loss of a part is the mean
// cross-entropy over its masked tokens.
class MlmStepBatch : public MaskedStepBatch {
 public:
  MlmStepBatch(const BertModel& model, std::vector<MaskedSegment> rows, std::int32_t pad_id)
      : MaskedStepBatch(std::move(rows), pad_id), model_(model) {}
  double units(std::size_t start, std::size_t n) const override {
    std::size_t m = 0;
    for (std::size_t i = start; i < start + n; ++i) m += rows_[i].positions.size();
    return static_cast<double>(m);
  }
  PartLoss loss(std::size_t start, std::size_t n, const ForwardOptions& fo) const override {
    const MlmBatch b = part(start, n);
    const MlmOutput out = mlm_loss(model_, model_.encode(b.inputs, fo), b.positions, b.labels, fo);
    return PartLoss{out.loss, out.correct, out.count};
  }

 private:
  const BertModel& model_;
};

// The seed of the generator's samples for one segment in one epoch: a stream apart from the masks'.
std::uint64_t sample_seed(std::uint64_t seed, std::uint64_t epoch, std::uint64_t segment) {
  return mix64(mask_seed(seed, epoch, segment) ^ 0x454C4543545241ULL);
}

// A batch of masked segments for ELECTRA: the loss of a part is electra_loss over it. Parts are
// whole batches (the pretrainer refuses micro-batches for ELECTRA), so units are only counted.
class ElectraStepBatch : public MaskedStepBatch {
 public:
  ElectraStepBatch(const BertModel& generator, const BertModel& discriminator, const RtdHead& head,
                   std::vector<MaskedSegment> rows, std::vector<std::uint64_t> seeds, std::int32_t pad_id,
                   double rtd_weight)
      : MaskedStepBatch(std::move(rows), pad_id), generator_(generator), discriminator_(discriminator),
        head_(head), seeds_(std::move(seeds)), rtd_weight_(rtd_weight) {}
  double units(std::size_t start, std::size_t n) const override { return static_cast<double>(tokens_of(start, n)); }
  PartLoss loss(std::size_t start, std::size_t n, const ForwardOptions& fo) const override {
    const ElectraOutput out = electra_loss(generator_, discriminator_, head_, part(start, n),
                                           std::span<const std::uint64_t>(seeds_).subspan(start, n), rtd_weight_, fo);
    return PartLoss{out.loss, out.rtd_correct, out.tokens};
  }

 private:
  const BertModel& generator_;
  const BertModel& discriminator_;
  const RtdHead& head_;
  std::vector<std::uint64_t> seeds_;
  double rtd_weight_;
};

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

// The pretraining mode of the run layer: masked segments of a corpus, the masked-LM loss,
// held-out evaluation every eval_every steps, the model saved with every checkpoint.
template <>
struct Runner<PretrainConfig, PretrainResult>::Impl : ModeState<PretrainConfig> {

  std::optional<data::WordPieceTokenizer> tokenizer;
  std::vector<std::vector<std::int32_t>> segments;
  std::vector<size_t> train_rows;          // indices into segments
  std::vector<MaskedSegment> eval_masked;  // held-out segments, masked once
  std::uint64_t corpus_hash = 0;           // of the segments: a resume must see the same

  BertModel model;
  std::optional<BertModel> generator;  // ELECTRA
  std::optional<RtdHead> rtd_head;     // ELECTRA
  std::vector<optim::Param> params;
  std::unique_ptr<optim::Optimizer> optimizer;
  Plan plan;
  std::optional<MlmEval> last_eval;

  void prepare();
  void save_model() const;
  MlmEval evaluate() const;

  // RunTask
  const std::vector<std::size_t>& rows() const override { return train_rows; }
  std::unique_ptr<StepBatch> batch(std::span<const std::size_t> rows, std::int64_t epoch) const override {
    std::vector<MaskedSegment> masked;
    std::vector<std::uint64_t> seeds;
    for (const size_t i : rows) {
      const auto e = static_cast<std::uint64_t>(epoch);
      masked.push_back(mask_segment(segments[i], *tokenizer, mask_seed(cfg.seed, e, i), cfg.masking));
      seeds.push_back(sample_seed(cfg.seed, e, i));
    }
    if (generator) {
      return std::make_unique<ElectraStepBatch>(*generator, model, *rtd_head, std::move(masked), std::move(seeds),
                                                tokenizer->pad_id(), cfg.rtd_weight);
    }
    return std::make_unique<MlmStepBatch>(model, std::move(masked), tokenizer->pad_id());
  }
  void after_step(TrainingRun& run, bool last) override {
    if (eval_masked.empty() || !(last || (cfg.eval_every > 0 && run.step() % cfg.eval_every == 0))) return;
    const MlmEval e = evaluate();
    char buf[300];
    if (e.rtd_accuracy) {
      std::snprintf(buf, sizeof buf,
                    "eval at step %lld: replaced-token detection loss %.4f, accuracy %.4f; generator masked-LM "
                    "loss %.4f, accuracy %.4f (%lld masked tokens)\n",
                    static_cast<long long>(run.step()), *e.rtd_loss, *e.rtd_accuracy, e.loss, e.accuracy,
                    static_cast<long long>(e.masked));
      say(buf);
      run.folder().add_metric({{"type", "eval"},
                               {"step", run.step()},
                               {"rtd_loss", *e.rtd_loss},
                               {"rtd_accuracy", *e.rtd_accuracy},
                               {"generator_mlm_loss", e.loss},
                               {"generator_mlm_accuracy", e.accuracy},
                               {"masked_tokens", e.masked},
                               {"segments", e.segments},
                               {"seconds", run.seconds()}});
    } else {
      std::snprintf(buf, sizeof buf, "eval at step %lld: masked-LM loss %.4f, accuracy %.4f (%lld masked tokens)\n",
                    static_cast<long long>(run.step()), e.loss, e.accuracy, static_cast<long long>(e.masked));
      say(buf);
      run.folder().add_metric({{"type", "eval"},
                               {"step", run.step()},
                               {"mlm_loss", e.loss},
                               {"mlm_accuracy", e.accuracy},
                               {"masked_tokens", e.masked},
                               {"segments", e.segments},
                               {"seconds", run.seconds()}});
    }
    last_eval = e;
  }
  void save_counters(std::map<std::string, std::string>& meta) const override {
    meta["corpus_hash"] = std::to_string(corpus_hash);
  }
  void load_counters(const std::function<const std::string&(const char*)>& get) override {
    if (std::stoull(get("corpus_hash")) != corpus_hash) {
      throw std::runtime_error((cfg.out / "train_state.safetensors").string() +
                               ": the corpus files differ from those the run started with "
                               "(the same files, unchanged, are needed to continue exactly)");
    }
  }
  // The model first: a state always has a model folder at least as new beside it.
  void before_checkpoint(const TrainingRun&) override { save_model(); }
};

void Pretrainer::Impl::prepare() {
  if (cfg.out.empty()) throw std::invalid_argument("--out RUN_DIR is required");
  if (cfg.corpus.empty() && cfg.task_data.empty()) {
    throw std::invalid_argument("pretraining needs text: --corpus FILE... or --task-data FILE...");
  }
  cfg.validate();
  const bool electra = cfg.objective == PretrainObjective::Electra;
  if (electra && (cfg.memory_budget > 0 || cfg.micro_batch > 0)) {
    throw settings::SettingError(
        "--objective electra takes no --memory-budget or --micro-batch: the planner does not count its "
        "generator, and its loss is not split into micro-batches");
  }
  context.threads = kernels::resolve_threads(cfg.threads);
  context.key = cfg.key;
  // A resumed run reads its model (with the MLM head) back from the run folder.
  const fs::path source = resuming ? cfg.out : cfg.model_dir;

  // Data.
  tokenizer.emplace(data::load_tokenizer_from_model_dir(source));
  const BertConfig base = load_config(source);
  if (tokenizer->vocab().size() > base.vocab_size) {
    throw ModelError((source / "vocab.txt").string() + " holds " + std::to_string(tokenizer->vocab().size()) +
                     " tokens but the model's vocab_size is " + std::to_string(base.vocab_size) +
                     " (create the model with this vocab.txt)");
  }
  if (cfg.max_length > base.max_position_embeddings) {
    throw settings::SettingError("max_length " + std::to_string(cfg.max_length) +
                                 " is longer than the model's max_position_embeddings (" +
                                 std::to_string(base.max_position_embeddings) + ")");
  }
  std::vector<std::vector<std::int32_t>> documents = tokenize_documents(*tokenizer, cfg.corpus);
  for (auto& d : tokenize_task_rows(*tokenizer, cfg.task_data)) documents.push_back(std::move(d));
  segments = pack_segments(documents, tokenizer->cls_id(),
                           tokenizer->sep_id(), cfg.max_length);
  corpus_hash = hash_segments(segments);
  if (segments.size() < 2) throw std::invalid_argument("the corpus gives fewer than 2 segments: give more text");
  const data::Split split = data::train_eval_split(segments.size(), cfg.eval_split, cfg.seed);
  train_rows = split.train;
  // The held-out segments are masked token by token whatever the training masking, so that
  // held-out losses compare between objectives (whole words or single pieces).
  MaskingOptions eval_masking = cfg.masking;
  eval_masking.whole_words = false;
  for (const size_t i : split.eval) {
    eval_masked.push_back(mask_segment(segments[i], *tokenizer, mask_seed(cfg.seed, kEvalEpoch, i), eval_masking));
  }

  // The plan: every tensor trains (float32), with the masked-LM head's logits at the masked rows.
  // Under a budget the baseline (planner.h) is measured now: the corpus's segments and the
  // tokenizer are in the heap, outside the accountant, and it includes them.
  BertConfig model_cfg = base;
  if (cfg.dropout) {
    model_cfg.hidden_dropout_prob = *cfg.dropout;
    model_cfg.attention_probs_dropout_prob = *cfg.dropout;
  }
  PlanRequest pr;
  pr.config = model_cfg;
  pr.method.method = Method::Full;
  pr.base = DType::F32;
  pr.batch = cfg.batch_size;
  std::int64_t longest = 3;
  for (const size_t i : train_rows) longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(segments[i].size()));
  pr.length = longest;
  pr.mlm_probability = cfg.masking.probability;
  if (cfg.memory_budget > 0 && cfg.budget_scope == BudgetScope::Process) pr.baseline = measure_baseline().total();
  plan = choose_plan(pr, cfg.memory_budget, cfg.checkpoint_layers, cfg.micro_batch);
  context.accountant->set_budget(plan.accountant_budget());
  if (electra) {
    say("plan: no memory budget (ELECTRA: the planner counts masked-LM pretraining only)\n");
  } else {
    say(plan.describe() + "\n");
  }

  // Model: every tensor but the pooler and the classifier trains (BertForMaskedLM has neither).
  LoadOptions lo;
  lo.base = DType::F32;
  lo.with_mlm_head = !electra;  // the discriminator has no masked-LM head
  lo.seed = cfg.seed;
  lo.trainable = [](const std::string& name) { return in_masked_lm_checkpoint(name); };
  model = load_bert(source, lo);
  model.config.hidden_dropout_prob = model_cfg.hidden_dropout_prob;
  model.config.attention_probs_dropout_prob = model_cfg.attention_probs_dropout_prob;
  params = trainable_params(model);
  if (electra) {
    // The generator's own tensors (its embeddings are the model's, already in params) and the
    // discriminator head; a resume restores them from train_state by these names.
    generator = make_generator(model, cfg.generator_layers, cfg.seed + 0x47454E);
    for (optim::Param& p : trainable_params(*generator)) {
      if (p.name.starts_with("bert.embeddings.")) continue;
      p.name = "generator." + p.name;
      params.push_back(std::move(p));
    }
    rtd_head = make_rtd_head(model.config, cfg.seed + 0x525444);
    for (const auto& [name, t] : rtd_head->named_tensors()) params.push_back({name, t, !name.ends_with(".bias")});
  }

  optimizer = optim::make_adamw(adam_options(cfg));
  manual_seed(cfg.seed);
  // Nothing is written before the data, the plan and the model are known to be good: a run that
  // fails to start leaves no folder behind.
  fs::create_directories(cfg.out);

  std::int64_t n_params = 0, tokens = 0;
  for (const auto& p : params) n_params += p.tensor.numel();
  if (electra) {
    std::int64_t generator_params = 0;
    for (const auto& p : params) {
      if (p.name.starts_with("generator.")) generator_params += p.tensor.numel();
    }
    std::ostringstream g;
    g << "ELECTRA: a generator of " << cfg.generator_layers << " layer(s) (" << generator_params
      << " parameters of its own, the embeddings shared), replaced-token detection weighted " << cfg.rtd_weight << "\n";
    say(g.str());
  }
  for (const size_t i : train_rows) tokens += static_cast<std::int64_t>(segments[i].size());
  std::ostringstream s;
  s << "model " << source.string() << ": " << model.config.num_hidden_layers << " layers, hidden "
    << model.config.hidden_size << ", intermediate " << model.config.intermediate_size << ", vocab "
    << model.config.vocab_size << ", " << n_params << " trainable parameters\n"
    << "corpus: " << segments.size() << " segments of up to " << cfg.max_length << " tokens; "
    << train_rows.size() << " for training (" << tokens << " tokens), " << eval_masked.size() << " held out\n";
  say(s.str());
}

void Pretrainer::Impl::save_model() const {
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
      if (fs::exists(cfg.model_dir / name, ec)) write_file_atomic(cfg.out / name, read_file(cfg.model_dir / name));
    }
  }
}

MlmEval Pretrainer::Impl::evaluate() const {
  NoGradGuard no_grad;
  MlmEval r;
  double loss_sum = 0, rtd_sum = 0;
  std::int64_t correct = 0, rtd_correct = 0, rtd_tokens = 0;
  ForwardOptions fo;
  for (size_t first = 0; first < eval_masked.size(); first += static_cast<size_t>(cfg.eval_batch_size)) {
    const size_t n = std::min(static_cast<size_t>(cfg.eval_batch_size), eval_masked.size() - first);
    const MlmBatch b =
        make_mlm_batch(std::span<const MaskedSegment>(eval_masked).subspan(first, n), tokenizer->pad_id());
    if (generator) {
      std::vector<std::uint64_t> seeds;
      for (size_t k = first; k < first + n; ++k) seeds.push_back(sample_seed(cfg.seed, kEvalEpoch, k));
      const ElectraOutput out = electra_loss(*generator, model, *rtd_head, b, seeds, cfg.rtd_weight, fo);
      loss_sum += out.generator_loss.item() * static_cast<double>(out.masked);
      correct += out.generator_correct;
      r.masked += out.masked;
      rtd_sum += out.rtd_loss.item() * static_cast<double>(out.tokens);
      rtd_correct += out.rtd_correct;
      rtd_tokens += out.tokens;
    } else {
      const MlmOutput out = mlm_loss(model, model.encode(b.inputs, fo), b.positions, b.labels, fo);
      loss_sum += out.loss.item() * static_cast<double>(out.count);
      correct += out.correct;
      r.masked += out.count;
    }
    r.segments += static_cast<std::int64_t>(n);
  }
  if (r.masked > 0) {
    r.loss = loss_sum / static_cast<double>(r.masked);
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.masked);
  }
  if (generator && rtd_tokens > 0) {
    r.rtd_loss = rtd_sum / static_cast<double>(rtd_tokens);
    r.rtd_accuracy = static_cast<double>(rtd_correct) / static_cast<double>(rtd_tokens);
  }
  return r;
}

template <>
PretrainResult Pretrainer::run(const RunHooks& hooks) {
  Impl& s = *impl_;
  const ContextScope scope(s.context);
  s.prepare();
  RunFolder folder(s.cfg.out);
  LoopSettings ls = loop_settings(s.cfg, s.cfg.lr, s.plan.micro_batch, s.plan.checkpoint_layers);
  ls.tokens_throughput = true;
  ls.accuracy_key = s.generator ? "rtd_accuracy" : "mlm_accuracy";
  ls.state_format = "edgetune-pretrain-state";
  ls.resume_command = "edgetune pretrain --resume";
  TrainingRun run(folder, s, s.params, *s.optimizer, std::move(ls), s.log, hooks);
  std::ostringstream line;
  line << "training: " << run.total_steps() << " steps of " << s.cfg.batch_size << " segments ("
       << run.steps_per_epoch() << " per epoch), lr " << s.cfg.lr << ", warmup " << run.schedule().warmup_steps()
       << " steps, " << kernels::num_threads() << " threads\n";
  s.say(line.str());
  nlohmann::json settings = s.cfg.to_json();
  // Absolute corpus paths: a resume may start from another folder.
  settings["corpus"] = nlohmann::json::array();
  for (const fs::path& f : s.cfg.corpus) settings["corpus"].push_back(fs::absolute(f).string());
  settings["task_data"] = nlohmann::json::array();
  for (const fs::path& f : s.cfg.task_data) settings["task_data"].push_back(fs::absolute(f).string());
  run.start(s.resuming, settings);
  const RunResult rr = run.run();
  PretrainResult result;
  result.steps = rr.steps;
  result.tokens = run.tokens_seen();
  result.seconds = rr.seconds;
  result.interrupted = rr.interrupted;
  result.final_eval = s.last_eval;
  result.accountant_peak = rr.accountant_peak;
  result.peak_rss = rr.peak_rss;
  return result;
}

// The members every mode shares (runner_impl.h), for this mode.
template class Runner<PretrainConfig, PretrainResult>;

}  // namespace edgetune
