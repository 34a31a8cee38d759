// SGD, Adam and AdamW against torch.optim (tests/golden/optim/make_optim_goldens.py, Debian's
// python3-torch 1.13): each case replays torch's 10 gradient sets, with the same Hugging Face
// schedule and clipping, and requires every parameter after every step, and the optimizer state
// after the last, within rtol 1e-6 in float32 and 1e-12 in float64. The lr of every step must be
// the very double torch used, and the total grad norm within 1e-6 of torch's.
//
// Clipped cases run twice. Given torch's total norm (clip_grads_to_norm), the trajectory must
// match like the others. With our own norm (clip_grad_norm) it cannot be bit-identical: torch sums
// float32 squares in float32, we sum in double, and at some steps the two norms differ in the last
// bit of a float; the clip coefficient then differs by one ulp, every grad by a relative ~6e-8,
// and elements that cancel to near zero (a parameter crossing 0, a first moment whose signs
// alternate) show that as a large relative error though the absolute one is ~1e-9. That run is
// compared relative to each tensor's largest magnitude instead.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/optim/clip.h"
#include "edgetune/optim/optimizer.h"
#include "edgetune/optim/schedule.h"
#include "test_support.h"

using namespace edgetune;
using namespace edgetune::optim;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Largest |a - b| / |b| over the elements (infinite where b == 0 but a != 0), or with
// per_tensor, |a - b| / max|b| of the tensor; and how many elements are not bit-identical.
struct Diff {
  bool per_tensor = false;
  double worst = 0;
  std::size_t differ = 0;
  std::size_t total = 0;
  void add(const std::vector<double>& a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    double scale = 0;
    if (per_tensor) {
      for (double v : b) scale = std::max(scale, std::fabs(v));
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (a[i] == b[i]) continue;
      ++differ;
      const double ref = std::max(std::fabs(b[i]), scale);
      worst = std::max(worst, ref == 0 ? INFINITY : std::fabs(a[i] - b[i]) / ref);
    }
    total += a.size();
  }
};

// The total norm the grads of a clipped case are scaled by.
enum class Norm { Ours, Torchs };

std::unique_ptr<Optimizer> make_from(const std::map<std::string, std::string>& m) {
  const std::string& kind = m.at("optimizer");
  if (kind == "sgd") {
    SgdOptions o;
    o.momentum = std::stod(m.at("momentum"));
    o.dampening = std::stod(m.at("dampening"));
    o.weight_decay = std::stod(m.at("weight_decay"));
    o.nesterov = m.at("nesterov") == "1";
    return make_sgd(o);
  }
  AdamOptions o;
  o.beta1 = std::stod(m.at("beta1"));
  o.beta2 = std::stod(m.at("beta2"));
  o.eps = std::stod(m.at("eps"));
  o.weight_decay = std::stod(m.at("weight_decay"));
  REQUIRE((kind == "adam" || kind == "adamw"));
  return kind == "adam" ? make_adam(o) : make_adamw(o);
}

Schedule::Kind schedule_kind(const std::string& s) {
  if (s == "constant") return Schedule::Kind::Constant;
  if (s == "linear") return Schedule::Kind::Linear;
  REQUIRE(s == "cosine");
  return Schedule::Kind::Cosine;
}

