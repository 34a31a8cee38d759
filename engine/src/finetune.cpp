// Fine-tuning methods: what trains, the adapters they attach, merging (see finetune.h).
#include "edgetune/engine/finetune.h"

#include <memory>

namespace edgetune {

namespace {

bool no_decay(const std::string& name) {
  return name.ends_with(".bias") || name.find("LayerNorm") != std::string::npos;
}

}  // namespace

bool trains_under(const std::string& name, const MethodOptions& o) {
  if (name.starts_with("classifier.")) return true;
  switch (o.method) {
    case Method::Full: return true;
    case Method::Head: return name.starts_with("bert.pooler.");
    case Method::BitFit: return name.ends_with(".bias");
    case Method::Lora:
    case Method::Adapter: return false;
  }
  return false;
}

DpClipping dp_clipping_for(Method method) {
  return method == Method::Full ? DpClipping::ExampleAtATime : DpClipping::PerExample;
}

LoadOptions load_options_for(const MethodOptions& o, DType base, bool quant_embeddings) {
  LoadOptions lo;
  lo.base = o.method == Method::Full ? DType::F32 : base;
  lo.quant_embeddings = o.method == Method::Full ? false : quant_embeddings;
  lo.trainable = [o](const std::string& name) { return trains_under(name, o); };
  lo.seed = o.seed;
  return lo;
}

void attach_adapters(BertModel& m, const MethodOptions& o) {
  const std::int64_t c = m.config.hidden_size;
  std::uint64_t seed = o.seed * 1000003 + 17;
  for (EncoderLayer& l : m.layers) {
    if (o.method == Method::Lora) {
      for (const std::string& name : o.lora_targets) {
        LinearLayer& lin = l.*lora_target(name).member;
        lin.lora = std::make_shared<adapters::Lora>(lin.weight.dim(1), lin.weight.dim(0), o.lora, seed++);
      }
    } else if (o.method == Method::Adapter) {
      l.attention_adapter = std::make_shared<adapters::Houlsby>(c, o.adapter_size, o.adapter_act, seed);
      seed += 2;
      l.output_adapter = std::make_shared<adapters::Houlsby>(c, o.adapter_size, o.adapter_act, seed);
      seed += 2;
    }
  }
}

std::vector<optim::Param> trainable_params(const BertModel& m) {
  std::vector<optim::Param> out;
  for (auto& [name, t] : m.named_tensors()) {
    if (t.requires_grad()) out.push_back({name, t, !no_decay(name)});
  }
  for (auto& [name, t] : adapter_tensors(m)) {
    if (t.requires_grad()) out.push_back({name, t, !no_decay(name)});
  }
  return out;
}

void merge_lora(BertModel& m) {
  for (EncoderLayer& l : m.layers) {
    for (const std::string& name : lora_target_names()) {
      LinearLayer& lin = l.*lora_target(name).member;
      if (!lin.lora) continue;
      Tensor merged = lin.lora->merge_into(lin.weight);
      merged.set_name(lin.weight.name());
      lin.weight = merged;
      lin.lora.reset();
    }
  }
}

}  // namespace edgetune
