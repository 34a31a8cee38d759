// Masked-language-model pretraining of a BERT with Hugging Face's BertForMaskedLM semantics: the
// pieces (corpus packing, dynamic masking, the masked-LM loss) and the Pretrainer that runs them
// into a run folder with evaluation, checkpoints and resume.
//
// The corpus: plain-text files, one paragraph per line; a blank line (or the end of a file) ends a
// document. Documents are tokenized with the model's tokenizer and concatenated, in file order,
// into one stream with a [SEP] after every document, which is cut into segments of max_length - 2
// tokens, each written [CLS] ... [SEP] with token type 0 (RoBERTa's "full sentences": no padding
// but in the last segment, and a model that sees document boundaries). A separator that would
// start a segment, or end one just before its closing [SEP], is dropped.
//
// Masking as transformers' DataCollatorForLanguageModeling (mlm_probability 0.15): each token
// that is not a special ([PAD] [UNK] [CLS] [SEP] [MASK]) is chosen with probability 0.15; a chosen
// token becomes [MASK] with probability 0.8, else a random id in [0, V) with probability 0.5 (so
// 10 % of all chosen), else stays as it is; the loss is taken at the chosen positions only. The
// draws come from a generator seeded by (seed, epoch, segment), so masks change every epoch
// (dynamic masking), do not depend on batch order or threads, and a resumed run sees the same
// ones. One difference from the collator: a segment where no token was chosen gets one chosen
// token (its first non-special token, replaced as any chosen one), so no batch is ever without a
// target. The held-out segments are masked once, with a fixed generator: their loss is comparable
// between evaluations.
//
// Whole-word masking (--whole-word-masking, as BERT's released wwm models and transformers'
// DataCollatorForWholeWordMask): the 15 % draw is made per word, a piece with the "##" pieces that
// follow it, and a chosen word has all its pieces chosen, each replaced 80/10/10 as above. So each
// piece is still chosen with probability 0.15, but the model cannot recover a masked piece from
// the rest of its word. (The collator instead picks words in random order until 15 % of the
// tokens are covered; a draw per word keeps segments independent of each other's lengths and the
// masks seeded per segment as above.) Chinese text gains nothing from it here: every CJK character
// is a word of its own, and the segmentation into words that Chinese wwm models use is not built.
// The held-out segments are masked token by token in either mode, so held-out losses compare.
//
// The loss: the hidden states (B, T, C) of the encoder are gathered at the M masked positions
// (M, C) before the MLM head, so the V-wide logits exist only for the masked rows:
//   loss = mean over the M rows of cross_entropy(decoder(LayerNorm(act(dense(h_m)))), label_m)
// with the decoder tied to the word embeddings (bert.h, BertModel::mlm_logits), as
// BertForMaskedLM's loss with label -100 everywhere else.
//
// Replaced-token detection (--objective electra, Clark et al. 2020, "ELECTRA"): a small generator
// (the model's config with --generator-layers encoder layers, its own masked-LM head) shares the
// model's embeddings (word, position, token type and their LayerNorm: the same tensors, as ELECTRA
// ties them) and is trained with the masked-LM loss above on the masked segments. At each masked
// position a token is sampled from the generator's softmax (no gradient through the sample); the
// model, the discriminator, reads the segment with the samples in place and predicts, for every
// non-padding token, whether it was replaced (a sample equal to the original counts as original):
//   loss = generator masked-LM loss + rtd_weight * mean over the tokens of
//          bce_with_logits(dense_prediction(gelu(dense(h_t))), replaced_t)
// with ELECTRA's discriminator head (discriminator_predictions.dense (C, C), .dense_prediction
// (1, C)) and rtd_weight 50 as in the paper. The samples are drawn with a generator seeded by
// (seed, epoch, segment), like the masks, so a resumed run draws the same ones. What is saved is
// the discriminator, the model to fine-tune: the encoder and its embeddings under BertForMaskedLM's
// names, and no cls.* head (it never trained one; loading it for more masked-LM training makes a
// fresh head). The generator and the discriminator head live in train_state (resume) only.
// Held-out evaluation reports the generator's masked-LM loss and the discriminator's accuracy on
// the held-out segments; the discriminator has no masked-LM loss, so the objectives compare on
// what fine-tuning makes of them (bench/objective_table.sh).
//
// What this is not: next-sentence prediction (BertForPreTraining's second head), or mixed
// precision.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/data/tokenizer.h"
#include "edgetune/engine/bert.h"
#include "edgetune/engine/run.h"
#include "edgetune/engine/settings.h"

