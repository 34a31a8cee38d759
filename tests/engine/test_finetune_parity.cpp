// Step-for-step parity of fine-tuning with PyTorch: ten optimizer steps of train_step (trainer.h)
// per method and base storage, against tests/golden/finetune/make_finetune_goldens.py, which takes
// the same steps in float64 PyTorch from the same starting adapter and the same batches.
//
//   lora     LoRA r 4 / alpha 8 on query, value + AdamW 1e-3 (wd 0.01), linear, clip 1.0
//   adapter  Houlsby (8, GELU) + Adam 1e-3 (L2 0.01), constant, clip 1.0
//   bitfit   biases + classifier.weight, SGD Nesterov 0.9, lr 0.05, wd 0.01, constant, clip 1.0
//   full     every tensor, AdamW 1e-4 (wd 0.01), linear with 3 warmup steps, clip 0.1, accum 2
// each over f32, q8 and q4 bases (full: f32 only), and lora again with micro-batches of 3 rows
// and checkpointed encoder layers, which must not change the result.
//
// Compared after the 10 steps: every trainable tensor (rtol 1e-4, with an absolute floor of 1e-4
// times the tensor's largest |value|), the loss and gradient norm of every step (rtol 1e-4), and
// the learning rate of every step (exactly: the schedule uses the same double operations).
// The floor: edgetune trains in float32, and an element that ends near 0 (a bias crossing zero, a
// LoRA entry that changed sign) carries absolute float32 error on the scale of its tensor's
// values, not of its own; 1e-4 of the tensor's scale is the same relative standard applied there.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/trainer.h"
#include "edgetune/optim/schedule.h"
#include "finetune_golden.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

constexpr double kRtol = 1e-4;
constexpr double kFloor = 1e-4;  // times the tensor's largest |value|
constexpr std::int64_t kSteps = 10;

fs::path finetune_dir() {
  return test::golden_dir() / "finetune";
}
fs::path tiny_dir() {
  return test::golden_dir() / "bert" / "tiny";
}

struct Spec {
  std::string name;  // golden case, and the folder of its starting adapter under init/
  Method method;
  double lr;
  optim::Schedule::Kind schedule;
  double warmup_ratio;
  double max_grad_norm;
  int grad_accum;
  std::function<std::unique_ptr<optim::Optimizer>()> optimizer;
};

Spec lora_spec() {
  return {"lora", Method::Lora, 1e-3, optim::Schedule::Kind::Linear,
          0.0,    1.0,          1,    [] { return optim::make_adamw({0.9, 0.999, 1e-8, 0.01}); }};
}
Spec adapter_spec() {
  return {"adapter", Method::Adapter,
          1e-3,      optim::Schedule::Kind::Constant,
          0.0,       1.0,
          1,         [] { return optim::make_adam({0.9, 0.999, 1e-8, 0.01}); }};
}
Spec bitfit_spec() {
  return {"bitfit", Method::BitFit,
          0.05,     optim::Schedule::Kind::Constant,
          0.0,      1.0,
          1,        [] { return optim::make_sgd({0.9, 0.0, 0.01, true}); }};
}
Spec full_spec() {
  return {"full", Method::Full, 1e-4, optim::Schedule::Kind::Linear,
          0.3,    0.1,          2,    [] { return optim::make_adamw({0.9, 0.999, 1e-8, 0.01}); }};
}

// How far one tensor (or series) is from its golden.
struct Diff {
  double ratio = 0;   // max |a - b| / (atol + rtol |b|): passes at <= 1
  double rel = 0;     // max |a - b| / |b| over elements with |b| above the floor
  double abs = 0;     // max |a - b|
  std::string where;  // the element of the worst ratio
};

Diff compare(const std::vector<double>& a, const std::vector<double>& b, double rtol, double atol) {
  REQUIRE(a.size() == b.size());
  Diff d;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(a[i] - b[i]);
    const double ratio = err / (atol + rtol * std::fabs(b[i]));
    if (!(ratio <= d.ratio)) {  // also catches NaN
      d.ratio = ratio;
      std::ostringstream s;
      s << "[" << i << "] " << a[i] << " vs " << b[i];
      d.where = s.str();
    }
    d.abs = std::max(d.abs, err);
    if (std::fabs(b[i]) > atol) d.rel = std::max(d.rel, err / std::fabs(b[i]));
  }
  return d;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// tiny with the base stored as `base`, dropout off, and the case's starting adapter loaded.
BertModel load_case(const Spec& s, DType base) {
  MethodOptions mo;
  mo.method = s.method;
  BertModel m = load_bert(tiny_dir(), load_options_for(mo, base, false));
  REQUIRE(m.layers.at(0).query.weight.dtype() == base);
  REQUIRE(m.pooler.weight.dtype() == base);
  m.config.hidden_dropout_prob = 0;
  m.config.attention_probs_dropout_prob = 0;
  m.config.classifier_dropout = 0.0;
  if (s.method != Method::Full) {
    const MethodOptions read = load_trained(m, finetune_dir() / "init" / s.name);
    REQUIRE(read.method == s.method);
    if (s.method == Method::Lora) {
      REQUIRE(read.lora.rank == 4);
      REQUIRE(read.lora.alpha == 8.0);
      REQUIRE(read.lora.dropout == 0.0);
      REQUIRE(read.lora_targets == std::vector<std::string>{"query", "value"});
    }
    if (s.method == Method::Adapter) {
      REQUIRE(read.adapter_size == 8);
      REQUIRE(read.adapter_act == adapters::BottleneckAct::Gelu);
    }
  }
  return m;
}

std::string meta(const safetensors::Reader& g, const std::string& key) {
  const auto m = g.metadata();
  const auto it = m.find(key);
  return it == m.end() ? std::string("(missing)") : it->second;
}

