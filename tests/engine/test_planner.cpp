// The memory planner: its estimate against the accountant's measured peak, the plans it picks
// under budgets, the clean failure when nothing fits, and the accountant stopping a step that
// would pass the budget.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <fstream>
#include <sstream>

#include "edgetune/autograd/autograd.h"
#include "edgetune/core/context.h"
#include "edgetune/core/memory.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/model_file.h"
#include "edgetune/engine/planner.h"
#include "edgetune/engine/pretrain.h"
#include "edgetune/engine/trainer.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

// A two-label config of vocabulary V, width C, L layers, H heads, feed-forward F, P positions.
BertConfig config_of(std::int64_t v, std::int64_t c, std::int64_t l, std::int64_t h,
                     std::int64_t f, std::int64_t p) {
  BertConfig out;
  out.vocab_size = v;
  out.hidden_size = c;
  out.num_hidden_layers = l;
  out.num_attention_heads = h;
  out.intermediate_size = f;
  out.max_position_embeddings = p;
  out.num_labels = 2;
  return out;
}

BertConfig mini_config() { return config_of(3000, 128, 3, 4, 512, 128); }

PlanRequest request(Method method, DType base, std::int64_t batch, std::int64_t length) {
  PlanRequest r;
  r.config = mini_config();
  r.method.method = method;
  r.base = base;
  r.quant_embeddings = base != DType::F32;
  r.batch = batch;
  r.length = length;
  return r;
}

TensorBatch synthetic_batch(std::int64_t b, std::int64_t t, std::int64_t vocab) {
  std::vector<std::int32_t> ids(static_cast<size_t>(b * t)), types(ids.size(), 0), mask(ids.size(), 1), labels(static_cast<size_t>(b));
  for (std::int64_t i = 0; i < b * t; ++i) ids[static_cast<size_t>(i)] = static_cast<std::int32_t>(5 + (i * 7919) % (vocab - 5));
  for (std::int64_t i = 0; i < b; ++i) labels[static_cast<size_t>(i)] = static_cast<std::int32_t>(i % 2);
  TensorBatch tb;
  tb.inputs = {Tensor::from_ints({b, t}, ids), Tensor::from_ints({b, t}, types), Tensor::from_ints({b, t}, mask)};
  tb.labels = Tensor::from_ints({b}, labels);
  return tb;
}

// The accountant's figures over model creation and two training steps with the plan, in a
// context of their own.
struct Measured {
  std::size_t peak = 0;                                   // peak of live + cached
  std::array<std::size_t, kNumMemCategories> category{};  // peak of each category alone
  std::array<std::size_t, kNumMemCategories> at_peak{};   // each category when the total peaked
  std::size_t cached_at_peak = 0;                         // freed blocks held for reuse then
};

Measured measure(const PlanRequest& r, const Plan& plan) {
  Context context;
  const ContextScope scope(context);
  const Accountant& acc = *context.accountant;
  Measured out;
  {
    MethodOptions m = r.method;
    BertModel model = init_bert(r.config, load_options_for(m, r.base, r.quant_embeddings));
    attach_adapters(model, m);
    auto params = trainable_params(model);
    auto opt = optim::make_adamw({});
    const TensorBatch batch = synthetic_batch(r.batch, r.length, r.config.vocab_size);
    StepOptions so;
    so.micro_batch = plan.micro_batch;
    so.checkpoint_layers = plan.checkpoint_layers;
    so.compute = r.compute;
    manual_seed(1);
    for (int i = 0; i < 2; ++i) train_step(model, params, *opt, std::span<const TensorBatch>(&batch, 1), 1e-3, so);
    const MemoryStats s = acc.stats();
    out.peak = s.peak_total;
    std::size_t live_at_peak = 0;
    for (int c = 0; c < kNumMemCategories; ++c) {
      out.category[c] = s.peak[c];
      out.at_peak[c] = s.at_total_peak[c];
      live_at_peak += s.at_total_peak[c];
    }
    out.cached_at_peak = s.peak_total - live_at_peak;
  }
  return out;
}

}  // namespace

