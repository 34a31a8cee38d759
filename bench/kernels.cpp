// The kernel benchmark (see kernels.h).
#include "kernels.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <tuple>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "edgetune/autograd/autograd.h"
#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/qgemm.h"
#include "edgetune/autograd/quant.h"
#include "edgetune/core/context.h"

namespace edgetune::bench {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best time of f() over calls made for at least min_seconds (at least two calls), after one
// untimed call.
template <class F>
double best_seconds(F&& f, double min_seconds = 0.3) {
  f();
  double best = 1e300, total = 0;
  for (int calls = 0; calls < 2 || total < min_seconds; ++calls) {
    const auto t0 = Clock::now();
    f();
    const double s = seconds_since(t0);
    best = std::min(best, s);
    total += s;
  }
  return best;
}

constexpr long kPeakIterations = 20'000'000;

#if defined(__x86_64__)
// 12 independent chains of fused multiply-adds, 16 floats each: 2 * 16 * 12 flops a round.
__attribute__((target("avx512f"))) double fma_loop_avx512() {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-6f);
  for (long it = 0; it < kPeakIterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  float v[16], sum = 0;
  for (int i = 0; i < 12; ++i) {
    _mm512_storeu_ps(v, acc[i]);
    for (float x : v) sum += x;
  }
  return sum;
}
__attribute__((target("avx2,fma"))) double fma_loop_avx2() {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i));
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-6f);
  for (long it = 0; it < kPeakIterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  alignas(32) float v[8];
  float sum = 0;
  for (int i = 0; i < 12; ++i) {
    _mm256_store_ps(v, acc[i]);
    for (float x : v) sum += x;
  }
  return sum;
}
// 12 independent chains of vpdpbusd: 2 * 64 * 12 int8 operations a round.
__attribute__((target("avx512f,avx512vnni"))) double dot_loop_avx512vnni() {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (long it = 0; it < kPeakIterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  std::int32_t v[16];
  double sum = 0;
  for (int i = 0; i < 12; ++i) {
    _mm512_storeu_si512(v, acc[i]);
    for (std::int32_t x : v) sum += x;
  }
  return sum;
}
#endif

// Operations a second of one peak loop at `threads` threads: {f32 fma, int8 dot}; 0 when this
// machine has neither AVX2 nor AVX-512.
std::pair<double, double> measure_peaks(int threads) {
  double fma = 0, dot = 0;
#if defined(__x86_64__)
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool vnni = avx512 && __builtin_cpu_supports("avx512vnni");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  auto run = [&](auto loop, double ops_per_round) {
    const auto t0 = Clock::now();
    double sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += loop();
    // Keeps the loops' results alive, so the compiler cannot drop them.
    __asm__ __volatile__("" : : "g"(&sink) : "memory");
    return ops_per_round * double(kPeakIterations) * threads / seconds_since(t0) / 1e9;
  };
  if (avx512) {
    fma = run(fma_loop_avx512, 2.0 * 16 * 12);
  } else if (avx2) {
    fma = run(fma_loop_avx2, 2.0 * 8 * 12);
  }
  if (vnni) dot = run(dot_loop_avx512vnni, 2.0 * 64 * 12);
#else
  (void)threads;
#endif
  return {fma, dot};
}

Tensor random_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed, double scale) {
  Tensor t = Tensor::empty(Shape{rows, cols}, DType::F32, MemCategory::Workspace);
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    p[i] = float(scale * (2 * counter_uniform(seed, std::uint64_t(i)) - 1));
  }
  return t;
}

}  // namespace

