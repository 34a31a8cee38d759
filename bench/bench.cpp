// The benchmark harness (see bench.h).
#include "bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/profile.h"
#include "edgetune/core/context.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/planner.h"
#include "edgetune/engine/trainer.h"

namespace edgetune::bench {

namespace {
const ShapeSpec kShapes[] = {
    {"tiny", 2, 128, 2, 512}, {"mini", 4, 256, 4, 1024}, {"small", 4, 512, 8, 2048}, {"base", 12, 768, 12, 3072}};
constexpr std::int64_t kVocab = 30522;

// DP-SGD's step with the batch as its sample (Case::dp); returns the loss.
double dp_step(const BertModel& model, std::span<optim::Param> params, optim::Optimizer& optimizer,
               const TensorBatch& batch, const StepOptions& options, const DpPlan& dp, data::Rng& rng) {
  const ClassifierBatch sample(model, batch);
  const StepBatch* parts[] = {&sample};
  return dp_train_step(parts, params, optimizer, 5e-4, options, dp, rng).loss;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
}  // namespace

const ShapeSpec& shape_spec(const std::string& name) {
  for (const ShapeSpec& s : kShapes) {
    if (name == s.name) return s;
  }
  throw std::invalid_argument("unknown shape '" + name + "' (expected tiny, mini, small or base)");
}

nlohmann::json Case::to_json() const {
  return {{"shape", shape}, {"method", method}, {"quant", quant}, {"compute", compute},
          {"quant_embeddings", quant_embeddings},
          {"batch", batch}, {"length", length}, {"threads", threads}, {"steps", steps},
          {"warmup", warmup}, {"budget", budget}, {"profile", profile}, {"dp", dp}};
}

Case Case::from_json(const nlohmann::json& j) {
  Case c;
  c.shape = j.at("shape");
  c.method = j.at("method");
  c.quant = j.at("quant");
  c.compute = j.value("compute", c.compute);  // cases written before the compute setting: its default
  c.quant_embeddings = j.at("quant_embeddings");
  c.batch = j.at("batch");
  c.length = j.at("length");
  c.threads = j.at("threads");
  c.steps = j.at("steps");
  c.warmup = j.at("warmup");
  c.budget = j.at("budget");
  c.profile = j.at("profile");
  c.dp = j.value("dp", false);  // cases written before the DP row: no DP
  return c;
}

std::string Case::label() const {
  std::string s = method + " " + quant + (quant_embeddings ? "+emb" : "");
  if (quant != "f32") s += " " + compute;
  if (budget) s += " budget " + format_bytes(budget);
  if (dp) s += " dp";
  return s;
}

std::int32_t synthetic_id(std::int64_t b, std::int64_t t, std::int64_t length, std::int64_t vocab) {
  return static_cast<std::int32_t>(1000 + ((b * length + t) * 7919) % (vocab - 1000));
}

namespace {
// The synthetic batch of `batch` rows of `length` tokens (synthetic_id).
TensorBatch synthetic_batch(std::int64_t batch, std::int64_t length) {
  std::vector<std::int32_t> ids(static_cast<size_t>(batch * length)), types(ids.size(), 0), mask(ids.size(), 1),
      labels(static_cast<size_t>(batch));
  for (std::int64_t b = 0; b < batch; ++b) {
    labels[static_cast<size_t>(b)] = static_cast<std::int32_t>(b % 2);
    for (std::int64_t t = 0; t < length; ++t) ids[static_cast<size_t>(b * length + t)] = synthetic_id(b, t, length, kVocab);
  }
  TensorBatch out;
  out.inputs = {Tensor::from_ints({batch, length}, ids), Tensor::from_ints({batch, length}, types),
                Tensor::from_ints({batch, length}, mask)};
  out.labels = Tensor::from_ints({batch}, labels);
  return out;
}
}  // namespace

nlohmann::json run_case(const Case& c) {
  Context context;
  context.threads = kernels::resolve_threads(c.threads);
  const ContextScope scope(context);
  const ShapeSpec& s = shape_spec(c.shape);
  BertConfig cfg;
  cfg.vocab_size = kVocab;
  cfg.num_hidden_layers = s.layers;
  cfg.hidden_size = s.hidden;
  cfg.num_attention_heads = s.heads;
  cfg.intermediate_size = s.intermediate;
  cfg.num_labels = 2;
  const bool predict = c.method == "predict";
  const Compute compute = settings::parse_choice<Compute>(kComputeNames, "compute", c.compute);
  MethodOptions m;
  m.method = parse_method(predict ? "lora" : c.method);
  m.lora.rank = 8;
  m.lora.alpha = 16;
  const DType base = c.quant == "q4" ? DType::Q4 : c.quant == "q8" ? DType::Q8 : DType::F32;
  TrainConfig tc;  // for the planner
  tc.method = m;
  tc.quant = base;
  tc.quant_embeddings = c.quant_embeddings;
  tc.compute = compute;
  tc.batch_size = static_cast<int>(c.batch);
  tc.memory_budget = c.budget;
  // Under a budget the process is what it bounds: the baseline is measured before the model exists.
  PlanRequest request = plan_request(cfg, tc, c.length);
  if (c.budget) request.baseline = measure_baseline().total();
  DpPlan dp;
  dp.noise_multiplier = 1;
  dp.max_grad_norm = 1;
  dp.expected_batch = static_cast<double>(c.batch);
  dp.clipping = dp_clipping_for(m.method);
  if (c.dp) request.dp = dp.clipping;
  const bool alone = c.dp && dp.clipping == DpClipping::ExampleAtATime;
  const Plan plan = choose_plan(request, c.budget, std::nullopt, alone ? 1 : 0);

  Accountant& acc = *context.accountant;
  acc.set_budget(plan.accountant_budget());
  const auto t0 = std::chrono::steady_clock::now();
  LoadOptions lo = load_options_for(m, base, c.quant_embeddings);
  BertModel model = init_bert(cfg, lo);
  attach_adapters(model, m);
  std::vector<optim::Param> params = trainable_params(model);
  optim::AdamOptions ao;
  ao.weight_decay = 0.01;
  auto opt = optim::make_adamw(ao);
  const double init_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const TensorBatch batch = synthetic_batch(c.batch, c.length);
  StepOptions so;
  so.max_grad_norm = 1.0;
  so.micro_batch = plan.micro_batch;
  so.checkpoint_layers = plan.checkpoint_layers;
  so.compute = compute;
  ForwardOptions inference;
  inference.compute = compute;
  manual_seed(0);
  data::Rng dp_rng(0);
  std::vector<double> times, plain_times, dp_ratios;
  double loss = 0;
  nlohmann::json prof = nlohmann::json::array();
  for (int step = 0; step < c.warmup + c.steps; ++step) {
    const bool profiled = c.profile && step == c.warmup;
    profile::Profiler profiler;
    const auto a = std::chrono::steady_clock::now();
    {
      std::optional<profile::Recording> recording;
      if (profiled) recording.emplace(profiler);
      if (predict) {
        // As edgetune::predict runs it: no graph, and the reuse cache of inference.
        NoGradGuard no_grad;
        const InferenceCache reuse(acc);
        model.classify(batch.inputs, inference);
      } else if (c.dp) {
        loss = dp_step(model, params, *opt, batch, so, dp, dp_rng);
      } else {
        loss = train_step(model, params, *opt, std::span<const TensorBatch>(&batch, 1), 5e-4, so).loss;
      }
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    if (profiled) {
      for (const auto& e : profiler.entries()) prof.push_back({{"op", e.name}, {"seconds", e.seconds}, {"calls", e.calls}});
      prof.push_back({{"op", "step (wall)"}, {"seconds", dt}, {"calls", 1}});
    }
    if (step >= c.warmup) times.push_back(dt);
    if (c.dp) {
      // The non-private step on the same batch right after: on a shared machine the two see the
      // same load, so their ratio, step by step, says what DP costs.
      const auto b = std::chrono::steady_clock::now();
      train_step(model, params, *opt, std::span<const TensorBatch>(&batch, 1), 5e-4, so);
      const double plain = std::chrono::duration<double>(std::chrono::steady_clock::now() - b).count();
      if (step >= c.warmup) {
        plain_times.push_back(plain);
        dp_ratios.push_back(dt / plain);
      }
    }
  }
  std::int64_t trainable = 0;
  for (const auto& p : params) trainable += p.tensor.numel();
  const MemoryStats st = acc.stats();
  nlohmann::json r = c.to_json();
  r["engine"] = "edgetune";
  r["label"] = c.label();
  r["step_seconds"] = times;
  r["median_step_seconds"] = median(times);
  if (c.dp) {
    r["non_dp_step_seconds"] = plain_times;
    r["dp_ratio"] = median(dp_ratios);
  }
  r["tokens_per_second"] = static_cast<double>(c.batch * c.length) / median(times);
  r["accountant_peak"] = st.peak_total;
  r["accountant_peak_by_category"] = st.at_total_peak;
  r["peak_rss"] = process_peak_rss();
  r["plan"] = plan.describe();
  r["estimate"] = plan.estimate.total();
  r["init_seconds"] = init_seconds;
  r["trainable_parameters"] = trainable;
  if (!predict) r["loss"] = loss;
  r["profile"] = c.profile ? prof : nlohmann::json(nullptr);
  return r;
}

std::string table(const std::vector<nlohmann::json>& rows) {
  std::string out;
  char buf[400];
  std::snprintf(buf, sizeof buf, "%-6s %-8s %-24s %-8s %10s %10s %12s %12s %10s %9s\n", "shape", "engine",
                "method / storage", "B x T", "step (s)", "tokens/s", "accountant", "VmHWM", "time ratio",
                "RSS ratio");
  out += buf;
  for (const auto& r : rows) {
    const bool ours = r.at("engine") == "edgetune";
    std::string time_ratio = "", rss_ratio = "";
    if (ours) {
      for (const auto& t : rows) {
        if (t.at("engine") == "pytorch" && t.at("shape") == r.at("shape") && t.at("method") == r.at("method")) {
          std::snprintf(buf, sizeof buf, "%.2f", r.at("median_step_seconds").get<double>() / t.at("median_step_seconds").get<double>());
          time_ratio = buf;
          std::snprintf(buf, sizeof buf, "%.3f", r.at("peak_rss").get<double>() / t.at("peak_rss").get<double>());
          rss_ratio = buf;
        }
      }
    }
    const std::string label = ours ? r.at("label").get<std::string>() : r.at("method").get<std::string>() + " f32";
    const std::string bt = std::to_string(r.at(ours ? "batch" : "batch_size").get<int>()) + " x " +
                           std::to_string(r.at(ours ? "length" : "max_length").get<int>());
    std::snprintf(buf, sizeof buf, "%-6s %-8s %-24s %-8s %10.3f %10.0f %12s %12s %10s %9s\n",
                  r.at("shape").get<std::string>().c_str(), r.at("engine").get<std::string>().c_str(), label.c_str(),
                  bt.c_str(), r.at("median_step_seconds").get<double>(), r.at("tokens_per_second").get<double>(),
                  ours ? format_bytes(r.at("accountant_peak").get<std::size_t>()).c_str() : "-",
                  format_bytes(r.at("peak_rss").get<std::size_t>()).c_str(), time_ratio.c_str(), rss_ratio.c_str());
    out += buf;
  }
  return out;
}

}  // namespace edgetune::bench
