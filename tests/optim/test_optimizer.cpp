// Behaviour of the optimizers beyond the torch goldens (test_golden.cpp): per-parameter weight
// decay, params without grads, lazy state in the accountant, state()/load_state() through a
// safetensors file, zero_grad, option and argument checks, and results independent of the number
// of threads.
#include <catch2/catch.hpp>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/optim/optimizer.h"

using namespace edgetune;
using namespace edgetune::optim;
using Catch::Matchers::Contains;

namespace {

// A float leaf of `shape` with values in [-1, 1) drawn from (seed, index).
Tensor random_tensor(const Shape& shape, std::uint64_t seed, DType dtype = DType::F32,
                     MemCategory category = MemCategory::Trainable) {
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 2 * counter_uniform(seed, i) - 1;
  return Tensor::from_values(shape, v, dtype, category);
}

// Three params: a weight (decays), a bias (does not), a LoRA-like matrix (decays).
std::vector<Param> make_params(DType dtype = DType::F32) {
  std::vector<Param> ps = {
      {"encoder.dense.weight", random_tensor({8, 13}, 1, dtype), true},
      {"encoder.dense.bias", random_tensor({13}, 2, dtype), false},
      {"encoder.query.lora_A.weight", random_tensor({2, 8}, 3, dtype), true},
  };
  for (Param& p : ps) p.tensor.set_requires_grad(true);
  return ps;
}

// Gradients of step k, the same for any set of params with the same shapes.
void set_grads(std::vector<Param>& ps, int k) {
  for (std::size_t i = 0; i < ps.size(); ++i) {
    Tensor g = random_tensor(ps[i].tensor.shape(), 100 + 10 * static_cast<std::uint64_t>(k) + i,
                             ps[i].tensor.dtype(), MemCategory::Grads);
    ps[i].tensor.set_grad(g);
  }
}

std::vector<double> values(const Tensor& t) {
  return t.to_vector();
}

using Factory = std::function<std::unique_ptr<Optimizer>()>;

// One factory per optimizer kind, with every option away from its default.
std::vector<std::pair<std::string, Factory>> all_optimizers(double weight_decay = 0.1) {
  return {
      {"sgd",
       [=] {
         return make_sgd({0.9, 0.0, weight_decay, true});
       }},
      {"sgd (dampening)",
       [=] {
         return make_sgd({0.8, 0.25, weight_decay, false});
       }},
      {"adam",
       [=] {
         return make_adam({0.8, 0.95, 1e-6, weight_decay});
       }},
      {"adamw",
       [=] {
         return make_adamw({0.8, 0.95, 1e-6, weight_decay});
       }},
  };
}

// Runs steps [from, to) of the reference gradient sequence.
void run(Optimizer& opt, std::vector<Param>& ps, int from, int to) {
  for (int k = from; k < to; ++k) {
    set_grads(ps, k);
    opt.step(ps, 0.05 * (1 + k % 3));
  }
}

}  // namespace

TEST_CASE("weight decay applies only to params whose decay flag is set", "[optim]") {
  for (const auto& [kind, make] : all_optimizers(0.1)) {
    INFO(kind);
    // The same run without weight decay at all.
    auto plain = all_optimizers(0.0);
    std::unique_ptr<Optimizer> reference;
    for (auto& [k, f] : plain) {
      if (k == kind) reference = f();
    }
    auto a = make_params(), b = make_params();
    auto opt = make();
    run(*opt, a, 0, 4);
    run(*reference, b, 0, 4);
    // The bias (decay = false) moved exactly as without weight decay; the weights did not.
    REQUIRE(values(a[1].tensor) == values(b[1].tensor));
    REQUIRE(values(a[0].tensor) != values(b[0].tensor));
    REQUIRE(values(a[2].tensor) != values(b[2].tensor));
  }
}

