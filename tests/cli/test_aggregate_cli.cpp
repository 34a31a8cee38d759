// `edgetune aggregate` as a process: the weighted mean of adapter folders (the engine's
// aggregate_adapters, tested element by element in tests/engine), and bad input as one usage line.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "cli_run.h"
#include "edgetune/engine/adapter_folder.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

// A LoRA adapter folder of a one-layer model, its trained values moved by `shift`.
void lora_folder(const fs::path& dir, float shift) {
  BertConfig c;
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.intermediate_size = 24;
  c.max_position_embeddings = 8;
  c.num_labels = 2;
  MethodOptions o;
  o.method = Method::Lora;
  o.lora.rank = 2;
  o.lora_targets = {"query", "value"};
  BertModel m = init_bert(c, load_options_for(o, DType::F32, false));
  attach_adapters(m, o);
  for (const optim::Param& p : trainable_params(m)) {
    float* v = p.tensor.data<float>();
    for (std::int64_t i = 0; i < p.tensor.numel(); ++i) v[i] += shift;
  }
  save_trained(m, o, dir, "base");
}

}  // namespace

TEST_CASE("aggregate writes the weighted mean of adapter folders", "[cli][aggregate]") {
  REQUIRE(cli_built());
  ScratchDir tmp("aggregate");
  lora_folder(tmp.path / "a", 0.1f);
  lora_folder(tmp.path / "b", -0.2f);
  const RunResult r = run_cli("aggregate --out " + q(tmp.path / "avg") + " --weights 3,1 " + q(tmp.path / "a") +
                              " " + q(tmp.path / "b"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("averaged 2 adapter folders") != std::string::npos);
  const AdapterFiles a = read_adapter_files(tmp.path / "a"), b = read_adapter_files(tmp.path / "b"),
                     avg = read_adapter_files(tmp.path / "avg");
  REQUIRE(avg.tensors.size() == a.tensors.size());
  for (size_t t = 0; t < avg.tensors.size(); ++t) {
    const std::vector<double> x = a.tensors[t].second.to_vector(), y = b.tensors[t].second.to_vector(),
                              z = avg.tensors[t].second.to_vector();
    for (size_t i = 0; i < z.size(); ++i) REQUIRE(std::fabs(z[i] - (3 * x[i] + y[i]) / 4) <= 1e-7 * std::fabs(z[i]) + 1e-12);
  }
}

TEST_CASE("aggregate with a weight count other than the folders' is one usage line", "[cli][aggregate]") {
  REQUIRE(cli_built());
  ScratchDir tmp("aggregate-usage");
  lora_folder(tmp.path / "a", 0.1f);
  const RunResult r = run_cli("aggregate --out " + q(tmp.path / "avg") + " --weights 1,2,3 " + q(tmp.path / "a") +
                              " " + q(tmp.path / "a"));
  CHECK(r.exit_code == 2);
  CHECK(r.err == "edgetune: usage error: aggregate: 3 weights for 2 adapter folders (give one example count "
                 "per folder)\n");
  CHECK_FALSE(fs::exists(tmp.path / "avg"));
}