void replay(const std::string& name, Norm norm = Norm::Torchs) {
  safetensors::Reader g(test::golden_dir() / "optim" / (name + ".safetensors"));
  const auto meta = g.metadata();
  REQUIRE(meta.at("format") == "edgetune-golden-optim");
  REQUIRE(meta.at("version") == "1");
  const DType dtype = meta.at("dtype") == "f64" ? DType::F64 : DType::F32;
  const double rtol = dtype == DType::F64 ? 1e-12 : 1e-6;
  const std::vector<std::string> names = split(meta.at("params"));
  const auto no_decay_list = split(meta.at("no_decay"));
  const std::set<std::string> no_decay(no_decay_list.begin(), no_decay_list.end());

  std::vector<Param> params;
  for (const auto& n : names) {
    Tensor t = g.load("init/" + n, dtype, MemCategory::Trainable);
    t.set_requires_grad(true);
    params.push_back({n, t, no_decay.count(n) == 0});
  }
  auto opt = make_from(meta);
  REQUIRE(opt->name() == meta.at("optimizer"));
  const Schedule schedule(schedule_kind(meta.at("schedule")), std::stoll(meta.at("warmup_steps")),
                          std::stoll(meta.at("total_steps")));
  const double base_lr = std::stod(meta.at("lr"));
  const double max_norm = std::stod(meta.at("max_norm"));
  const std::vector<double> torch_lr = g.load("lr", DType::F64).to_vector();
  const std::vector<double> torch_norm =
      max_norm > 0 ? g.load("norm", DType::F64).to_vector() : std::vector<double>{};
  const int steps = std::stoi(meta.at("steps"));

  Diff param_diff, norm_diff, state_diff;
  param_diff.per_tensor = state_diff.per_tensor = norm == Norm::Ours;
  for (int k = 0; k < steps; ++k) {
    for (Param& p : params) {
      const std::string key = "grad/" + std::to_string(k) + "/" + p.name;
      p.tensor.set_grad(g.find(key) ? g.load(key, dtype, MemCategory::Grads) : Tensor());
    }
    if (max_norm > 0 && norm == Norm::Ours) {
      norm_diff.add({clip_grad_norm(params, max_norm)}, {torch_norm[k]});
    } else if (max_norm > 0) {
      norm_diff.add({grad_norm(params)}, {torch_norm[k]});
      clip_grads_to_norm(params, max_norm, torch_norm[k]);
    }
    const double lr = base_lr * schedule.factor(k);
    INFO(name << " step " << k);
    REQUIRE(lr == torch_lr[static_cast<std::size_t>(k)]);
    opt->step(params, lr);
    REQUIRE(opt->steps() == k + 1);
    for (const Param& p : params) {
      param_diff.add(p.tensor.to_vector(),
                     g.load("param/" + std::to_string(k) + "/" + p.name, DType::F64).to_vector());
    }
  }

  // The state after the last step: every entry torch has, and nothing else but "step".
  std::map<std::string, Tensor> ours;
  for (const auto& [key, t] : opt->state()) ours.emplace(key, t);
  REQUIRE(ours.at("step").item() == steps);
  std::size_t torch_entries = 0;
  for (const auto& info : g.tensors()) {
    if (info.name.rfind("state/", 0) != 0) continue;
    ++torch_entries;
    const std::string key = info.name.substr(6);
    INFO(name << ": state entry " << key);
    REQUIRE(ours.count(key) == 1);
    const auto expected = g.load(info, DType::F64).to_vector();
    if (key.rfind("step/", 0) == 0) {
      REQUIRE(ours.at(key).to_vector() == expected);
    } else {
      state_diff.add(ours.at(key).to_vector(), expected);
    }
  }
  REQUIRE(ours.size() == torch_entries + 1);

  std::printf(
      "optim golden %-30s %s%s: params worst rel %.2e (%zu of %zu values not "
      "bit-identical), state worst rel %.2e (%zu of %zu)",
      name.c_str(), dtype_name(dtype),
      max_norm == 0        ? ""
      : norm == Norm::Ours ? " own norm, per-tensor rel"
                           : " torch's norm",
      param_diff.worst, param_diff.differ, param_diff.total, state_diff.worst, state_diff.differ,
      state_diff.total);
  if (max_norm > 0) std::printf(", norm rel %.2e", norm_diff.worst);
  std::printf("\n");
  INFO(name << ": params worst rel " << param_diff.worst << ", state worst rel " << state_diff.worst
            << ", norm rel " << norm_diff.worst);
  CHECK(param_diff.worst <= rtol);
  CHECK(state_diff.worst <= rtol);
  CHECK(norm_diff.worst <= rtol);
}

}  // namespace

TEST_CASE("SGD matches torch.optim.SGD", "[golden][sgd]") {
  replay("sgd_plain");
  replay("sgd_momentum_dampening_wd");
  replay("sgd_nesterov_wd");
}

TEST_CASE("SGD matches torch.optim.SGD in float64 (rtol 1e-12)", "[golden][sgd]") {
  replay("sgd_momentum_dampening_wd_f64");
}

TEST_CASE("Adam matches torch.optim.Adam", "[golden][adam]") {
  replay("adam_l2");
  replay("adam_constant_warmup");
}

TEST_CASE("AdamW matches torch.optim.AdamW with HF schedules", "[golden][adamw]") {
  replay("adamw_linear");
}

TEST_CASE("AdamW matches torch.optim.AdamW after clipping to torch's total norm",
          "[golden][adamw][clip]") {
  replay("adamw_cosine_clip");
}

TEST_CASE("AdamW after clipping to its own norm stays within 1e-6 of torch per tensor",
          "[golden][adamw][clip]") {
  replay("adamw_cosine_clip", Norm::Ours);
}

TEST_CASE("AdamW matches torch.optim.AdamW when some params have no grad", "[golden][adamw]") {
  replay("adamw_skip");
}

TEST_CASE("AdamW matches torch.optim.AdamW in float64 (rtol 1e-12)", "[golden][adamw][clip]") {
  replay("adamw_cosine_clip_f64");
  replay("adamw_cosine_clip_f64", Norm::Ours);
}