TEST_CASE("planner: the estimate is within 10 % of the accountant's measured peak",
          "[planner][memory]") {
  struct C {
    Method method;
    DType base;
    bool ckpt;
    std::int64_t micro;
  };
  const C cases[] = {{Method::Lora, DType::Q4, false, 8}, {Method::Lora, DType::Q4, true, 8},
                     {Method::Lora, DType::Q8, true, 4},  {Method::Adapter, DType::Q8, false, 8},
                     {Method::BitFit, DType::F32, true, 8}, {Method::Full, DType::F32, false, 8},
                     {Method::Head, DType::Q4, false, 8}};
  for (const C& c : cases) {
    const PlanRequest r = request(c.method, c.base, 8, 64);
    const Plan plan = choose_plan(r, 0, c.ckpt, c.micro);
    const std::size_t peak = measure(r, plan).peak;
    const double ratio = static_cast<double>(plan.estimate.total()) / static_cast<double>(peak);
    INFO(method_name(c.method) << " " << dtype_name(c.base) << " " << plan.describe() << ": measured "
                               << format_bytes(peak) << ", ratio " << ratio);
    WARN(method_name(c.method) << " " << dtype_name(c.base) << (c.ckpt ? " checkpointed" : "") << " micro "
                               << c.micro << ": estimate " << format_bytes(plan.estimate.total())
                               << ", measured " << format_bytes(peak));
    CHECK(std::fabs(ratio - 1.0) <= 0.10);
  }
}

TEST_CASE("planner: per category, the estimate is the accountant's count", "[planner][memory]") {
  struct C {
    Method method;
    DType base;
    bool quant_embeddings;
    bool ckpt;
    std::int64_t micro;
    bool freeze_a;
    Compute compute;
  };
  const C cases[] = {{Method::Lora, DType::Q8, true, false, 8, false, Compute::F32},
                     {Method::Lora, DType::Q4, false, true, 4, true, Compute::F32},
                     {Method::Adapter, DType::Q4, true, false, 8, false, Compute::F32},
                     {Method::BitFit, DType::Q8, false, true, 8, false, Compute::F32},
                     {Method::Head, DType::Q4, true, false, 8, false, Compute::F32},
                     {Method::Full, DType::F32, false, false, 8, false, Compute::F32},
                     {Method::Lora, DType::Q8, true, false, 8, false, Compute::Int8},
                     {Method::Lora, DType::Q4, false, true, 4, true, Compute::Int8},
                     {Method::Head, DType::Q4, true, false, 8, false, Compute::Int8},
                     {Method::Lora, DType::NF4, true, false, 8, false, Compute::Int8},
                     {Method::Lora, DType::PAL4, true, false, 8, false, Compute::F32},
                     {Method::Adapter, DType::PAL4, true, false, 8, false, Compute::Int8}};
  for (const C& c : cases) {
    PlanRequest r = request(c.method, c.base, 8, 64);
    r.quant_embeddings = c.quant_embeddings;
    r.compute = c.compute;
    r.method.lora.freeze_a = c.freeze_a;
    const Plan plan = choose_plan(r, 0, c.ckpt, c.micro);
    const Measured got = measure(r, plan);
    const auto& want = plan.estimate.bytes;
    auto cat = [](MemCategory m) { return static_cast<int>(m); };
    INFO(method_name(c.method) << " " << dtype_name(c.base) << (c.compute == Compute::Int8 ? " int8" : "")
                               << (c.quant_embeddings ? " +embeddings" : "")
                               << (c.freeze_a ? " lora-fa" : "") << ", " << plan.describe());
    // The tensors themselves: one walk of the model's tensor table, one rounding, no tolerance.
    CHECK(want[cat(MemCategory::BaseWeights)] == got.category[cat(MemCategory::BaseWeights)]);
    CHECK(want[cat(MemCategory::Trainable)] == got.category[cat(MemCategory::Trainable)]);
    CHECK(want[cat(MemCategory::Grads)] == got.category[cat(MemCategory::Grads)]);
    CHECK(want[cat(MemCategory::OptimizerState)] == got.category[cat(MemCategory::OptimizerState)]);
    // Activations and workspace: the estimate counts what the tape keeps at the end of the
    // forward pass plus the largest backward transient, while the real peak falls inside backward
    // after some kept tensors are freed, and small per-op tensors (masks, LayerNorm statistics,
    // index tensors) are left out. So it is compared with their sum (and the cache) at the moment
    // the total peaked, within the 10 % the whole estimate is held to.
    const double est = static_cast<double>(want[cat(MemCategory::Activations)] + want[cat(MemCategory::Workspace)]);
    const double at_peak = static_cast<double>(got.at_peak[cat(MemCategory::Activations)] +
                                               got.at_peak[cat(MemCategory::Workspace)] + got.cached_at_peak);
    INFO("activations + workspace: estimate " << format_bytes(static_cast<std::size_t>(est)) << ", at the peak "
                                              << format_bytes(static_cast<std::size_t>(at_peak)));
    CHECK(std::fabs(est / at_peak - 1.0) <= 0.10);
  }
}