// Ten train_steps of the case over the golden batches; every figure compared with the golden.
void check_case(const Spec& s, DType base, StepOptions so = {}) {
  const std::string label = s.name + "-" + dtype_name(base);
  INFO(label << (so.micro_batch ? " micro-batch " + std::to_string(so.micro_batch) : "")
             << (so.checkpoint_layers ? " checkpointed" : ""));
  safetensors::Reader g(finetune_dir() / (label + ".safetensors"));
  REQUIRE(meta(g, "format") == "edgetune-golden-finetune");
  REQUIRE(meta(g, "version") == "1");
  // The settings here are the script's (a drift on either side fails here, not as a mystery).
  REQUIRE(std::stod(meta(g, "lr")) == s.lr);
  REQUIRE(std::stod(meta(g, "max_grad_norm")) == s.max_grad_norm);
  REQUIRE(std::stoi(meta(g, "grad_accum")) == s.grad_accum);
  REQUIRE(std::stod(meta(g, "warmup_ratio")) == s.warmup_ratio);
  REQUIRE(std::stoll(meta(g, "steps")) == kSteps);

  const std::vector<TensorBatch> batches = test::golden_batches();
  REQUIRE(batches.size() >= static_cast<size_t>(kSteps * s.grad_accum));
  BertModel m = load_case(s, base);
  std::vector<optim::Param> params = trainable_params(m);
  const std::unique_ptr<optim::Optimizer> opt = s.optimizer();
  const optim::Schedule schedule(s.schedule, optim::warmup_steps_from_ratio(kSteps, s.warmup_ratio),
                                 kSteps);
  REQUIRE(schedule.warmup_steps() == std::stoll(meta(g, "warmup_steps")));
  so.max_grad_norm = s.max_grad_norm;

  const std::vector<double> lr_ref = g.load("lr", DType::F64).to_vector();
  std::vector<double> losses, norms;
  for (std::int64_t k = 0; k < kSteps; ++k) {
    const double lr = s.lr * schedule.factor(opt->steps());
    CHECK(lr == lr_ref.at(static_cast<size_t>(k)));
    const std::span<const TensorBatch> group(batches.data() + k * s.grad_accum,
                                             static_cast<size_t>(s.grad_accum));
    const StepResult r = train_step(m, params, *opt, group, lr, so);
    losses.push_back(r.loss);
    norms.push_back(r.grad_norm);
  }

  const Diff loss = compare(losses, g.load("loss", DType::F64).to_vector(), kRtol, 0);
  INFO("loss per step: worst relative difference " << loss.rel << " at " << loss.where);
  CHECK(loss.ratio <= 1);
  const Diff norm = compare(norms, g.load("grad_norm", DType::F64).to_vector(), kRtol, 0);
  INFO("gradient norm per step: worst relative difference " << norm.rel << " at " << norm.where);
  CHECK(norm.ratio <= 1);

  // Every trainable tensor, and nothing more or less than the golden's.
  std::set<std::string> golden_names;
  for (const auto& info : g.tensors()) {
    if (info.name.starts_with("param.")) golden_names.insert(info.name.substr(6));
  }
  std::set<std::string> names;
  Diff worst;
  std::string worst_name;
  for (const optim::Param& p : params) {
    names.insert(p.name);
    if (!golden_names.count(p.name)) continue;
    const std::vector<double> ref = g.load("param." + p.name).to_vector();
    const Diff d = compare(p.tensor.to_vector(), ref, kRtol, kFloor * max_abs(ref));
    INFO(p.name << ": worst " << d.where << " (relative " << d.rel << ", absolute " << d.abs
                << ")");
    CHECK(d.ratio <= 1);
    if (d.ratio >= worst.ratio) worst = d, worst_name = p.name;
    worst.rel = std::max(worst.rel, d.rel);
    worst.abs = std::max(worst.abs, d.abs);
  }
  CHECK(names == golden_names);
  // One line per run with the measured distance (shown by a run with -s).
  INFO(label << ": params worst relative " << worst.rel << ", worst absolute " << worst.abs
             << ", worst fraction of tolerance " << worst.ratio << " (" << worst_name << ")"
             << "; loss worst relative " << loss.rel << "; grad norm worst relative " << norm.rel);
  CHECK(worst.ratio <= 1);
}

}  // namespace

TEST_CASE("parity: LoRA + AdamW, linear decay, 10 steps as PyTorch (f32, q8, q4 bases)",
          "[golden][finetune][parity]") {
  for (DType base : {DType::F32, DType::Q8, DType::Q4}) check_case(lora_spec(), base);
}

TEST_CASE("parity: LoRA in micro-batches of 3 with checkpointed layers, same goldens",
          "[golden][finetune][parity]") {
  StepOptions so;
  so.micro_batch = 3;
  so.checkpoint_layers = true;
  for (DType base : {DType::F32, DType::Q8, DType::Q4}) check_case(lora_spec(), base, so);
}

TEST_CASE("parity: Houlsby + Adam (L2 decay), 10 steps as PyTorch (f32, q8, q4 bases)",
          "[golden][finetune][parity]") {
  for (DType base : {DType::F32, DType::Q8, DType::Q4}) check_case(adapter_spec(), base);
}

TEST_CASE("parity: BitFit + SGD Nesterov, 10 steps as PyTorch (f32, q8, q4 bases)",
          "[golden][finetune][parity]") {
  for (DType base : {DType::F32, DType::Q8, DType::Q4}) check_case(bitfit_spec(), base);
}

TEST_CASE("parity: full + AdamW, warmup, clipping, grad_accum 2, 10 steps as PyTorch",
          "[golden][finetune][parity]") {
  check_case(full_spec(), DType::F32);
}