namespace edgetune {

// ---- corpus -------------------------------------------------------------------------------------

// Token ids of each document of the files, in order (no [CLS] / [SEP]); empty documents are
// skipped. Throws data::DataError naming a file that cannot be read.
std::vector<std::vector<std::int32_t>> tokenize_documents(
    const data::WordPieceTokenizer& tokenizer, std::span<const std::filesystem::path> files);

// Task-adaptive pretraining's text (Gururangan et al. 2020): the rows of task files (TSV, CSV or
// JSONL, labelled or not, read as `train` reads them with the columns guessed from the header),
// each row's text (and its pair, after it) one document, in file and row order; rows whose text
// is empty are skipped. Throws data::DataError (file:line: what was expected) for a bad row or a
// file without a recognisable text column.
std::vector<std::vector<std::int32_t>> tokenize_task_rows(
    const data::WordPieceTokenizer& tokenizer, std::span<const std::filesystem::path> files);

// The documents packed into segments of at most max_length tokens, as described above.
// Requires max_length >= 3 (std::invalid_argument).
std::vector<std::vector<std::int32_t>> pack_segments(
    const std::vector<std::vector<std::int32_t>>& documents, std::int32_t cls_id,
    std::int32_t sep_id, int max_length);

// ---- masking ------------------------------------------------------------------------------------

struct MaskingOptions {
  double probability = 0.15;     // of a non-special token being chosen
  double mask_fraction = 0.8;    // of the chosen: replaced by [MASK]
  double random_fraction = 0.1;  // of the chosen: replaced by a random id (the rest: kept)
  // Whole-word masking: the draw of `probability` is made once per word (a piece and the "##"
  // pieces after it) and chooses all its pieces, so a word is never half visible.
  bool whole_words = false;
};

// What pretraining optimises: masked-LM, or ELECTRA's replaced-token detection (above).
enum class PretrainObjective { MaskedLm, Electra };
inline constexpr settings::Choice<PretrainObjective> kPretrainObjectiveNames[] = {
    {PretrainObjective::MaskedLm, "mlm"}, {PretrainObjective::Electra, "electra"}};

struct MaskedSegment {
  std::vector<std::int32_t> input_ids;  // (T) the segment after replacement
  std::vector<std::int32_t> positions;  // (M) indices of the chosen tokens, ascending
  std::vector<std::int32_t> labels;     // (M) the original ids there
};

// The seed of the masks of one segment in one epoch (a hash of the three).
std::uint64_t mask_seed(std::uint64_t seed, std::uint64_t epoch, std::uint64_t segment);

// Masks one segment with a generator seeded by `seed` (mask_seed). Specials are the tokenizer's
// [PAD] [UNK] [CLS] [SEP] [MASK]; random ids are drawn from [0, vocabulary size).
// Ensures at least one position when the segment has a non-special token.
MaskedSegment mask_segment(std::span<const std::int32_t> ids,
                           const data::WordPieceTokenizer& tokenizer, std::uint64_t seed,
                           const MaskingOptions& options = {});

// A batch of masked segments as the model takes it.
struct MlmBatch {
  BertInputs inputs;        // (B, T): T the longest segment (or min_length); [PAD] after shorter ones
  Tensor positions;         // (M) I32: row-major positions b * T + t of the masked tokens
  Tensor labels;            // (M) I32: the original ids there
  std::int64_t tokens = 0;  // non-padding tokens of the batch
};
// Requires rows not empty and every segment with at least one position (std::invalid_argument).
// min_length pads every row to at least that many tokens (a micro-batch, to its batch's length).
MlmBatch make_mlm_batch(std::span<const MaskedSegment> rows, std::int32_t pad_id, std::size_t min_length = 0);

// ---- loss ---------------------------------------------------------------------------------------

struct MlmOutput {
  Tensor loss;               // scalar: mean cross-entropy over the masked tokens
  std::int64_t correct = 0;  // masked tokens whose arg-max prediction is the label
  std::int64_t count = 0;    // M
};

// The masked-LM loss of hidden states h (B, T, C) at `positions` (M) I32 with `labels` (M) I32:
// gather_rows(h as (B*T, C), positions) -> model.mlm_logits -> cross_entropy. Differentiable in h
// and in every tensor of the MLM head and the (tied) word embeddings. Requires model.mlm.
MlmOutput mlm_loss(const BertModel& model, const Tensor& hidden, const Tensor& positions,
                   const Tensor& labels, const ForwardOptions& options);

// ---- replaced-token detection (ELECTRA) ---------------------------------------------------------

// ELECTRA's discriminator head: logit = dense_prediction(gelu(dense(h))), one per token.
struct RtdHead {
  LinearLayer dense;             // (C, C)
  LinearLayer dense_prediction;  // (1, C)
  // The head's tensors under ElectraForPreTraining's names (discriminator_predictions.*).
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;
};
// A fresh head for hidden size `config.hidden_size`: normal(0, initializer_range) weights, zero
// biases, trainable float32.
RtdHead make_rtd_head(const BertConfig& config, std::uint64_t seed);

// The generator of `discriminator` (which must have been loaded with its embeddings float32 and
// trainable): `layers` fresh encoder layers and a fresh masked-LM head (init_bert with `seed`),
// and the discriminator's embedding tensors themselves (shared, not copied).
// Requires 1 <= layers (std::invalid_argument).
BertModel make_generator(const BertModel& discriminator, int layers, std::uint64_t seed);

struct ElectraOutput {
  Tensor loss;                 // generator_loss + rtd_weight * rtd_loss (scalar)
  Tensor generator_loss;       // the generator's masked-LM loss (scalar)
  Tensor rtd_loss;             // mean binary cross-entropy over the non-padding tokens (scalar)
  std::int64_t masked = 0;     // M
  std::int64_t generator_correct = 0;  // masked tokens the generator's arg-max gets right
  std::int64_t tokens = 0;     // non-padding tokens the discriminator judged
  std::int64_t rtd_correct = 0;        // of them, judged right (logit > 0 means replaced)
  std::int64_t replaced = 0;   // masked tokens whose sample differs from the original
  std::vector<std::int32_t> samples;  // (M) the sampled ids, in the order of batch.positions
};

// ELECTRA's loss of one batch, as described above. sample_seeds holds one seed per row of the
// batch: the draws of row r's masked positions come from data::Rng(sample_seeds[r]), in position
// order, each by inverting the cumulative softmax (in double) of the generator's logits.
ElectraOutput electra_loss(const BertModel& generator, const BertModel& discriminator, const RtdHead& head,
                           const MlmBatch& batch, std::span<const std::uint64_t> sample_seeds,
                           double rtd_weight, const ForwardOptions& options);

// ---- the pretrainer -----------------------------------------------------------------------------

struct PretrainConfig : MemorySettings {
  std::filesystem::path model_dir;            // the starting model (e.g. from create-model)
  std::vector<std::filesystem::path> corpus;  // plain-text files
  std::vector<std::filesystem::path> task_data;  // task files whose rows' texts are documents
  std::filesystem::path out;                  // the run folder
  int max_length = 128;                       // T, [CLS] and [SEP] included
  int batch_size = 32;                        // segments per optimizer step
  double lr = 5e-4;
  double weight_decay = 0.01;  // not on biases and LayerNorm parameters
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  double warmup_ratio = 0.05;     // linear warmup, then linear decay to 0
  double max_grad_norm = 1.0;     // 0: no clipping
  int epochs = 1;                 // passes over the training segments
  std::int64_t max_steps = 0;     // > 0: this many steps, whatever the epochs
  std::uint64_t seed = 42;        // split, order, masks, dropout, fresh heads
  std::optional<double> dropout;  // overrides the model's dropout probabilities
  int threads = 0;                // 0: all cores
  double eval_split = 0.01;       // fraction of segments held out (0: none)
  std::int64_t eval_every = 500;  // steps between evaluations (0: only at the end)
  std::int64_t save_every = 0;    // steps between checkpoints (0: only at epoch ends and the end)
  int log_every = 10;             // steps between progress lines
  int eval_batch_size = 64;
  bool save_f16 = false;  // model.safetensors in half precision
  MaskingOptions masking;
  PretrainObjective objective = PretrainObjective::MaskedLm;
  int generator_layers = 1;  // ELECTRA: the generator's encoder layers
  double rtd_weight = 50;    // ELECTRA: the weight of the replaced-token-detection loss
  // memory_budget, micro_batch, checkpoint_layers: MemorySettings (run.h).