TEST_CASE("planner: pretraining's weights and trainable tensors are the accountant's count",
          "[planner][memory]") {
  PlanRequest r = request(Method::Full, DType::F32, 4, 32);
  r.quant_embeddings = false;
  r.mlm_probability = 0.15;
  const MemoryEstimate e = estimate_memory(r, false, 4);
  Context context;
  const ContextScope scope(context);
  const Accountant& acc = *context.accountant;
  const MemoryStats before = acc.stats();
  // The model as the pretrainer loads it: float32, the masked-LM head, everything but the pooler
  // and the classifier trains.
  LoadOptions lo;
  lo.base = DType::F32;
  lo.with_mlm_head = true;
  lo.trainable = in_masked_lm_checkpoint;
  const BertModel model = init_bert(r.config, lo);
  const MemoryStats after = acc.stats();
  for (const MemCategory c : {MemCategory::BaseWeights, MemCategory::Trainable}) {
    INFO(category_name(c));
    const int i = static_cast<int>(c);
    CHECK(e.bytes[i] == after.live[i] - before.live[i]);
  }
  // The frozen pooler and classifier are float32 base weights.
  CHECK(e.bytes[static_cast<int>(MemCategory::BaseWeights)] > 0);
}

TEST_CASE("planner: no budget means no checkpointing and one micro-batch", "[planner]") {
  const Plan p = choose_plan(request(Method::Lora, DType::Q4, 16, 128), 0);
  REQUIRE_FALSE(p.checkpoint_layers);
  REQUIRE(p.micro_batch == 16);
}

TEST_CASE("planner: a tighter budget buys checkpointing, then smaller micro-batches", "[planner]") {
  const PlanRequest r = request(Method::Lora, DType::Q4, 16, 128);
  const Plan free = choose_plan(r, 0);
  const Plan ckpt = choose_plan(r, free.estimate.total() - 1);
  REQUIRE(ckpt.estimate.total() < free.estimate.total());
  REQUIRE((ckpt.checkpoint_layers || ckpt.micro_batch < 16));
  // The smallest plan: checkpointing with micro-batches of one row.
  const MemoryEstimate smallest = estimate_memory(r, true, 1);
  const Plan tight = choose_plan(r, smallest.total());
  REQUIRE(tight.checkpoint_layers);
  REQUIRE(tight.micro_batch == 1);
  // Every plan chosen fits its budget, and a bigger budget never gives a slower plan.
  double last_cost = 1e9;
  for (std::size_t b = smallest.total(); b <= free.estimate.total(); b += (free.estimate.total() - smallest.total()) / 16) {
    const Plan p = choose_plan(r, b);
    REQUIRE(p.estimate.total() <= b);
    REQUIRE(p.relative_cost <= last_cost);
    last_cost = p.relative_cost;
  }
}

TEST_CASE("planner: a budget below the smallest achievable peak fails before training, with the figure",
          "[planner]") {
  const PlanRequest r = request(Method::Lora, DType::Q8, 8, 64);
  const MemoryEstimate smallest = estimate_memory(r, true, 1);
  try {
    choose_plan(r, smallest.total() - 1);
    FAIL("expected PlanError");
  } catch (const PlanError& e) {
    REQUIRE_THAT(e.what(), Catch::Contains(format_bytes(smallest.total())) &&
                               Catch::Contains("raise --memory-budget"));
  }
  // When even the weights do not fit, the message says so and points at quantization...
  REQUIRE_THROWS_WITH(choose_plan(r, 1024), Catch::Contains("--quant q4"));
  // ...unless everything is already 4-bit.
  PlanRequest q4 = request(Method::Lora, DType::Q4, 8, 64);
  q4.quant_embeddings = true;
  REQUIRE_THROWS_WITH(choose_plan(q4, 1024), Catch::Contains("weights and optimizer state alone") &&
                                                 !Catch::Contains("--quant q4"));
}

