// The compressed model file: one safetensors file that holds a whole model an app ships.
//
// Layout (format version kModelFileVersion, ARCHITECTURE.md "File formats"):
//   tensors   Hugging Face names (BertForSequenceClassification). A float tensor is F32. A q8 base
//             weight (N, K) is `<name>` I8 (N, K) codes beside `<name>.scales` F32 (N); a q4 one is
//             `<name>` U8 (N, ceil(K/2)) packed nibbles beside `<name>.scales` F32 (N, ceil(K/32)):
//             the engine's own layouts (tensor.h), so the loader maps them and uses them in place.
//             nf4 and pal4 are codes beside absmax scales or palettes (quant_file_layout). With
//             quantized embeddings the word-embedding table (V, C) is stored as the base is and
//             the position table (P, C) as q8, in the same layouts.
//             Every tensor starts at a multiple of kModelFileAlignment bytes of the file.
//   __metadata__  "format": "pt"; "edgetune.format": "edgetune-model";
//             "edgetune.format_version"; "edgetune.storage" (f32, q8, q4, nf4, pal4: the base
//             weights'); "edgetune.quant_embeddings" ("true" when the embeddings are quantized;
//             absent otherwise);
//             "edgetune.config" (config.json, with id2label: the labels of a kept head);
//             "edgetune.vocab" (vocab.txt); "edgetune.tokenizer_config" (tokenizer_config.json, or
//             absent); "edgetune.provenance" (JSON: source, options, edgetune version);
//             "edgetune.checksum" ("blake2b-256:" + 64 hex digits, see model_file_checksum).
// What this is not: a general container; adapters live in their own folders.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/autograd/tensor.h"
#include "edgetune/data/tokenizer.h"
#include "edgetune/engine/config.h"

namespace edgetune {

inline constexpr int kModelFileVersion = 1;
// Tensor data alignment in the file: a cache line, and 4-byte aligned floats once mapped.
inline constexpr std::size_t kModelFileAlignment = 64;

// What `edgetune compress` does to a model.
struct CompressOptions {
  DType quant = DType::Q8;  // storage of the base weights: F32, Q8, Q4, NF4 or PAL4
  // Also the word embeddings stored as `quant` and the position embeddings as q8, as
  // LoadOptions::quant_embeddings quantizes them at load (needs a quantized `quant`).
  bool quant_embeddings = false;
  // Source layers kept, ascending and distinct, renumbered 0.. in the file; empty: all.
  std::vector<std::int64_t> keep_layers;
  // Heads removed per source layer, as Hugging Face's prune_heads removes them (rows of query,
  // key, value weights and biases; columns of attention.output.dense); applied before cropping.
  std::map<std::int64_t, std::vector<std::int64_t>> drop_heads;
  // Feed-forward neurons removed per source layer (indices among its F neurons): rows of
  // intermediate.dense, columns of output.dense; applied before cropping.
  std::map<std::int64_t, std::vector<std::int64_t>> drop_neurons;
  // Fractions of the heads (lowest importance over all layers, at least one kept per layer) and of
  // each layer's neurons (lowest importance within the layer) removed, scored on `calibration`
  // (engine/prune.h). Each in [0, 1); either above 0 needs calibration, and --prune-heads excludes
  // drop_heads and a source with pruned heads.
  double prune_heads = 0;
  double prune_ffn = 0;
  // A labelled TSV / CSV / JSONL file, its columns guessed as the trainer guesses them.
  std::filesystem::path calibration;
  // Texts whose tokens the vocabulary keeps (with the specials and every single character, as
  // data/vocab_prune.h does), the word embeddings re-indexed; empty: the whole vocabulary.
  std::vector<std::filesystem::path> vocab_from;
};

// --keep-layers: "0,2,4" (those layers) or "6" (the first six) of a model with `layers` layers.
// Throws std::invalid_argument (one line, what was expected) for a malformed list, an index out
// of range, a repeated or unsorted index, or a count outside [1, layers].
std::vector<std::int64_t> parse_keep_layers(std::string_view text, std::int64_t layers);

// --drop-heads: "0:1,3;5:0" (layer:heads;...) for a model of `layers` layers of `heads` heads.
// Throws std::invalid_argument for a malformed list, an index out of range, a layer named twice,
// or a layer left with no head.
std::map<std::int64_t, std::vector<std::int64_t>> parse_drop_heads(std::string_view text, std::int64_t layers,
                                                                    std::int64_t heads);

// True when `path` is a regular file (a model file) rather than a Hugging Face folder.
bool is_model_file(const std::filesystem::path& path);

// Writes the model of the Hugging Face folder (or f32 model file) `source` to `out` as a model
// file, after pruning heads, neurons and vocabulary and cropping its layers, with the base
// weights quantized as quantize-on-load would. Importance scores and what they removed go into the
// provenance. Atomic (through core's writer). Throws ModelError when `out` is `source` or a file
// inside it, or an existing folder; std::invalid_argument for bad options (quant_embeddings with
// an f32 quant among them); data::DataError
// (file:line) for a bad calibration or vocabulary text file.
void compress_model(const std::filesystem::path& source, const std::filesystem::path& out,
                    const CompressOptions& options);

// BLAKE2b-256, as hex, of the metadata (sorted by key, without "edgetune.checksum"; each key and
// value followed by a zero byte) then of each tensor in `tensors` order (name, zero, dtype, zero,
// each dimension as 8 little-endian bytes, the data). It detects a torn or corrupted file; it is
// not a signature.
std::string model_file_checksum(const std::map<std::string, std::string>& metadata,
                                const std::vector<safetensors::RawTensor>& tensors);

// An opened model file. The mapping stays alive as long as the ModelFile or any tensor mapped
// from reader().
class ModelFile {
 public:
  // Maps `path` and checks the header, the format name and version, and the config; with
  // verify, also the checksum (reading every byte once, then dropping the pages again). Throws
  // ModelError (one line naming the file) for anything wrong: truncated, corrupt, another format
  // version, not a model file.
  explicit ModelFile(const std::filesystem::path& path, bool verify = true);

  const std::string& label() const { return reader_->label(); }
  const BertConfig& config() const { return config_; }
  DType storage() const { return storage_; }
  // Whether the word and position embeddings are stored quantized (storage() and q8).
  bool quant_embeddings() const { return quant_embeddings_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::shared_ptr<const safetensors::Reader>& reader() const { return reader_; }
  // The tokenizer the file holds (vocabulary and settings).
  data::WordPieceTokenizer tokenizer() const;

 private:
  std::shared_ptr<const safetensors::Reader> reader_;
  std::map<std::string, std::string> metadata_;
  BertConfig config_;
  DType storage_ = DType::F32;
  bool quant_embeddings_ = false;
};

// The tokenizer of `model`: a folder's vocab.txt and tokenizer_config.json, or a model file's.
data::WordPieceTokenizer load_model_tokenizer(const std::filesystem::path& model);

}  // namespace edgetune
