// The benchmark harness behind `edgetune bench`: one training configuration timed in-process
// (run_case), and the table that sets edgetune's rows beside PyTorch's (bench/torch_bench.py) for
// the same shape, batch and threads. Each configuration runs in its own process so the peak
// resident set (VmHWM) is that configuration's alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgetune::bench {

// Standard BERT shapes: tiny (L2 H128 A2), mini (L4 H256 A4), small (L4 H512 A8),
// base (L12 H768 A12); F = 4H, V = 30522, 512 positions.
struct ShapeSpec {
  const char* name;
  std::int64_t layers, hidden, heads, intermediate;
};
const ShapeSpec& shape_spec(const std::string& name);  // throws std::invalid_argument

struct Case {
  std::string shape = "base";
  // lora (r8 on query,value) or full: training steps; predict: forward passes of the classifier
  // with LoRA r8 on query,value, without recording (batch rows of length tokens each).
  std::string method = "lora";
  std::string quant = "q4";     // f32, q8, q4 (full is f32)
  std::string compute = "int8";  // int8 or f32: linear layers over a q8/q4 base
  bool quant_embeddings = false;
  std::int64_t batch = 8, length = 128;
  int threads = 1, steps = 3, warmup = 1;
  std::size_t budget = 0;       // bytes; 0: no budget (no checkpointing, one micro-batch)
  bool profile = false;         // add a per-op profile of one step
  // DP-SGD's step (run.h's dp_train_step) over the batch as its sample: noise multiplier 1,
  // clipping 1, each example's gradient had as the method's dp_clipping_for says.
  bool dp = false;

  nlohmann::json to_json() const;
  static Case from_json(const nlohmann::json& j);
  std::string label() const;  // "lora q4+emb int8 budget 160.0 MiB", "lora q4+emb int8 dp"
};

// Runs the case in this process (fresh random model, synthetic batch, AdamW) and returns a JSON
// object: median_step_seconds, step_seconds, tokens_per_second, accountant_peak, peak_rss,
// plan, estimate, init_seconds, trainable_parameters, loss, and profile when asked. For method
// predict a step is one forward pass (median_step_seconds its latency) and there is no loss.
// With dp, each DP step is followed by a non-private step on the same batch (untimed in
// step_seconds): non_dp_step_seconds, and dp_ratio, the median of the steps' DP / non-DP ratios.
nlohmann::json run_case(const Case& c);

// The synthetic batch both sides use: token id of row b, position t:
// 1000 + ((b*T + t) * 7919) % (V - 1000); label b % 2; no padding.
std::int32_t synthetic_id(std::int64_t b, std::int64_t t, std::int64_t length, std::int64_t vocab);

// A text table of result rows (edgetune's and PyTorch's), with edgetune/PyTorch ratios of step
// time and peak RSS against the PyTorch row of the same shape and method.
std::string table(const std::vector<nlohmann::json>& rows);

}  // namespace edgetune::bench