TEST_CASE("planner: a run that cannot fit leaves no run folder behind", "[planner]") {
  const fs::path out = fs::temp_directory_path() / "edgetune-planner-nofit";
  fs::remove_all(out);
  const fs::path data = fs::temp_directory_path() / "edgetune-planner-nofit.tsv";
  {
    std::ofstream f(data);
    f << "sentence\tlabel\na good day\t1\na bad day\t0\n";
  }
  TrainConfig c;
  c.model_dir = test::golden_dir() / "bert" / "small";
  c.train_file = data;
  c.out = out;
  c.memory_budget = 1024;
  Trainer t(c, nullptr);
  REQUIRE_THROWS_AS(t.run(), PlanError);
  CHECK_FALSE(fs::exists(out));
}

// A run of the small golden model on `rows` labelled rows written to a file named after `tag`,
// its run folder under the same name (both removed first).
TrainConfig small_run(const std::string& tag, int rows) {
  const fs::path out = fs::temp_directory_path() / ("edgetune-planner-" + tag);
  fs::remove_all(out);
  const fs::path data = fs::temp_directory_path() / ("edgetune-planner-" + tag + ".tsv");
  std::ofstream f(data);
  f << "sentence\tlabel\n";
  for (int i = 0; i < rows; ++i) f << (i % 2 ? "a good day number " : "a bad day number ") << i << "\t" << i % 2 << "\n";
  TrainConfig c;
  c.model_dir = test::golden_dir() / "bert" / "small";
  c.train_file = data;
  c.out = out;
  return c;
}

TEST_CASE("planner: training under a budget stays under it, and the plan is printed", "[planner][memory]") {
  TrainConfig c = small_run("run", 32);
  c.epochs = 1;
  c.batch_size = 16;
  c.quant = DType::Q4;
  c.threads = 1;
  // Between the smallest plan and the unconstrained one, above the process's baseline and the
  // heap slack: the planner has to choose.
  PlanRequest r = plan_request(load_config(c.model_dir), c, 16);
  r.config.num_labels = 2;
  const std::size_t low = estimate_memory(r, true, 1).total(), high = estimate_memory(r, false, 16).total();
  const std::size_t slack = estimate_memory(r, false, 16).heap_bytes / kHeapSlackDivisor;
  // In a sanitizer build ASan's shadow memory and quarantine are the process's and take it past
  // such a budget (the run stops with ProcessBudgetExceeded): there the budget is the session's,
  // without a baseline, and the planner still has to choose.
  const bool instrumented = EDGETUNE_INSTRUMENTED;
  if (instrumented) {
    c.budget_scope = BudgetScope::Session;
    c.memory_budget = (low + high) / 2 + slack;
  } else {
    c.memory_budget = measure_baseline().total() + (low + high) / 2 + slack;
  }
  std::ostringstream log;
  Trainer t(c, &log);
  const TrainResult res = t.run();
  REQUIRE(res.steps == 2);
  REQUIRE(log.str().find("plan: ") != std::string::npos);
  REQUIRE(res.accountant_peak <= c.memory_budget);
  if (!instrumented) REQUIRE(res.peak_rss <= c.memory_budget);
  fs::remove_all(c.out);
  fs::remove(c.train_file);
}