TEST_CASE("params without a grad are left alone and get no state", "[optim]") {
  for (const auto& [kind, make] : all_optimizers()) {
    INFO(kind);
    auto ps = make_params();
    auto opt = make();
    const auto before = values(ps[2].tensor);
    for (int k = 0; k < 3; ++k) {
      set_grads(ps, k);
      ps[2].tensor.set_grad(Tensor());
      opt->step(ps, 0.1);
    }
    REQUIRE(values(ps[2].tensor) == before);
    for (const auto& [name, t] : opt->state()) REQUIRE(name.find(ps[2].name) == std::string::npos);
    REQUIRE(opt->steps() == 3);

    // Its first grad starts its state then, as torch's lazy init: Adam's bias correction uses the
    // param's own step count (1), not the optimizer's (4).
    set_grads(ps, 3);
    opt->step(ps, 0.1);
    std::map<std::string, Tensor> st;
    for (const auto& [name, t] : opt->state()) st.emplace(name, t);
    REQUIRE(st.at("step").item() == 4);
    if (opt->name() != "sgd") {
      REQUIRE(st.at("step/" + ps[2].name).item() == 1);
      REQUIRE(st.at("step/" + ps[0].name).item() == 4);
    }
  }
}

TEST_CASE("steps() counts step() calls, also when no param has a grad", "[optim]") {
  auto ps = make_params();
  auto opt = make_adamw({});
  const auto before = values(ps[0].tensor);
  opt->step(ps, 0.1);
  opt->step(ps, 0.1);
  REQUIRE(opt->steps() == 2);
  REQUIRE(values(ps[0].tensor) == before);
  REQUIRE(opt->state().size() == 1);  // just "step"
}

TEST_CASE("state is allocated lazily in OptimizerState, and SGD without momentum keeps none",
          "[optim][memory]") {
  Context context;
  const ContextScope scope(context);
  Accountant& acc = *context.accountant;
  auto ps = make_params();
  // What one copy of the params takes in the accountant (blocks are 64-byte aligned).
  std::size_t param_bytes = 0;
  for (const Param& p : ps) param_bytes += (p.tensor.nbytes() + 63) / 64 * 64;

  struct Case {
    Factory make;
    std::size_t moments;  // state tensors per param
  };
  const std::vector<std::pair<std::string, Case>> cases = {
      {"sgd", {[] { return make_sgd({}); }, 0}},
      {"sgd momentum", {[] { return make_sgd({0.9}); }, 1}},
      {"adam", {[] { return make_adam({}); }, 2}},
      {"adamw", {[] { return make_adamw({}); }, 2}},
  };
  for (const auto& [kind, c] : cases) {
    INFO(kind);
    const std::size_t live0 = acc.live(MemCategory::OptimizerState);
    auto opt = c.make();
    REQUIRE(acc.live(MemCategory::OptimizerState) == live0);
    set_grads(ps, 0);
    opt->step(ps, 0.1);
    REQUIRE(acc.live(MemCategory::OptimizerState) == live0 + c.moments * param_bytes);
    opt->step(ps, 0.1);  // no more on later steps
    REQUIRE(acc.live(MemCategory::OptimizerState) == live0 + c.moments * param_bytes);
    opt.reset();
    REQUIRE(acc.live(MemCategory::OptimizerState) == live0);
  }
}

TEST_CASE("a step whose state does not fit the budget changes nothing", "[optim][memory]") {
  Context context;
  const ContextScope scope(context);
  Accountant& acc = *context.accountant;
  auto ps = make_params();
  auto opt = make_adam({});
  set_grads(ps, 0);
  std::vector<std::vector<double>> before;
  for (const Param& p : ps) before.push_back(values(p.tensor));
  acc.trim();
  // Room for the first param's moments, not for all of them.
  acc.set_budget(acc.live_total() + 2 * ps[0].tensor.nbytes() + 64);
  REQUIRE_THROWS_AS(opt->step(ps, 0.1), BudgetExceeded);
  acc.set_budget(0);
  for (std::size_t i = 0; i < ps.size(); ++i) REQUIRE(values(ps[i].tensor) == before[i]);
  REQUIRE(opt->state().size() == 1);
  REQUIRE(opt->steps() == 0);
}