  // The settings table (settings.h); defaults are the initialisers above.
  template <class Self, class V>
  static void fields(Self& c, V& v) {
    using namespace settings;
    v("model", c.model_dir, "the starting BERT folder (e.g. from `edgetune create-model`); its vocab.txt tokenizes");
    v("corpus", c.corpus, "plain-text files: one paragraph per line, a blank line between documents");
    v("task_data", c.task_data,
      "task files (TSV/CSV/JSONL as train reads them, labels ignored): each row's text is a "
      "document; task-adaptive pretraining continues a model on them");
    v("out", c.out, "run folder: the pretrained model, metrics.jsonl, checkpoints");
    v("max_length", c.max_length, "tokens per segment, [CLS] and [SEP] included", at_least(3));
    v("batch_size", c.batch_size, "segments per optimizer step", at_least(1));
    v("lr", c.lr, "peak learning rate (AdamW)", at_least(0));
    v("weight_decay", c.weight_decay, "weight decay (not on biases and LayerNorm)", at_least(0));
    v("adam_beta1", c.adam_beta1, "AdamW's beta1", below(0, 1));
    v("adam_beta2", c.adam_beta2, "AdamW's beta2 (0.98 as RoBERTa for a steadier start)", below(0, 1));
    v("adam_eps", c.adam_eps, "AdamW's epsilon", at_least(0));
    v("warmup_ratio", c.warmup_ratio, "fraction of the steps warming up linearly; then linear decay",
      in_range(0, 1));
    v("max_grad_norm", c.max_grad_norm, "clip the gradient norm (0: off)", at_least(0));
    v("epochs", c.epochs, "passes over the training segments", at_least(1));
    v("max_steps", c.max_steps, "run exactly N optimizer steps (overrides --epochs)", at_least(0));
    v("seed", c.seed, "seed of the split, order, masks, dropout and fresh heads");
    v("dropout", c.dropout, "override the model's dropout probabilities (0: deterministic)", below(0, 1));
    v("threads", c.threads, "threads for the kernels (0: all cores)", at_least(0));
    v("eval_split", c.eval_split, "fraction of segments held out for evaluation", below(0, 1));
    v("eval_every", c.eval_every, "steps between held-out evaluations (0: at the end only)", at_least(0));
    v("save_every", c.save_every, "write a checkpoint every N steps", at_least(0));
    v("log_every", c.log_every, "steps between progress lines", at_least(1));
    v("eval_batch_size", c.eval_batch_size, "segments per forward pass of evaluation", at_least(1));
    v("save_f16", c.save_f16, "save model.safetensors in half precision (half the bytes)", with_flag("--f16"));
    v("mlm_probability", c.masking.probability, "fraction of tokens chosen for prediction", above(0));
    v("mask_fraction", c.masking.mask_fraction, "of the chosen tokens, the fraction replaced by [MASK]",
      in_range(0, 1));
    v("random_fraction", c.masking.random_fraction,
      "of the chosen tokens, the fraction replaced by a random token", in_range(0, 1));
    v("whole_word_masking", c.masking.whole_words,
      "choose whole words: a piece and its ## continuations are masked together");
    v("objective", c.objective, kPretrainObjectiveNames,
      "mlm: masked-LM; electra: replaced-token detection with a small generator (ELECTRA)");
    v("generator_layers", c.generator_layers, "ELECTRA: encoder layers of the generator", at_least(1));
    v("rtd_weight", c.rtd_weight, "ELECTRA: weight of the replaced-token-detection loss", at_least(0));
    MemorySettings::fields(c, v);
  }