TEST_CASE("planner: a run whose process passes its budget stops with a checkpoint, and resumes",
          "[planner][memory]") {
  TrainConfig c = small_run("guard", 64);
  c.epochs = 1;
  c.batch_size = 16;
  c.quant = DType::Q4;
  c.threads = 1;
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  // Room for the plan (whose baseline is this process's VmRSS, at most its VmHWM) with 64 MiB to
  // spare; then memory the accountant never sees, written after the first step, takes the
  // process's VmHWM past the budget, as a growing heap would.
  c.memory_budget = process_peak_rss() + 64 * kMiB;
  std::vector<char> outside;
  RunHooks hooks;
  hooks.should_stop = [&] {
    if (outside.empty()) outside.assign(c.memory_budget - process_rss() + 8 * kMiB, 1);
    return false;
  };

  SECTION("process scope: stopped after the step that passed it") {
    std::ostringstream log;
    Trainer t(c, &log);
    try {
      t.run(hooks);
      FAIL("the run went on past its budget");
    } catch (const ProcessBudgetExceeded& e) {
      // The hook runs after the budget's check of step 1, so step 2's check finds it.
      REQUIRE(e.step == 2);
      REQUIRE(e.budget == c.memory_budget);
      REQUIRE(e.peak_rss > c.memory_budget);
      const std::string m = e.what();
      REQUIRE_THAT(m, Catch::StartsWith("the process's peak resident set (VmHWM) reached " +
                                        format_bytes(e.peak_rss) + " at step 2, past the memory budget of " +
                                        format_bytes(c.memory_budget)));
      REQUIRE_THAT(m, Catch::Contains("checkpoint saved in " + c.out.string()) &&
                          Catch::Contains("edgetune train --resume " + c.out.string() + " --memory-budget "));
      REQUIRE(m.find('\n') == std::string::npos);
    }
    REQUIRE(fs::exists(c.out / "train_state.safetensors"));
    // The checkpoint is step 2's: a resume under a budget above this process's VmHWM (which never
    // falls) runs the two steps left.
    outside = {'x'};
    ResumeOverrides more;
    more.memory_budget = process_peak_rss() + 64 * kMiB;
    const TrainResult res = Trainer::resume(c.out, &log, more).run();
    REQUIRE(res.steps == 4);
    REQUIRE(fs::exists(c.out / "adapter_model.safetensors"));
  }
  SECTION("session scope: the process's resident set is not the run's to bound") {
    c.budget_scope = BudgetScope::Session;
    std::ostringstream log;
    Trainer t(c, &log);
    const TrainResult res = t.run(hooks);
    REQUIRE(res.steps == 4);
    REQUIRE(res.peak_rss > c.memory_budget);
    REQUIRE(res.accountant_peak <= c.memory_budget);
  }
  fs::remove_all(c.out);
  fs::remove(c.train_file);
}

TEST_CASE("planner: the accountant stops a step that would pass the budget with BudgetExceeded",
          "[planner][memory]") {
  Context context;
  const ContextScope scope(context);
  Accountant& acc = *context.accountant;
  const PlanRequest r = request(Method::Lora, DType::Q8, 8, 64);
  MethodOptions m = r.method;
  BertModel model = init_bert(r.config, load_options_for(m, r.base, r.quant_embeddings));
  attach_adapters(model, m);
  auto params = trainable_params(model);
  auto opt = optim::make_adamw({});
  const TensorBatch batch = synthetic_batch(8, 64, r.config.vocab_size);
  // Room for a little more than the weights: the forward pass cannot fit.
  acc.set_budget(acc.live_total() + (1u << 20));
  REQUIRE_THROWS_AS(train_step(model, params, *opt, std::span<const TensorBatch>(&batch, 1), 1e-3, {}),
                    BudgetExceeded);
  acc.set_budget(0);
  // Nothing leaked: the failed step's activations were freed, and a step now succeeds.
  optim::zero_grad(params);
  REQUIRE_NOTHROW(train_step(model, params, *opt, std::span<const TensorBatch>(&batch, 1), 1e-3, {}));
}

TEST_CASE("planner: a plan's micro-batches and checkpointing train on the batch's own dropout masks",
          "[planner][dropout]") {
  const PlanRequest r = request(Method::Lora, DType::F32, 8, 16);
  REQUIRE(r.config.hidden_dropout_prob > 0);
  REQUIRE(r.config.attention_probs_dropout_prob > 0);
  const TensorBatch batch = synthetic_batch(8, 16, r.config.vocab_size);
  // The trainable parameters after two SGD steps, and where the dropout generator ends.
  auto train = [&](std::int64_t micro, bool checkpoint, std::uint64_t seed) {
    Context context;
    const ContextScope scope(context);
    MethodOptions m = r.method;
    BertModel model = init_bert(r.config, load_options_for(m, r.base, r.quant_embeddings));
    attach_adapters(model, m);
    auto params = trainable_params(model);
    auto opt = optim::make_sgd({});
    StepOptions so;
    so.micro_batch = micro;
    so.checkpoint_layers = checkpoint;
    manual_seed(seed);
    for (int i = 0; i < 2; ++i) train_step(model, params, *opt, std::span<const TensorBatch>(&batch, 1), 0.5, so);
    std::vector<float> out;
    for (const auto& p : params) {
      const auto v = p.tensor.to_vector();
      out.insert(out.end(), v.begin(), v.end());
    }
    return std::pair{out, dropout_rng().counter};
  };
  auto max_diff = [](const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
    return d;
  };
  const auto [whole, end] = train(0, false, 7);
  const auto [micro, micro_end] = train(3, false, 7);          // parts of 3, 3 and 2 rows
  const auto [ckpt, ckpt_end] = train(3, true, 7);
  const auto [other_masks, other_end] = train(0, false, 8);   // what other masks do
  REQUIRE(micro_end == end);
  REQUIRE(ckpt_end == end);
  // Float rounding apart (the parts' gradients are summed in another order), the same steps.
  CHECK(max_diff(whole, micro) < 1e-5);
  CHECK(max_diff(whole, ckpt) < 1e-5);
  REQUIRE(max_diff(whole, other_masks) > 1e-3);
}