TEST_CASE("state() and load_state() through a safetensors file continue bit-identically",
          "[optim][state]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("edgetune_optim_state_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const DType dtype : {DType::F32, DType::F64}) {
    for (const auto& [kind, make] : all_optimizers()) {
      INFO(kind << " " << dtype_name(dtype));
      // Ten steps straight.
      auto straight = make_params(dtype);
      auto opt1 = make();
      run(*opt1, straight, 0, 10);

      // Five steps, save, a new optimizer (and new param tensors, as after a restart) loads the
      // file, five more.
      auto resumed = make_params(dtype);
      {
        auto opt2 = make();
        run(*opt2, resumed, 0, 5);
        safetensors::save(dir / "state.safetensors", opt2->state());
      }
      auto fresh = make_params(dtype);
      for (std::size_t i = 0; i < fresh.size(); ++i) {
        const auto v = values(resumed[i].tensor);
        fresh[i].tensor =
            Tensor::from_values(resumed[i].tensor.shape(), v, dtype, MemCategory::Trainable);
        fresh[i].tensor.set_requires_grad(true);
      }
      safetensors::Reader reader(dir / "state.safetensors");
      std::vector<std::pair<std::string, Tensor>> loaded;
      for (const auto& info : reader.tensors()) {
        loaded.emplace_back(info.name,
                            reader.load(info, info.dtype == "F64" ? DType::F64 : DType::F32,
                                        MemCategory::OptimizerState));
      }
      auto opt3 = make();
      opt3->load_state(loaded, fresh);
      REQUIRE(opt3->steps() == 5);
      run(*opt3, fresh, 5, 10);

      REQUIRE(opt3->steps() == 10);
      for (std::size_t i = 0; i < fresh.size(); ++i) {
        REQUIRE(values(fresh[i].tensor) == values(straight[i].tensor));
      }
      const auto s1 = opt1->state(), s3 = opt3->state();
      REQUIRE(s1.size() == s3.size());
      for (std::size_t i = 0; i < s1.size(); ++i) {
        REQUIRE(s1[i].first == s3[i].first);
        REQUIRE(s1[i].second.dtype() == s3[i].second.dtype());
        REQUIRE(values(s1[i].second) == values(s3[i].second));
      }
    }
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("state() names its entries as documented", "[optim][state]") {
  auto ps = make_params();
  set_grads(ps, 0);
  auto adam = make_adam({});
  adam->step(ps, 0.1);
  std::vector<std::string> names;
  for (const auto& [name, t] : adam->state()) names.push_back(name);
  const std::string w = ps[0].name;
  REQUIRE(names.size() == 1 + 3 * ps.size());
  REQUIRE(names[0] == "step");
  REQUIRE(names[1] == "step/" + w);
  REQUIRE(names[2] == "exp_avg/" + w);
  REQUIRE(names[3] == "exp_avg_sq/" + w);
  for (const auto& [name, t] : adam->state()) REQUIRE(t.category() == MemCategory::OptimizerState);

  auto sgd = make_sgd({0.9});
  sgd->step(ps, 0.1);
  const auto s = sgd->state();
  REQUIRE(s.size() == 1 + ps.size());
  REQUIRE(s[1].first == "momentum_buffer/" + w);
  REQUIRE(make_sgd({})->name() == "sgd");
  REQUIRE(make_adam({})->name() == "adam");
  REQUIRE(make_adamw({})->name() == "adamw");
}

TEST_CASE("load_state names the entry that is missing, misshapen or unknown", "[optim][state]") {
  auto ps = make_params();
  set_grads(ps, 0);
  auto src = make_adamw({});
  src->step(ps, 0.1);
  const auto good = src->state();
  const std::string w = ps[0].name;

  auto without = [&](const std::string& name) {
    auto s = good;
    std::erase_if(s, [&](const auto& e) { return e.first == name; });
    return s;
  };
  auto target = make_adamw({});
  target->step(ps, 0.1);
  target->step(ps, 0.1);
  const auto target_before = target->state();

  REQUIRE_THROWS_WITH(target->load_state(without("step"), ps), Contains("no 'step' entry"));
  REQUIRE_THROWS_WITH(target->load_state(without("exp_avg_sq/" + w), ps),
                      Contains("'exp_avg_sq/" + w + "' is missing"));
  {
    auto s = good;
    for (auto& [name, t] : s) {
      if (name == "exp_avg/" + w) t = Tensor::zeros({13, 8}, DType::F32);
    }
    REQUIRE_THROWS_WITH(target->load_state(s, ps),
                        Contains("'exp_avg/" + w + "' is f32 (13, 8)") && Contains("(8, 13)"));
  }
  {
    auto s = good;
    s.emplace_back("exp_avg/not.a.param", Tensor::zeros({3}));
    REQUIRE_THROWS_WITH(target->load_state(s, ps),
                        Contains("'exp_avg/not.a.param' matches no state"));
  }
  {
    auto s = good;
    s.push_back(good[2]);
    REQUIRE_THROWS_WITH(target->load_state(s, ps), Contains("given twice"));
  }
  {
    auto s = good;
    s[0].second = Tensor::full(Shape(), 2.5, DType::F64);
    REQUIRE_THROWS_WITH(target->load_state(s, ps), Contains("'step' is not a step count"));
  }
  {
    // An SGD state is not an Adam state.
    auto sgd = make_sgd({0.9});
    sgd->step(ps, 0.1);
    REQUIRE_THROWS_WITH(target->load_state(sgd->state(), ps),
                        Contains("entry 'momentum_buffer/") && Contains("matches no state"));
  }
  // None of the failures changed anything.
  const auto after = target->state();
  REQUIRE(after.size() == target_before.size());
  REQUIRE(target->steps() == 2);
  for (std::size_t i = 0; i < after.size(); ++i) {
    REQUIRE(after[i].first == target_before[i].first);
    REQUIRE(values(after[i].second) == values(target_before[i].second));
  }
  // A param with no entries at all starts fresh.
  auto partial = good;
  std::erase_if(partial, [&](const auto& e) { return e.first.ends_with("/" + ps[1].name); });
  target->load_state(partial, ps);
  REQUIRE(target->state().size() == partial.size());
}

TEST_CASE("zero_grad fills existing grads with zeros and keeps their buffers", "[optim]") {
  auto ps = make_params();
  set_grads(ps, 0);
  ps[1].tensor.set_grad(Tensor());
  const float* buffer = ps[0].tensor.grad().data<float>();
  zero_grad(ps);
  REQUIRE(ps[0].tensor.grad().data<float>() == buffer);
  for (const double v : values(ps[0].tensor.grad())) REQUIRE(v == 0);
  for (const double v : values(ps[2].tensor.grad())) REQUIRE(v == 0);
  REQUIRE_FALSE(ps[1].tensor.grad().defined());
}

TEST_CASE("options torch rejects are refused with the reason", "[optim][errors]") {
  REQUIRE_THROWS_WITH(make_sgd({-0.1}), Contains("momentum must be >= 0"));
  REQUIRE_THROWS_WITH(make_sgd({0.9, 0, -1}), Contains("weight_decay must be >= 0"));
  REQUIRE_THROWS_WITH(make_sgd({0, 0, 0, true}), Contains("Nesterov momentum requires"));
  REQUIRE_THROWS_WITH(make_sgd({0.9, 0.1, 0, true}), Contains("zero dampening"));
  REQUIRE_NOTHROW(make_sgd({0.9, 0, 0, true}));
  for (const auto& make : {make_adam, make_adamw}) {
    REQUIRE_THROWS_WITH(make({1.0}), Contains("beta1 must be in [0, 1)"));
    REQUIRE_THROWS_WITH(make({-0.1}), Contains("beta1 must be in [0, 1)"));
    REQUIRE_THROWS_WITH(make({0.9, 1.0}), Contains("beta2 must be in [0, 1)"));
    REQUIRE_THROWS_WITH(make({0.9, NAN}), Contains("beta2"));
    REQUIRE_THROWS_WITH(make({0.9, 0.999, -1e-8}), Contains("eps must be >= 0"));
    REQUIRE_THROWS_WITH(make({0.9, 0.999, 1e-8, -0.01}), Contains("weight_decay must be >= 0"));
  }
}

TEST_CASE("step refuses bad arguments before changing any param", "[optim][errors]") {
  auto ps = make_params();
  auto opt = make_adamw({});
  set_grads(ps, 0);
  const auto before = values(ps[0].tensor);
  REQUIRE_THROWS_WITH(opt->step(ps, -1e-3), Contains("lr must be finite and >= 0"));
  REQUIRE_THROWS_WITH(opt->step(ps, INFINITY), Contains("lr must be finite"));
  {
    auto bad = ps;
    bad[2].name = bad[0].name;
    REQUIRE_THROWS_WITH(opt->step(bad, 0.1), Contains("two params are named"));
    bad[2].name = "";
    REQUIRE_THROWS_WITH(opt->step(bad, 0.1), Contains("has no name"));
  }
  {
    auto bad = ps;
    bad[2].tensor = random_tensor({2, 8}, 9);
    bad[2].tensor.set_grad(Tensor::zeros({2, 8}, DType::F64, MemCategory::Grads));
    REQUIRE_THROWS_WITH(opt->step(bad, 0.1),
                        Contains("'" + ps[2].name + "' is f32 (2, 8) but its grad is f64 (2, 8)"));
  }
  {
    auto bad = ps;
    bad[2].tensor = Tensor::from_ints({2}, std::vector<std::int32_t>{1, 2});
    REQUIRE_THROWS_WITH(opt->step(bad, 0.1), Contains("only f32 and f64"));
  }
  {
    auto bad = ps;
    bad[2].tensor = ops::scale(ps[2].tensor, 2.0);
    REQUIRE_THROWS_WITH(opt->step(bad, 0.1), Contains("not a leaf"));
  }
  REQUIRE(values(ps[0].tensor) == before);
  REQUIRE(opt->steps() == 0);

  // A param whose shape changed under the same name after it got state.
  opt->step(ps, 0.1);
  auto changed = ps;
  changed[0].tensor = random_tensor({13, 8}, 7);
  changed[0].tensor.set_requires_grad(true);
  changed[0].tensor.set_grad(random_tensor({13, 8}, 8, DType::F32, MemCategory::Grads));
  REQUIRE_THROWS_WITH(opt->step(changed, 0.1), Contains("a different tensor under the same name"));
}

TEST_CASE("updates of large tensors do not depend on the number of threads", "[optim][threads]") {
  // Large enough to be split into blocks and run in parallel, with a ragged last block.
  const Shape shape{3 * 32768 + 123};
  for (const auto& [kind, make] : all_optimizers()) {
    INFO(kind);
    std::vector<std::vector<double>> results;
    for (const int threads : {1, 3}) {
      Context context;
      context.threads = threads;
      const ContextScope scope(context);
      std::vector<Param> ps = {{"big", random_tensor(shape, 5), true}};
      ps[0].tensor.set_requires_grad(true);
      auto opt = make();
      for (int k = 0; k < 3; ++k) {
        ps[0].tensor.set_grad(random_tensor(shape, 50 + k, DType::F32, MemCategory::Grads));
        opt->step(ps, 0.01);
      }
      results.push_back(values(ps[0].tensor));
    }
    REQUIRE(results[0] == results[1]);
  }
}
