// The BERT classifier loaded from Hugging Face folders written by
// tests/golden/bert/make_bert_goldens.py (plain PyTorch mirroring transformers' module names):
// logits, loss and the gradient of every parameter for a padded batch, against PyTorch.
#include <catch2/catch.hpp>

#include <cmath>

#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/engine/loader.h"
#include "test_support.h"

using namespace edgetune;
using edgetune::test::require_close;

namespace {

BertInputs golden_inputs(const safetensors::Reader& g) {
  return {g.load("input_ids", DType::I32, MemCategory::Activations),
          g.load("token_type_ids", DType::I32, MemCategory::Activations),
          g.load("attention_mask", DType::I32, MemCategory::Activations)};
}

void check_model(const std::string& name, bool checkpoint_layers) {
  const auto dir = test::golden_dir() / "bert" / name;
  safetensors::Reader g(dir / "golden.safetensors");
  LoadOptions opt;
  opt.base = DType::F32;
  opt.trainable = [](const std::string&) { return true; };
  BertModel m = load_bert(dir, opt);
  ForwardOptions fo;
  fo.checkpoint_layers = checkpoint_layers;
  Tensor logits = m.classify(golden_inputs(g), fo);
  require_close(name + " logits", logits.to_vector(), g.load("logits").to_vector(), 1e-4, 1e-6);
  Tensor loss = ops::cross_entropy(logits, g.load("labels", DType::I32, MemCategory::Activations));
  require_close(name + " loss", loss.to_vector(), g.load("loss").to_vector(), 1e-4, 1e-7);
  backward(loss);
  int compared = 0;
  for (auto& [pname, t] : m.named_tensors()) {
    const auto ref = g.load("grad." + pname).to_vector();
    double scale = 0;
    for (double v : ref) scale = std::max(scale, std::fabs(v));
    // rtol 1e-4 per element, plus an absolute floor of 1e-4 of the tensor's largest gradient for
    // elements that are zero up to float32 cancellation.
    require_close(name + " grad." + pname, t.grad().to_vector(), ref, 1e-4, 1e-4 * scale + 1e-9);
    ++compared;
  }
  REQUIRE(compared == static_cast<int>(m.named_tensors().size()));
}

}  // namespace

TEST_CASE("tiny BERT (gelu) logits, loss and every gradient match PyTorch", "[golden][bert]") {
  check_model("tiny", false);
}

TEST_CASE("small BERT (gelu_new, 3 labels) logits, loss and every gradient match PyTorch",
          "[golden][bert]") {
  check_model("small", false);
}

TEST_CASE("small BERT stored as F16 loads and matches PyTorch on the rounded weights",
          "[golden][bert]") {
  check_model("small-f16", false);
}

TEST_CASE("checkpointed encoder layers give the same logits, loss and gradients", "[golden][bert]") {
  check_model("small", true);
}