// ---- the process's share: baseline, heap slack, data, vocabulary

TEST_CASE("planner: the baseline is measured, and the plan fits it beside the accountant's estimate",
          "[planner][baseline]") {
  const Baseline b = measure_baseline();
  // This process maps its code and libraries: well over a MiB resident.
  REQUIRE(b.resident > (std::size_t{1} << 20));
  REQUIRE(b.resident <= process_rss());
  REQUIRE(b.allocator == kAllocatorAllowance);
  REQUIRE(b.total() == b.resident + b.threads + b.allocator + b.heap_free);
  REQUIRE_THAT(b.describe(), Catch::StartsWith("baseline " + format_bytes(b.total())));

  PlanRequest r = request(Method::Lora, DType::Q4, 16, 128);
  r.baseline = b.total();
  const Plan free = choose_plan(r, 0);
  REQUIRE(free.peak() ==
          free.estimate.total() + free.estimate.heap_bytes / kHeapSlackDivisor + b.total());
  // A budget that holds the unconstrained estimate but not the baseline beside it takes a
  // smaller plan, whose peak (baseline included) fits; the accountant gets what is left.
  const std::size_t budget = free.estimate.total() + b.total();
  const Plan p = choose_plan(r, budget);
  REQUIRE(p.peak() <= budget);
  REQUIRE(p.estimate.total() < free.estimate.total());
  REQUIRE(p.accountant_budget() == budget - b.total() - p.heap_slack());
  REQUIRE_THAT(p.describe(), Catch::Contains("baseline " + format_bytes(b.total())) &&
                                 Catch::Contains("heap slack " + format_bytes(p.heap_slack())));
}

TEST_CASE("planner: quantized embeddings hold the word table in the base storage, positions in q8",
          "[planner][memory]") {
  Context context;
  const ContextScope scope(context);
  MethodOptions m;
  m.method = Method::Lora;
  const BertModel q4 = init_bert(mini_config(), load_options_for(m, DType::Q4, true));
  REQUIRE(q4.word_embeddings.dtype() == DType::Q4);
  REQUIRE(q4.position_embeddings.dtype() == DType::Q8);  // a small table every token adds
  REQUIRE(q4.token_type_embeddings.dtype() == DType::F32);
  const BertModel plain = init_bert(mini_config(), load_options_for(m, DType::Q4, false));
  REQUIRE(plain.word_embeddings.dtype() == DType::F32);
  REQUIRE(plain.position_embeddings.dtype() == DType::F32);
  const BertModel f32 = init_bert(mini_config(), load_options_for(m, DType::F32, true));
  REQUIRE(f32.position_embeddings.dtype() == DType::F32);
}

