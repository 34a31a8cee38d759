// A model ready to use: the BERT classifier with its method's adapters, its tokenizer and its
// labels, plus the batched evaluation and prediction loops the trainer, the command line and the
// C++ API share.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "edgetune/data/batch.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/reader.h"
#include "edgetune/data/tokenizer.h"
#include "edgetune/engine/bert.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/metrics.h"
#include "edgetune/engine/settings.h"

namespace edgetune {

inline constexpr settings::Choice<DType> kQuantNames[] = {
    {DType::F32, "f32"}, {DType::Q8, "q8"}, {DType::Q4, "q4"}, {DType::NF4, "nf4"}, {DType::PAL4, "pal4"}};
inline constexpr settings::Choice<Compute> kComputeNames[] = {{Compute::Int8, "int8"},
                                                              {Compute::F32, "f32"}};

// The settings that choose a model folder, the storage of its frozen base and how linear layers
// over that base compute, in the table of any settings struct with the members model_dir, quant,
// quant_embeddings and compute.
template <class Self, class V>
void model_fields(Self& c, V& v) {
  v("model", c.model_dir, "Hugging Face BERT folder (config.json, model.safetensors, vocab.txt), or a model file from edgetune compress");
  v("quant", c.quant, kQuantNames, "storage of the frozen base Linear weights: f32, q8, q4, nf4 or pal4");
  v("quant_embeddings", c.quant_embeddings,
    "store the word-embedding table as --quant too, the position table as q8 (frozen gathers)");
  v("compute", c.compute, kComputeNames,
    "linear layers over a quantized base: int8 (integer kernels) or f32 (dequantize, float GEMM); "
    "an f32 base always computes in f32");
}

inline constexpr settings::Choice<data::Header> kHeaderNames[] = {
    {data::Header::kAuto, "auto"}, {data::Header::kPresent, "present"}, {data::Header::kAbsent, "absent"}};

// Data-file settings shared by train, eval and predict.
struct DataOptions {
  data::ColumnRef text_column;                      // unset: guessed from the header
  std::optional<data::ColumnRef> text_pair_column;
  std::optional<data::ColumnRef> label_column;      // unset: guessed from the header
  data::Header header = data::Header::kAuto;
  data::Format format = data::Format::kAuto;        // from the file name
  bool skip_bad_rows = false;
  static constexpr int kDefaultMaxLength = 128;
  // Tokens per row, [CLS] and [SEP] included. Training with the default on a model with fewer
  // positions uses the model's max_position_embeddings instead.
  int max_length = kDefaultMaxLength;

  // The settings table (settings.h). The label column is left out when the caller reads
  // unlabelled rows (with_label false on the visitor's side: see examples/cli).
  template <class Self, class V>
  static void fields(Self& o, V& v) {
    using namespace settings;
    v("text_column", o.text_column,
      "column of the text: header name or 0-based index (default: guessed from the header: "
      "sentence, text, text_a, ...)");
    v("text_pair_column", o.text_pair_column, "column of the second text of a pair");
    v("label_column", o.label_column,
      "column of the label: header name or 0-based index (default: label, class, ...)");
    v("header", o.header, kHeaderNames, "whether files have a header row: auto, present or absent");
    v("skip_bad_rows", o.skip_bad_rows, "count and report bad rows instead of stopping at the first");
    v("max_length", o.max_length,
      "tokens per row, [CLS] and [SEP] included (the default gives way to a model with fewer positions)",
      at_least(3));
  }
};

// Reads a labelled (or, with labelled = false, possibly unlabelled) file. When a column is not
// given it is guessed from the header: text from sentence / text / text_a / content / review /
// message, label from label / labels / class / category / sentiment; a file without a header
// needs explicit columns. Bad rows throw data::DataError (file:line: what was expected) unless
// skip_bad_rows, when they are counted in the dataset and reported.
data::Dataset read_data(const std::filesystem::path& file, const DataOptions& options,
                        bool labelled, const data::LabelMap* labels = nullptr);

// "note: 3 rows of train.tsv held invalid UTF-8 (each bad sequence was replaced and dropped)\n",
// or "" when every row was valid.
std::string invalid_utf8_note(const std::vector<data::Encoding>& encodings, const std::string& source);
// The same from the count of such rows.
std::string invalid_utf8_note(std::size_t rows, const std::string& source);

// A batch as tensors.
struct TensorBatch {
  BertInputs inputs;
  Tensor labels;  // (B) I32; undefined when unlabelled
  std::vector<size_t> rows;
};
TensorBatch to_tensors(const data::Batch& batch);

// The classifier's label names (config id2label, or LABEL_i).
std::vector<std::string> label_names(const BertConfig& config);

// The label map to read evaluation data with: the model's names, except that a model with Hugging
// Face's placeholder names LABEL_0 .. LABEL_{K-1} takes the integer labels 0 .. K-1 of a file.
data::LabelMap eval_label_map(const std::vector<std::string>& names);

struct Model {
  BertModel bert;
  data::WordPieceTokenizer tokenizer;
  MethodOptions method;
  std::filesystem::path model_dir;
  std::vector<std::string> labels() const { return label_names(bert.config); }
};

// Loads model_dir (and, if given, an adapter folder or run folder written by training) for
// inference. A run folder's labels.json names the classes.
Model open_model(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir,
                 DType base, bool quant_embeddings);

struct Prediction {
  std::int32_t label = 0;
  std::vector<float> probabilities;
  std::vector<float> logits;
};

// Logits of every encoding, batch by batch, without recording; linear layers over a quantized base
// compute per `compute`.
std::vector<Prediction> predict(const BertModel& model, const std::vector<data::Encoding>& encodings,
                                std::int32_t pad_id, int batch_size, Compute compute);

// Accuracy, macro-F1, per-class figures, confusion matrix and mean loss on labelled encodings;
// linear layers over a quantized base compute per `compute`.
EvalReport evaluate(const BertModel& model, const std::vector<data::Encoding>& encodings,
                    const std::vector<std::int32_t>& labels, std::int32_t pad_id, int batch_size,
                    Compute compute);
// The same on the rows of a store, with the labels it holds.
EvalReport evaluate(const BertModel& model, const data::TokenStore& rows, std::int32_t pad_id,
                    int batch_size, Compute compute);

}  // namespace edgetune
