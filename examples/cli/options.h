// Command-line options shared by several subcommands: the model and its storage, data columns,
// threads and memory. Each add_* registers the options on a CLI11 app and fills a struct.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "edgetune/autograd/tensor.h"
#include "edgetune/core/context.h"
#include "edgetune/core/encryption.h"
#include "edgetune/engine/run.h"
#include "edgetune/engine/session.h"

namespace edgetune::cli {

// --model, --quant, --quant-embeddings, --compute (session.h's model_fields).
struct ModelArgs {
  std::filesystem::path model_dir;
  DType quant = DType::Q8;
  bool quant_embeddings = false;
  Compute compute = Compute::Int8;
};
void add_model_options(CLI::App& app, ModelArgs& a, bool required = true);
// After parsing: when `sub`'s --model names a model file and --quant was left out, --quant takes
// the file's storage, and --quant-embeddings is set when the file's embeddings are quantized (a
// --quant or --quant-embeddings given is checked against the file when the model loads).
void use_model_file_storage(CLI::App& sub);

// The data-file options (session.h's DataOptions table); --label-column only when with_label.
void add_data_options(CLI::App& app, DataOptions& o, bool with_label = true);

// The process options of the command line (the library sets none of these itself).

// A stop token that the first SIGINT / SIGTERM requests (the run then saves a checkpoint and
// returns); a second one ends the process at once.
StopToken install_stop_signals();

// Under a memory budget, resident memory beats speed: glibc raises its mmap threshold every time
// a large block is freed; after that, temporaries of 128 KiB and more (GEMM packing buffers, small
// activations) come from the heap and stay resident when freed. A fixed threshold returns them to
// the system. Measured on the shipped model, q4 + LoRA, budget 64 MiB: VmHWM 95.6 -> 80.4 MiB
// (accountant 52.5 MiB), steps about 20 % slower.
void limit_allocator_slack();

// Whether the process's stderr is a terminal (then training commands draw a live progress line),
// and its width in columns (80 when the terminal does not say).
bool stderr_is_terminal();
std::size_t stderr_columns();

// --threads N (0: all cores).
void add_threads_option(CLI::App& app, int& threads);
// --key-file FILE: the key of edgetune's files (core's encryption.h): what the command writes is
// encrypted with it, and encrypted files it reads are decrypted with it.
void add_key_option(CLI::App& app, std::string& key_file);
// The key in `key_file` (32 raw bytes; a file of another size is a one-line error naming it);
// null when `key_file` is empty.
std::shared_ptr<const EncryptionKey> load_key(const std::string& key_file);

// The context a command that uses the library outside a training run installs (ContextScope) for
// its work: its own accountant, `threads` as --threads gives it, and `key` (--key-file).
Context command_context(int threads, std::shared_ptr<const EncryptionKey> key = nullptr);

}  // namespace edgetune::cli