TEST_CASE("planner: the heap slack is reserved for the blocks under the mapping threshold only",
          "[planner][baseline]") {
  // A model whose every tensor is under kMapThreshold: all of it is heap, but the data set.
  PlanRequest tiny = request(Method::Lora, DType::Q8, 1, 4);
  tiny.config = config_of(50, 16, 1, 2, 16, 16);  // F = 16: the dequantization tile (128, F) too
  tiny.data_bytes = std::size_t{1} << 20;
  const MemoryEstimate all_heap = estimate_memory(tiny, false, 1);
  REQUIRE(all_heap.heap_bytes > 0);
  REQUIRE(all_heap.heap_bytes == all_heap.total() - tiny.data_bytes);

  // BERT-base, q4 base and embeddings, LoRA r8 on query,value, 8 x 128: the weights, the LoRA
  // matrices and the activations are mapped blocks; the heap holds the biases, the LayerNorms,
  // the token-type table, the classifier and the LayerNorm statistics, well under a MiB. The
  // process budget of 96 MiB then fits beside the baseline the bench measures.
  PlanRequest base = request(Method::Lora, DType::Q4, 8, 128);
  base.config = config_of(30522, 768, 12, 12, 3072, 512);
  base.method.lora.rank = 8;
  base.method.lora_targets = {"query", "value"};
  base.baseline = std::size_t{19} << 19;  // 9.5 MiB
  const Plan p = choose_plan(base, std::size_t{96} << 20);
  REQUIRE(p.estimate.total() > (std::size_t{80} << 20));
  REQUIRE(p.estimate.heap_bytes < (std::size_t{1} << 20));
  REQUIRE(p.heap_slack() == p.estimate.heap_bytes / kHeapSlackDivisor);
  REQUIRE(p.peak() == p.estimate.total() + p.heap_slack() + base.baseline);
  REQUIRE(p.peak() <= (std::size_t{96} << 20));
}

TEST_CASE("planner: a budget the baseline fills fails before training, naming the baseline",
          "[planner][baseline]") {
  PlanRequest r = request(Method::Lora, DType::Q4, 8, 64);
  r.baseline = std::size_t{40} << 20;
  const MemoryEstimate smallest = estimate_memory(r, true, 1);
  REQUIRE_THROWS_WITH(choose_plan(r, r.baseline + smallest.total() / 2),
                      Catch::Contains("baseline 40.0 MiB") && Catch::Contains("raise --memory-budget"));
}

TEST_CASE("planner: the data set's bytes are their own category of the estimate", "[planner][data]") {
  PlanRequest r = request(Method::Lora, DType::Q4, 8, 64);
  const MemoryEstimate without = estimate_memory(r, false, 8);
  REQUIRE(without.bytes[static_cast<int>(MemCategory::Data)] == 0);
  r.data_bytes = 3 << 20;
  const MemoryEstimate with = estimate_memory(r, false, 8);
  REQUIRE(with.bytes[static_cast<int>(MemCategory::Data)] == r.data_bytes);
  REQUIRE(with.total() == without.total() + r.data_bytes);
  REQUIRE_THAT(with.summary(), Catch::Contains("data 3.0 MiB"));
  // The data counts against the budget like the weights: a budget the data alone fills fails.
  REQUIRE_THROWS_AS(choose_plan(r, r.data_bytes), PlanError);
}

TEST_CASE("planner: training counts the packed rows and the vocabulary as data, exactly", "[planner][data][vocab]") {
  TrainConfig c = small_run("data", 40);
  c.max_steps = 1;
  c.batch_size = 4;
  c.threads = 1;
  c.eval_split = 0.25;
  std::size_t data_live = 0;
  RunHooks hooks;
  // Progress is reported on the run's thread with the run's context current.
  hooks.on_progress = [&](const Progress&) { data_live = current_context().accountant->live(MemCategory::Data); };
  c.log_every = 1;
  std::ostringstream log;
  std::shared_ptr<const Accountant> accountant;
  {
    Trainer t(c, &log);
    accountant = t.accountant();
    t.run(hooks);
  }
  // Two stores (training and evaluation rows), each one block of ids and one of row facts, and
  // the tokenizer's tables and the replay buffer (the 30 training rows) charged by their size.
  const data::WordPieceTokenizer tok = data::load_tokenizer_from_model_dir(c.model_dir);
  const std::size_t block = accounted_bytes(data::TokenStore::kBlockIds * sizeof(std::int32_t));
  const data::ReplayBuffer replay = data::ReplayBuffer::load(c.out / "replay.json");
  REQUIRE(replay.size() == 30);
  REQUIRE(replay.bytes() > 0);
  REQUIRE(data_live == 4 * block + tok.bytes() + replay.bytes());
  // The trainer gave all of it back.
  REQUIRE(accountant->live(MemCategory::Data) == 0);
  fs::remove_all(c.out);
  fs::remove(c.train_file);
}