std::vector<nlohmann::json> run_kernels(const std::vector<int>& thread_counts) {
  std::vector<nlohmann::json> rows;
  for (int threads : thread_counts) {
    const auto [fma, dot] = measure_peaks(threads);
    rows.push_back({{"kind", "peak"}, {"what", "f32 fma"}, {"threads", threads}, {"gops", fma}});
    rows.push_back({{"kind", "peak"}, {"what", "int8 dot"}, {"threads", threads}, {"gops", dot}});
  }
  const std::int64_t kn[][2] = {{768, 768}, {768, 3072}, {3072, 768}};
  for (std::int64_t m : {128, 1024}) {
    for (const auto& [k, n] : kn) {
      const Tensor w32 = random_matrix(n, k, 1, 0.05);
      const Tensor x = random_matrix(m, k, 2, 1.0);
      const Tensor dy = random_matrix(m, n, 3, 1.0);
      Tensor y = Tensor::empty(Shape{m, n}, DType::F32, MemCategory::Workspace);
      Tensor dx = Tensor::zeros(Shape{m, k}, DType::F32, MemCategory::Workspace);
      for (const char* storage : {"f32", "q8", "q4"}) {
        const std::string st = storage;
        const Tensor w =
            st == "f32" ? w32
                        : quantize(w32, st == "q8" ? DType::Q8 : DType::Q4, MemCategory::Workspace);
        std::vector<std::string> paths = {"f32"};
        if (st != "f32") {
          for (qgemm::Isa isa : qgemm::available_isas()) paths.push_back(qgemm::isa_name(isa));
        }
        for (const std::string& path : paths) {
          for (int threads : thread_counts) {
            Context context;
            context.threads = threads;
            const ContextScope scope(context);
            for (const char* direction : {"forward", "dx"}) {
              const bool fwd = std::string(direction) == "forward";
              double s;
              if (path == "f32") {
                s = best_seconds([&] {
                  if (fwd) {
                    kernels::linear_forward(y, x, w, nullptr);
                  } else {
                    kernels::linear_backward_input(dx, dy, w);
                  }
                });
              } else {
                const qgemm::Isa isa = qgemm::parse_isa(path);
                s = best_seconds([&] {
                  if (fwd) {
                    qgemm::linear_forward(y.data<float>(), x.data<float>(), m, w, isa, threads);
                  } else {
                    qgemm::linear_backward_input(dx.data<float>(), dy.data<float>(), m, w, isa,
                                                 threads);
                  }
                });
              }
              rows.push_back({{"kind", "gemm"},
                              {"m", m},
                              {"k", k},
                              {"n", n},
                              {"storage", st},
                              {"path", path},
                              {"threads", threads},
                              {"direction", direction},
                              {"seconds", s},
                              {"gflops", 2.0 * double(m * n * k) / s / 1e9}});
            }
          }
        }
      }
    }
  }
  return rows;
}

std::string kernels_table(const std::vector<nlohmann::json>& rows) {
  std::string out;
  char buf[256];
  std::vector<int> threads;
  for (const auto& r : rows) {
    if (r.at("kind") == "peak") {
      std::snprintf(buf, sizeof buf, "peak %-9s %d thread(s): %8.1f GOP/s\n",
                    r.at("what").get<std::string>().c_str(), r.at("threads").get<int>(),
                    r.at("gops").get<double>());
      out += buf;
      if (std::find(threads.begin(), threads.end(), r.at("threads").get<int>()) == threads.end()) {
        threads.push_back(r.at("threads").get<int>());
      }
    }
  }
  // (m, k, n, storage, path) -> (direction, threads) -> GFLOP/s, in first-seen order.
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::string, std::string>;
  std::vector<Key> order;
  std::map<Key, std::map<std::pair<std::string, int>, double>> cells;
  for (const auto& r : rows) {
    if (r.at("kind") != "gemm") continue;
    const Key key{r.at("m"), r.at("k"), r.at("n"), r.at("storage"), r.at("path")};
    if (!cells.count(key)) order.push_back(key);
    cells[key][{r.at("direction"), r.at("threads")}] = r.at("gflops");
  }
  out += "\nGFLOP/s (2 M N K / time, best call)\n     M     K     N  storage  path        ";
  for (const char* d : {"fwd", "dx"}) {
    for (int t : threads) {
      std::snprintf(buf, sizeof buf, " %5s %dt", d, t);
      out += buf;
    }
  }
  out += "\n";
  for (const Key& key : order) {
    const auto& [m, k, n, storage, path] = key;
    std::snprintf(buf, sizeof buf, "%6lld %5lld %5lld  %-7s  %-10s  ", (long long)m, (long long)k,
                  (long long)n, storage.c_str(), path.c_str());
    out += buf;
    for (const char* d : {"forward", "dx"}) {
      for (int t : threads) {
        std::snprintf(buf, sizeof buf, " %8.1f", cells[key][{d, t}]);
        out += buf;
      }
    }
    out += "\n";
  }
  return out;
}

}  // namespace edgetune::bench
