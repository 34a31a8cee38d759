// `edgetune bench`: edgetune beside PyTorch on the same model shapes, batch, sequence length and
// threads, each configuration in its own process; prints a table (median step time, tokens/s,
// accountant peak, VmHWM, edgetune/PyTorch ratios) and writes the rows as JSON.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "bench.h"
#include "kernels.h"
#include "commands.h"
#include "edgetune/core/file_io.h"
#include "edgetune/core/memory.h"

namespace edgetune::cli {
namespace {

struct BenchArgs {
  std::string shapes = "tiny,mini,small,base", json_out = "edgetune-bench.json", python = "/usr/bin/python3";
  std::string script, budget = "160M", one_case;
  int steps = 3, warmup = 1, threads = 0;
  std::int64_t batch = 8, length = 128;
  bool no_torch = false, profile = false;
  bool kernels = false, predict = false;
};

// --threads, or all cores.
int bench_threads(const BenchArgs& a) {
  return a.threads > 0 ? a.threads : static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
}

// `--kernels`: the GEMM table at 1 thread and at --threads (all cores by default).
int run_kernels(const BenchArgs& a) {
  const int threads = bench_threads(a);
  std::vector<int> counts = {1};
  if (threads > 1) counts.push_back(threads);
  const std::vector<nlohmann::json> rows = bench::run_kernels(counts);
  std::cout << "edgetune bench --kernels: linear layer GEMMs at BERT-base shapes\n\n"
            << bench::kernels_table(rows);
  if (!a.json_out.empty()) {
    write_file_atomic(a.json_out, nlohmann::json({{"kernels", rows}}).dump(2) + "\n");
    std::cout << "\nrows written to " << a.json_out << "\n";
  }
  return 0;
}

std::vector<std::string> split(const std::string& csv) {
  std::vector<std::string> out;
  std::stringstream ss(csv);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Runs a command and returns its last stdout line parsed as JSON (null on failure).
nlohmann::json run_json(const std::string& command) {
  std::FILE* p = ::popen(command.c_str(), "r");
  if (!p) return nullptr;
  std::string out, line;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  const int status = ::pclose(p);
  std::istringstream in(out);
  std::string last;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  if (status != 0 || last.empty()) return nullptr;
  return nlohmann::json::parse(last, nullptr, false);
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("edgetune");
}

// Adds a result row (null: the run failed) and says how it went.
void add_row(std::vector<nlohmann::json>& rows, const nlohmann::json& r, const std::string& what) {
  if (r.is_null()) {
    std::cerr << "  " << what << ": failed\n";
    return;
  }
  std::cerr << "  " << what << ": " << r.at("median_step_seconds").get<double>() << " s/step, VmHWM "
            << format_bytes(r.at("peak_rss").get<std::size_t>());
  if (r.contains("dp_ratio")) {
    std::cerr << ", " << r.at("dp_ratio").get<double>() << "x the non-private step interleaved with it";
  }
  std::cerr << "\n";
  rows.push_back(r);
}

// Runs a case in a child process and adds its row.
void add_case(std::vector<nlohmann::json>& rows, const bench::Case& k) {
  add_row(rows, run_json("'" + self_exe() + "' bench --case '" + k.to_json().dump() + "'"),
          "edgetune " + k.label());
}

// The PyTorch side's script, and whether PyTorch runs (a note on stderr when it does not).
std::string torch_script(const BenchArgs& a) {
  return a.script.empty() ? std::string(EDGETUNE_SOURCE_DIR) + "/bench/torch_bench.py" : a.script;
}

bool torch_available(const BenchArgs& a) {
  if (a.no_torch) return false;
  if (std::system((a.python + " -c 'import torch' >/dev/null 2>&1").c_str()) != 0) {
    std::cerr << "note: PyTorch is not available to " << a.python
              << " (Debian: apt-get install python3-torch libopenblas0-pthread); edgetune rows only\n";
    return false;
  }
  return true;
}

// PyTorch's row for one shape and method (lora, full: training steps; predict: forward passes).
// torch's threads times OpenBLAS's may not exceed the cores: either torch's ops or OpenBLAS's
// GEMMs get them. Both splits run; the faster one is PyTorch's row.
void add_torch_row(std::vector<nlohmann::json>& rows, const BenchArgs& a, const std::string& script,
                   const std::string& shape, const std::string& method, std::int64_t batch, int threads) {
  nlohmann::json best;
  for (const auto& [torch_threads, blas_threads] : {std::pair{threads, 1}, {1, threads}}) {
    const std::string cmd =
        "OMP_NUM_THREADS=" + std::to_string(torch_threads) + " OPENBLAS_NUM_THREADS=" +
        std::to_string(blas_threads) + " " + a.python + " '" + script + "' --shape " + shape +
        " --method " + method + " --batch-size " + std::to_string(batch) + " --max-length " +
        std::to_string(a.length) + " --steps " + std::to_string(a.steps) + " --warmup " +
        std::to_string(a.warmup) + " --threads " + std::to_string(torch_threads);
    nlohmann::json r = run_json(cmd);
    if (r.is_null()) continue;
    r["blas_threads"] = blas_threads;
    std::cerr << "  pytorch f32, " << torch_threads << " torch x " << blas_threads
              << " OpenBLAS threads: " << r.at("median_step_seconds").get<double>() << " s/step\n";
    if (best.is_null() || r.at("median_step_seconds") < best.at("median_step_seconds")) best = r;
    if (threads == 1) break;  // one split only
  }
  add_row(rows, best, "pytorch f32 (faster split)");
}

// `--predict`: the latency of classifying one text of --max-length tokens (batch 1), per shape,
// for an f32 base and a q8 base on both compute paths, beside PyTorch's f32 forward (eval mode,
// no autograd, the same LoRA r8 on query,value).
int run_predict(const BenchArgs& a) {
  const std::string script = torch_script(a);
  const bool torch = torch_available(a);
  std::vector<nlohmann::json> rows;
  for (const std::string& shape : split(a.shapes)) {
    bench::shape_spec(shape);  // validates
    std::cerr << shape << " predict:\n";
    bench::Case c;
    c.shape = shape;
    c.method = "predict";
    c.batch = 1;
    c.length = a.length;
    c.threads = bench_threads(a);
    c.steps = a.steps;
    c.warmup = a.warmup;
    if (torch) add_torch_row(rows, a, script, shape, "predict", 1, c.threads);
    for (const auto& [quant, compute] : {std::pair{"f32", "f32"}, {"q8", "int8"}, {"q8", "f32"}}) {
      c.quant = quant;
      c.compute = compute;
      add_case(rows, c);
    }
  }
  std::cout << "\nedgetune bench --predict: one text of " << a.length << " tokens, " << bench_threads(a)
            << " threads, median of " << a.steps << " forward passes after " << a.warmup
            << " warmup; LoRA r8 on query,value + classifier\n\n"
            << bench::table(rows);
  if (!a.json_out.empty()) {
    write_file_atomic(a.json_out, nlohmann::json({{"predict", rows}}).dump(2) + "\n");
    std::cout << "\nrows written to " << a.json_out << "\n";
  }
  return 0;
}

int run(const BenchArgs& a) {
  if (a.kernels) return run_kernels(a);
  if (!a.one_case.empty()) {  // child mode: one configuration, in this process
    std::cout << bench::run_case(bench::Case::from_json(nlohmann::json::parse(a.one_case))).dump() << "\n";
    return 0;
  }
  if (a.predict) return run_predict(a);
  const int threads = bench_threads(a);
  const std::size_t budget = a.budget.empty() ? 0 : parse_bytes(a.budget);
  const std::string script = torch_script(a);
  const bool torch = torch_available(a);
  std::vector<nlohmann::json> rows;
  for (const std::string& shape : split(a.shapes)) {
    bench::shape_spec(shape);  // validates
    std::vector<std::string> methods = {"lora"};
    if (shape != "base") methods.push_back("full");
    for (const std::string& method : methods) {
      std::cerr << shape << " " << method << ":\n";
      if (torch) add_torch_row(rows, a, script, shape, method, a.batch, threads);
      std::vector<bench::Case> cases;
      bench::Case c;
      c.shape = shape;
      c.method = method;
      c.batch = a.batch;
      c.length = a.length;
      c.threads = threads;
      c.steps = a.steps;
      c.warmup = a.warmup;
      if (method == "full") {
        c.quant = "f32";
        cases.push_back(c);
      } else {
        for (const char* q : {"f32", "q8", "q4"}) {
          c.quant = q;
          c.quant_embeddings = std::string(q) == "q4";
          c.compute = "int8";
          cases.push_back(c);
          if (c.quant != "f32") {  // the float path over the same base, beside it
            c.compute = "f32";
            cases.push_back(c);
          }
        }
        c.compute = "int8";  // DP-SGD's step beside the q4 int8 row
        c.dp = true;
        cases.push_back(c);
        c.dp = false;
        if (budget) {
          c.compute = "int8";
          c.budget = budget;
          c.profile = a.profile;
          cases.push_back(c);
        }
      }
      for (const bench::Case& k : cases) add_case(rows, k);
    }
  }
  std::cout << "\nedgetune bench: batch " << a.batch << " x " << a.length << " tokens, " << threads
            << " threads, median of " << a.steps << " steps after " << a.warmup
            << " warmup; LoRA r8 on query,value + classifier; AdamW\n\n"
            << bench::table(rows);
  for (const auto& r : rows) {
    if (r.contains("dp_ratio")) {
      std::cout << "\n" << r.at("shape").get<std::string>() << " " << r.at("label").get<std::string>() << ": "
                << r.at("dp_ratio").get<double>()
                << "x the non-private step (median of the ratios of each DP step to a non-private step on the "
                   "same batch run right after it)\n";
    }
  }
  for (const auto& r : rows) {
    if (r.contains("profile") && r.at("profile").is_array()) {
      std::cout << "\nprofile of one step, " << r.at("shape").get<std::string>() << " " << r.at("label").get<std::string>()
                << " (" << r.at("plan").get<std::string>() << "):\n";
      for (const auto& e : r.at("profile")) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "  %-28s %8.3f s %8lld calls\n", e.at("op").get<std::string>().c_str(),
                      e.at("seconds").get<double>(), static_cast<long long>(e.at("calls").get<std::int64_t>()));
        std::cout << buf;
      }
    }
  }
  if (!a.json_out.empty()) {
    nlohmann::json out = {{"threads", threads}, {"batch", a.batch}, {"length", a.length}, {"rows", rows}};
    write_file_atomic(a.json_out, out.dump(2) + "\n");
    std::cout << "\nrows written to " << a.json_out << "\n";
  }
  return 0;
}

const RegisterCommand kRegister{
    "bench", "time training steps of standard BERT shapes beside PyTorch (same shapes, batch, threads)",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<BenchArgs>();
      app.add_option("--shapes", a->shapes, "tiny, mini, small, base")->capture_default_str();
      app.add_option("--steps", a->steps, "timed steps per configuration (median reported)")->capture_default_str();
      app.add_option("--warmup", a->warmup, "untimed steps first")->capture_default_str();
      app.add_option("--threads", a->threads, "threads on both sides (0: all cores)")->capture_default_str();
      app.add_option("--batch-size", a->batch, "rows per step")->capture_default_str();
      app.add_option("--max-length", a->length, "tokens per row")->capture_default_str();
      app.add_option("--memory-budget", a->budget, "memory budget of the planned q4 row (empty: no such row)")
          ->capture_default_str();
      app.add_flag("--profile", a->profile, "add a per-op profile of one step of the planned q4 row");
      app.add_flag("--no-torch", a->no_torch, "edgetune rows only");
      app.add_flag("--kernels", a->kernels,
                   "GFLOP/s of the linear GEMMs per storage, kernel implementation and threads");
      app.add_flag("--predict", a->predict,
                   "latency of classifying one text of --max-length tokens (batch 1), f32 and q8 bases");
      app.add_option("--python", a->python, "python with torch")->capture_default_str();
      app.add_option("--torch-script", a->script, "the PyTorch side (default: bench/torch_bench.py of the source tree)");
      app.add_option("--out", a->json_out, "write the rows here (JSON)")->capture_default_str();
      app.add_option("--case", a->one_case, "run one configuration (JSON) in this process")->group("");
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