TEST_CASE("planner: a model file's base is counted mapped, apart from the private estimate", "[planner][memory]") {
  test::TempDir tmp("planner_mapped");
  const fs::path tiny = test::golden_dir() / "bert" / "tiny";
  CompressOptions o;
  o.quant = DType::Q4;
  o.quant_embeddings = true;
  const fs::path file = tmp.path / "tiny-q4.safetensors";
  compress_model(tiny, file, o);

  PlanRequest r;
  r.config = load_config(file);
  r.method.method = Method::Lora;
  r.base = DType::Q4;
  r.batch = 4;
  r.length = 16;
  PlanRequest folder = r;
  folder.config = load_config(tiny);
  plan_model_source(folder, tiny);
  CHECK(folder.file_tensors.empty());
  CHECK(estimate_memory(folder, false, 4).mapped == 0);

  plan_model_source(r, file);
  CHECK(r.quant_embeddings);  // taken from the file, as the loader takes it
  const MemoryEstimate e = estimate_memory(r, false, 4);
  // The bytes of every tensor the loader maps: values and scales.
  const BertModel m = load_bert(file, load_options_for(r.method, r.base, false));
  std::size_t mapped = 0;
  for (const auto& [name, t] : m.named_tensors()) {
    if (!t.is_mapped()) continue;
    mapped += t.impl()->storage->bytes() + (t.impl()->scales ? t.impl()->scales->bytes() : 0);
  }
  REQUIRE(mapped > 0);
  CHECK(e.mapped == mapped);
  CHECK(e.bytes[static_cast<int>(MemCategory::BaseWeights)] >= e.mapped);
  // Both count toward the budget; the accountant's share leaves the mapped bytes out.
  const Plan p = choose_plan(r, std::size_t{64} << 20);
  CHECK(p.peak() == p.estimate.total());
  CHECK(p.accountant_budget() == (std::size_t{64} << 20) - e.mapped);
  CHECK_THAT(p.describe(), Catch::Contains("; mapped from the model file " + format_bytes(e.mapped) + ", private " +
                                           format_bytes(p.peak() - e.mapped)));
  CHECK(choose_plan(folder, std::size_t{64} << 20).describe().find("mapped") == std::string::npos);
}

TEST_CASE("planner: after pruning, the activation estimate follows each layer's heads and neurons and stays an "
          "upper bound of the accountant's peak",
          "[planner][memory]") {
  struct C {
    Method method;
    DType base;
    bool ckpt;
  };
  const C cases[] = {{Method::Lora, DType::Q4, false}, {Method::Lora, DType::Q4, true},
                     {Method::Adapter, DType::Q8, false}, {Method::Full, DType::F32, false},
                     {Method::Head, DType::Q8, false}};
  for (const C& c : cases) {
    PlanRequest unpruned = request(c.method, c.base, 8, 64);
    // LoRA on all six modules takes every pruned shape.
    unpruned.method.lora_targets = {"query", "key", "value", "attention.output", "intermediate", "output"};
    PlanRequest pruned = unpruned;
    pruned.config.pruned_heads = {{0, {0, 1, 3}}, {1, {2}}, {2, {0, 1}}};
    pruned.config.intermediate_sizes = {128, 384, 192};
    const Plan plan = choose_plan(pruned, 0, c.ckpt, 8);
    const Measured got = measure(pruned, plan);
    const std::size_t peak = got.peak;
    const MemoryEstimate before = estimate_memory(unpruned, c.ckpt, 8);
    const auto acts = static_cast<int>(MemCategory::Activations);
    INFO(method_name(c.method) << " " << dtype_name(c.base) << (c.ckpt ? " checkpointed" : "") << ": estimate "
                               << format_bytes(plan.estimate.total()) << ", measured " << format_bytes(peak)
                               << ", unpruned estimate " << format_bytes(before.total()));
    // The tensors at the pruned shapes, to the byte.
    for (MemCategory m : {MemCategory::BaseWeights, MemCategory::Trainable, MemCategory::Grads,
                          MemCategory::OptimizerState}) {
      CHECK(plan.estimate.bytes[static_cast<int>(m)] == got.category[static_cast<int>(m)]);
    }
    CHECK(plan.estimate.total() >= peak);
    CHECK(plan.estimate.total() < before.total());
    if (c.method != Method::Head) CHECK(plan.estimate.bytes[acts] < before.bytes[acts]);
  }
}
