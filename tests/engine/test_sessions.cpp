// Sessions in one process: each training run owns its accountant (and budget), its threads and its
// dropout generator, so two runs on two threads at once neither share nor change each other's.
#include <catch2/catch.hpp>

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "edgetune/core/context.h"
#include "edgetune/engine/planner.h"
#include "edgetune/engine/trainer.h"
#include "test_support.h"

using namespace edgetune;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& tag) {
  const fs::path p = fs::temp_directory_path() / ("edgetune-sessions-" + tag + "-" + std::to_string(getpid()));
  fs::remove_all(p);
  return p;
}

// 32 labelled rows.
fs::path write_rows(const fs::path& path) {
  std::ofstream f(path);
  f << "sentence\tlabel\n";
  for (int i = 0; i < 32; ++i) f << (i % 2 ? "a good day number " : "a bad day number ") << i << "\t" << i % 2 << "\n";
  return path;
}

// A LoRA run over the small fixture model with dropout on (so the generator matters), under
// `budget` for the session's own memory (runs sharing a process: a process baseline would count
// the other run), at `threads` threads.
TrainConfig config(const fs::path& data, const fs::path& out, int threads, std::size_t budget) {
  TrainConfig c;
  c.model_dir = test::golden_dir() / "bert" / "small";
  c.train_file = data;
  c.out = out;
  c.epochs = 2;
  c.batch_size = 8;
  c.quant = DType::Q4;
  c.dropout = 0.1;
  c.threads = threads;
  c.memory_budget = budget;
  c.budget_scope = BudgetScope::Session;
  return c;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// What a run on another thread leaves for the test to check on its own thread (Catch's assertions
// are for the test's thread only).
struct Outcome {
  std::optional<TrainResult> result;
  std::string error;
  int omp_threads_after = 0;  // omp_get_max_threads() on the run's thread, after the run
};

Outcome train(const TrainConfig& c) {
  Outcome o;
  try {
    Trainer t(c, nullptr);
    o.result = t.run();
  } catch (const std::exception& e) {
    o.error = e.what();
  }
  o.omp_threads_after = omp_get_max_threads();
  return o;
}

// Two budgets between the smallest plan and the unconstrained one, so the planner chooses.
std::pair<std::size_t, std::size_t> two_budgets(const TrainConfig& c) {
  PlanRequest r = plan_request(load_config(c.model_dir), c, 16);
  r.config.num_labels = 2;
  const std::size_t low = estimate_memory(r, true, 1).total(), high = estimate_memory(r, false, 8).total();
  return {(low + high) / 2, high};
}

}  // namespace

TEST_CASE("sessions: two trainers on two threads at once each stay within their own budget and "
          "train as they do alone", "[sessions][memory][threads]") {
  const fs::path dir = scratch("two");
  fs::create_directories(dir);
  const fs::path data = write_rows(dir / "rows.tsv");
  const int omp_before = omp_get_max_threads();
  const auto [budget_a, budget_b] = two_budgets(config(data, dir / "x", 1, 0));
  REQUIRE(budget_a != budget_b);
  const TrainConfig a = config(data, dir / "a-alone", 1, budget_a);
  TrainConfig b = config(data, dir / "b-alone", 2, budget_b);
  b.seed = a.seed + 1;  // a different run, so matching its own result is not matching the other's
  const Outcome a_alone = train(a);
  const Outcome b_alone = train(b);
  REQUIRE(a_alone.error.empty());
  REQUIRE(b_alone.error.empty());

  TrainConfig a2 = a, b2 = b;
  a2.out = dir / "a-together";
  b2.out = dir / "b-together";
  Outcome a_together, b_together;
  std::thread ta([&] { a_together = train(a2); });
  std::thread tb([&] { b_together = train(b2); });
  ta.join();
  tb.join();
  REQUIRE(a_together.error.empty());
  REQUIRE(b_together.error.empty());

  // Each run's accountant counted its own tensors only, and stayed under its own budget.
  CHECK(a_together.result->accountant_peak > 0);
  CHECK(a_together.result->accountant_peak <= budget_a);
  CHECK(b_together.result->accountant_peak <= budget_b);
  CHECK(a_together.result->accountant_peak == a_alone.result->accountant_peak);
  CHECK(b_together.result->accountant_peak == b_alone.result->accountant_peak);
  // Each trained exactly as alone: same steps, same adapter bytes.
  CHECK(a_together.result->steps == a_alone.result->steps);
  CHECK(b_together.result->steps == b_alone.result->steps);
  const std::string adapter = "adapter_model.safetensors";
  CHECK(file_bytes(a2.out / adapter) == file_bytes(a.out / adapter));
  CHECK(file_bytes(b2.out / adapter) == file_bytes(b.out / adapter));
  CHECK(file_bytes(a.out / adapter) != file_bytes(b.out / adapter));
  // No run changed OpenMP's thread setting, on its thread or this one.
  CHECK(a_together.omp_threads_after == omp_before);
  CHECK(b_together.omp_threads_after == omp_before);
  CHECK(omp_get_max_threads() == omp_before);
  fs::remove_all(dir);
}

TEST_CASE("sessions: allocations over one context's budget do not affect a run on another thread",
          "[sessions][memory]") {
  const fs::path dir = scratch("over");
  fs::create_directories(dir);
  const fs::path data = write_rows(dir / "rows.tsv");
  const TrainConfig b = config(data, dir / "b-alone", 1, two_budgets(config(data, dir / "x", 1, 0)).second);
  const Outcome alone = train(b);
  REQUIRE(alone.error.empty());

  TrainConfig b2 = b;
  b2.out = dir / "b-together";
  std::atomic<bool> done{false};
  Context tight;
  tight.accountant->set_budget(1 << 20);
  int refused = 0, allowed = 0;
  std::thread greedy([&] {
    const ContextScope scope(tight);
    // At least once, and for as long as the run works.
    do {
      try {
        const Tensor t = Tensor::empty({1024, 1024}, DType::F32);
        ++allowed;
      } catch (const BudgetExceeded&) {
        ++refused;
      }
    } while (!done.load());
  });
  const Outcome together = train(b2);
  done = true;
  greedy.join();
  REQUIRE(together.error.empty());
  CHECK(refused > 0);
  CHECK(allowed == 0);
  CHECK(tight.accountant->live_total() == 0);
  CHECK(together.result->accountant_peak == alone.result->accountant_peak);
  CHECK(file_bytes(b2.out / "adapter_model.safetensors") == file_bytes(b.out / "adapter_model.safetensors"));
  fs::remove_all(dir);
}