  nlohmann::json to_json() const;
  // The defaults with the keys of j over them; unknown keys and values are errors naming the key.
  static PretrainConfig from_json(const nlohmann::json& j, const std::string& source = "options");
  // Every range of the table and the checks across fields; one line naming the setting.
  void validate() const;
};

struct MlmEval {
  double loss = 0;          // mean cross-entropy over the masked tokens (ELECTRA: the generator's)
  double accuracy = 0;      // fraction of masked tokens predicted exactly (ELECTRA: the generator's)
  std::int64_t masked = 0;  // masked tokens evaluated
  std::int64_t segments = 0;
  // ELECTRA only: the discriminator on the held-out segments with the generator's samples.
  std::optional<double> rtd_loss, rtd_accuracy;
};

struct PretrainResult {
  std::int64_t steps = 0;
  std::int64_t tokens = 0;  // non-padding tokens trained on, over the whole run
  double seconds = 0;       // training time over the whole run (resumes included)
  bool interrupted = false;
  std::optional<MlmEval> final_eval;
  std::size_t accountant_peak = 0;
  std::size_t peak_rss = 0;
};

// Pretrains into cfg.out:
//   config.json (architectures BertForMaskedLM), model.safetensors (the encoder and cls.*; no
//       pooler, no classifier, as BertForMaskedLM saves), vocab.txt, tokenizer_config.json:
//       a Hugging Face folder that load_bert reads for classification (cls.* ignored, a fresh
//       pooler and classifier) or, with_mlm_head, for more pretraining
//   run.json                  the settings (what --resume continues with)
//   metrics.jsonl             one JSON object per logged step ("type": "train") and evaluation
//                             ("type": "eval": mlm_loss, mlm_accuracy)
//   train_state.safetensors   float32 parameters, AdamW moments, step, position in the data,
//                             dropout generator: everything a resume needs
// written atomically at every checkpoint and at the end. Resuming with the same thread count
// ends with the same bytes as an uninterrupted run.
// The model is read back from the run folder itself on resume.
using Pretrainer = Runner<PretrainConfig, PretrainResult>;
template <>
PretrainResult Pretrainer::run(const RunHooks& hooks);
extern template class Runner<PretrainConfig, PretrainResult>;

// The tensors a BertForMaskedLM checkpoint holds (no pooler, no classifier): true for a name
// save_pretrained writes.
bool in_masked_lm_checkpoint(const std::string& name);

}  // namespace edgetune
