// `edgetune bench --kernels`: GFLOP/s of the linear layer's GEMMs (forward y = x W^T and
// dX = dY W) at BERT-base shapes, per weight storage (f32, q8, q4), per path (the float path, and
// the integer kernels of each implementation available on this CPU) and thread count, beside the
// machine's measured peaks (a short float FMA loop and a short int8 dot-product loop).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgetune::bench {

// Runs every configuration at each of thread_counts and returns the rows: peaks
// {"kind": "peak", "what": "f32 fma" | "int8 dot", "threads", "gops"} and GEMMs {"kind": "gemm",
// "m", "k", "n", "storage", "path" ("f32" or an implementation name), "threads", "direction"
// ("forward" | "dx"), "seconds" (best of the timed calls), "gflops" (2 M N K / seconds / 1e9)}.
std::vector<nlohmann::json> run_kernels(const std::vector<int>& thread_counts);

// The rows of run_kernels as a text table: one line per shape, storage and path, GFLOP/s per
// direction and thread count, after the peaks.
std::string kernels_table(const std::vector<nlohmann::json>& rows);

}  // namespace edgetune::bench
