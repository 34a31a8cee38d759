// Adapter folders in the Hugging Face PEFT layout: adapter_config.json + adapter_model.safetensors.
//
// Keys in adapter_model.safetensors are the model's tensor names behind PEFT's prefix
// "base_model.model.", e.g.
//   base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight   (r, in)
//   base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight   (out, r)
//   base_model.model.classifier.weight / .bias                                  (modules_to_save)
// so a LoRA written here loads in PEFT and one written by PEFT loads here. Methods PEFT does not
// have use the same folder and key scheme, with "edgetune_method" in the config saying which:
//   "adapter" (Houlsby): ...layer.{i}.attention.output.adapter.{down,up}.{weight,bias} and
//                        ...layer.{i}.output.adapter.{down,up}.{weight,bias}
//   "bitfit":            every bias of the model under its own name
//   "head":              bert.pooler.dense.* and classifier.*
// Both files are written atomically (temporary name, fsync, rename).
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/autograd/tensor.h"

namespace edgetune::adapters {

inline constexpr const char* kPeftPrefix = "base_model.model.";

struct AdapterFolder {
  nlohmann::json config;                                // adapter_config.json
  std::vector<std::pair<std::string, Tensor>> tensors;  // keys as stored (with the PEFT prefix)
};

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (creates dir).
void save_adapter_folder(const std::filesystem::path& dir, const AdapterFolder& folder);

// Reads an adapter folder; tensors are float32 in the Trainable category. Throws
// std::runtime_error naming the file when a file is missing or malformed.
AdapterFolder load_adapter_folder(const std::filesystem::path& dir);

// True if dir holds adapter_config.json.
bool is_adapter_folder(const std::filesystem::path& dir);

}  // namespace edgetune::adapters
