// The batches of the fine-tuning goldens (tests/golden/finetune/batches.safetensors, made by
// make_finetune_goldens.py), shared by the tests that replay them.
#pragma once

#include <string>
#include <vector>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/engine/session.h"
#include "test_support.h"

namespace edgetune::test {

// Every batch of the file, in order: input_ids, token_type_ids, attention_mask (B, T) and labels (B).
inline std::vector<TensorBatch> golden_batches() {
  safetensors::Reader r(golden_dir() / "finetune" / "batches.safetensors");
  const int n = std::stoi(r.metadata().at("batches"));
  std::vector<TensorBatch> out;
  for (int i = 0; i < n; ++i) {
    const std::string p = "batch." + std::to_string(i) + ".";
    auto ints = [&](const std::string& name) { return r.load(p + name, DType::I32, MemCategory::Activations); };
    TensorBatch b;
    b.inputs = {ints("input_ids"), ints("token_type_ids"), ints("attention_mask")};
    b.labels = ints("labels");
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace edgetune::test
