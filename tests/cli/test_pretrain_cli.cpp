// The pretraining commands as a user runs them: a short version of the shipped model's reproduce
// command (prune-vocab -> create-model -> pretrain -> fine-tune the result with q4 + LoRA) on a
// small committed text and the committed mini vocabulary, the usage errors of --resume, and the
// shipped model folders themselves (models/edgetune-mini-uncased and models/edgetune-mini-chinese,
// both required): at most 16 MB, BertForMaskedLM folders that the
// classifier path loads and that classify, with a trained MLM head.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_run.h"
#include "mini_corpus.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/safetensors.h"
#include "edgetune/data/tokenizer.h"
#include "edgetune/engine/loader.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> jsonl(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

fs::path shipped_model() {
  return fs::path(EDGETUNE_TEST_DIR).parent_path() / "models" / "edgetune-mini-uncased";
}

}  // namespace

TEST_CASE("the reproduce command, short: prune-vocab, create-model, pretrain, then fine-tune",
          "[cli][pretrain]") {
  INFO(cli_path() << " must be built: the repository provides it");
  REQUIRE(cli_built());
  ScratchDir d("pretrain-cli");
  std::ofstream(d / "corpus.txt") << kMiniCorpus << "\n" << kMiniCorpus;
  std::ofstream(d / "reviews.tsv") << kMiniLabelled << kMiniLabelled;
  const fs::path full = golden_dir() / "tokenizer" / "mini-uncased-vocab.txt";

  const RunResult prune = run_cli("prune-vocab --vocab " + q(full) + " --corpus " +
                                  q(d / "corpus.txt") + " --out " + q(d / "vocab.txt"));
  INFO(prune.err);
  REQUIRE(prune.exit_code == 0);
  CHECK_THAT(prune.err, Catch::Contains("specials") && Catch::Contains("used by the corpus"));
  const data::Vocab vocab = data::Vocab::load(d / "vocab.txt");
  CHECK(vocab.token(0) == "[PAD]");
  CHECK(vocab.size() < data::Vocab::load(full).size());

  const RunResult create =
      run_cli("create-model --vocab " + q(d / "vocab.txt") + " --out " + q(d / "init") +
              " --layers 2 --hidden 32 --heads 2 --intermediate 64 --max-positions 32");
  INFO(create.err);
  REQUIRE(create.exit_code == 0);

  const std::string pretrain_args =
      "pretrain --model " + q(d / "init") + " --corpus " + q(d / "corpus.txt") + " --out " +
      q(d / "run") +
      " --max-length 16 --batch-size 4 --lr 2e-3 --max-steps 8 --eval-split 0.2"
      " --eval-every 4 --save-every 4 --log-every 2 --threads 1 --f16";
  const RunResult pre = run_cli(pretrain_args);
  INFO(pre.err);
  REQUIRE(pre.exit_code == 0);
  CHECK_THAT(pre.err, Catch::Contains("step 8/8") && Catch::Contains("checkpoint at step 4") &&
                          Catch::Contains("held-out masked-LM loss"));
  const auto metrics = jsonl(slurp(d / "run" / "metrics.jsonl"));
  int evals = 0, trains = 0;
  for (const auto& j : metrics) {
    if (j.at("type") == "eval") {
      ++evals;
      CHECK(j.at("mlm_loss").get<double>() > 0);
      CHECK(j.at("mlm_accuracy").get<double>() >= 0);
    } else {
      ++trains;
    }
  }
  CHECK(evals == 2);
  CHECK(trains == 4);
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                        "run.json", "train_state.safetensors"}) {
    CHECK(fs::exists(d / "run" / f));
  }
  CHECK(nlohmann::json::parse(slurp(d / "run" / "config.json")).at("architectures")[0] ==
        "BertForMaskedLM");

  // The run is finished: resuming it does nothing more; settings cannot be changed on resume.
  const RunResult again = run_cli("pretrain --resume " + q(d / "run") + " --threads 1");
  INFO(again.err);
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.err, Catch::Contains("done: 8 steps"));
  CHECK(run_cli("pretrain --resume " + q(d / "run") + " --lr 1e-3").exit_code == 2);
  const RunResult no_text = run_cli("pretrain --model " + q(d / "init") + " --out " + q(d / "x"));
  CHECK(no_text.exit_code == 2);
  CHECK_THAT(no_text.err, Catch::Contains("--corpus FILE... (or --task-data FILE...)"));

  // The pretrained folder is a model to fine-tune: q4 base, LoRA, a fresh classifier.
  const RunResult train =
      run_cli("train --model " + q(d / "run") + " --train " + q(d / "reviews.tsv") +
              " --eval-split 0.25 --seed 1 --quant q4 --method lora --epochs 1 --batch-size 4"
              " --max-length 16 --memory-budget " + process_budget("64M") + " --threads 1 --out " +
              q(d / "ft"));
  INFO(train.err);
  REQUIRE(train.exit_code == 0);
  CHECK_THAT(train.err, Catch::Contains("plan:") && Catch::Contains("accuracy"));
  const RunResult predict =
      run_cli("predict --model " + q(d / "run") + " --adapter " + q(d / "ft") +
                  " --quant q4 --data - --text-column 0 --header absent",
              "the cat sat on the mat\n");
  INFO(predict.err);
  REQUIRE(predict.exit_code == 0);
  CHECK(jsonl(predict.out).size() == 1);
}

namespace {

// The checks both shipped models pass: at most 16 MB, the five files of a BertForMaskedLM folder
// in float16, loads for classification over a q4 base (a fresh classifier, nothing else missing)
// and gives finite logits for `text`, whose every token is in the vocabulary.
void check_shipped_folder(const fs::path& dir, const std::string& text) {
  std::uintmax_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) bytes += e.file_size();
  }
  CHECK(bytes <= 16'000'000u);
  for (const char* f :
       {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "README.md"}) {
    CHECK(fs::exists(dir / f));
  }
  const auto config = nlohmann::json::parse(slurp(dir / "config.json"));
  CHECK(config.at("architectures")[0] == "BertForMaskedLM");
  safetensors::Reader st(dir / "model.safetensors");
  CHECK(st.at("bert.embeddings.word_embeddings.weight").dtype == "F16");

  LoadReport report;
  LoadOptions lo;
  lo.base = DType::Q4;
  const BertModel m = load_bert(dir, lo, &report);
  CHECK(report.layout == "masked-lm");
  CHECK(std::count(report.initialised.begin(), report.initialised.end(), "classifier.weight") == 1);
  const data::WordPieceTokenizer tok = data::load_tokenizer_from_model_dir(dir);
  CHECK(tok.vocab().size() == m.config.vocab_size);
  const auto e = tok.encode(text);
  for (const std::int32_t id : e.ids) CHECK(id != tok.unk_id());
  const Shape s{1, static_cast<std::int64_t>(e.ids.size())};
  const Tensor logits = m.classify({Tensor::from_ints(s, e.ids), Tensor::from_ints(s, e.type_ids),
                                    Tensor::from_ints(s, e.attention_mask)},
                                   ForwardOptions{});
  REQUIRE(logits.shape() == Shape{1, 2});
  for (const double x : logits.to_vector()) CHECK(std::isfinite(x));
}

// The masked-LM loss of the folder's own head (float32) on `sentences`, every fourth token after
// [CLS] replaced by [MASK], averaged over the masked tokens.
double masked_lm_loss(const fs::path& dir, const std::vector<std::string>& sentences) {
  LoadOptions with_head;
  with_head.base = DType::F32;
  with_head.with_mlm_head = true;
  const BertModel mlm = load_bert(dir, with_head);
  REQUIRE(mlm.mlm);
  const data::WordPieceTokenizer tok = data::load_tokenizer_from_model_dir(dir);
  double loss = 0;
  std::int64_t masked = 0;
  for (const std::string& text : sentences) {
    auto enc = tok.encode(text);
    std::vector<std::int32_t> rows, targets;
    for (size_t i = 1; i + 1 < enc.ids.size(); i += 4) {
      rows.push_back(static_cast<std::int32_t>(i));
      targets.push_back(enc.ids[i]);
      enc.ids[i] = tok.mask_id();
    }
    const Shape t{1, static_cast<std::int64_t>(enc.ids.size())};
    const Tensor h = mlm.encode({Tensor::from_ints(t, enc.ids), Tensor::from_ints(t, enc.type_ids),
                                 Tensor::from_ints(t, enc.attention_mask)},
                                ForwardOptions{});
    const Shape r{static_cast<std::int64_t>(rows.size())};
    const Tensor scores = mlm.mlm_logits(
        ops::gather_rows(ops::reshape(h, {t[1], h.dim(2)}), Tensor::from_ints(r, rows)),
        ForwardOptions{});
    loss += ops::cross_entropy(scores, Tensor::from_ints(r, targets)).item() *
            static_cast<double>(rows.size());
    masked += r[0];
  }
  return loss / static_cast<double>(masked);
}

}  // namespace

TEST_CASE(
    "the shipped model: at most 16 MB, BertForMaskedLM, loads for classification and classifies",
    "[cli][pretrain][shipped]") {
  const fs::path dir = shipped_model();
  REQUIRE(fs::exists(dir / "model.safetensors"));
  check_shipped_folder(dir, "A wonderful little film, and the acting was superb.");

  // The MLM head is in the folder and was trained: on plain English sentences (none from the
  // corpus or the evaluation sets), with every fourth word-piece masked, its masked-LM loss is below
  // the unigram entropy of the pretraining corpus (6.83 nats over its 3.69M word-pieces: the loss
  // of a model that only knows token frequencies), so it uses the context; a freshly initialised
  // head scores about ln(vocab size) = 10.2.
  const double loss = masked_lm_loss(dir, {
      "the president of the united states spoke to the congress about the war and the economy.",
      "she opened the door of the house and walked into the kitchen to make a cup of tea.",
      "the ship sailed across the sea for many days before the men saw land again.",
      "in the morning the children went to school, and in the evening they came home for dinner.",
      "the government must raise taxes or cut spending if it wants to balance the budget.",
      "he wrote a long letter to his mother and told her about his new life in the city.",
  });
  WARN("shipped model: masked-LM loss " << loss);
  CHECK(loss < 6.83);
}

TEST_CASE(
    "the shipped Chinese model: the shape its card gives, at most 16 MB, loads, classifies, "
    "and its MLM head uses the context",
    "[cli][pretrain][shipped]") {
  const fs::path dir = fs::path(EDGETUNE_TEST_DIR).parent_path() / "models" / "edgetune-mini-chinese";
  REQUIRE(fs::exists(dir / "model.safetensors"));
  check_shipped_folder(dir, "这家酒店的服务很好，房间干净，下次还会再来。");

  // models/edgetune-mini-chinese/README.md: 4 layers, hidden 192, 4 heads, feed-forward 768, GELU,
  // 128 positions, a 19,232-token vocabulary cut from bert-base-chinese, lower-cased.
  const auto config = nlohmann::json::parse(slurp(dir / "config.json"));
  CHECK(config.at("num_hidden_layers") == 4);
  CHECK(config.at("hidden_size") == 192);
  CHECK(config.at("num_attention_heads") == 4);
  CHECK(config.at("intermediate_size") == 768);
  CHECK(config.at("hidden_act") == "gelu");
  CHECK(config.at("max_position_embeddings") == 128);
  CHECK(config.at("vocab_size") == 19232);
  const data::WordPieceTokenizer tok = data::load_tokenizer_from_model_dir(dir);
  CHECK(tok.vocab().size() == 19232);
  CHECK(tok.options().do_lower_case);
  CHECK(tok.options().tokenize_chinese_chars);

  // As for the English model: below the unigram entropy of its pretraining corpus (6.46 nats over
  // its 1.78M tokens), on sentences of the corpus's kinds that are not in it.
  const double loss = masked_lm_loss(dir, {
      "这个命令用来显示当前目录下的所有文件，并且按照修改时间排序。",
      "如果没有指定文件名，程序将从标准输入读取数据，然后把结果写到标准输出。",
      "系统管理员可以使用这个工具来查看网络连接的状态和进程的信息。",
      "先生读书至夜深，窗外风雨不止，灯下独坐而思故人。",
      "山中无人迹，唯闻鸟声，溪水东流，日暮而归。",
      "安装软件包之前，请先更新软件源的列表，并确认磁盘上有足够的空间。",
  });
  WARN("shipped Chinese model: masked-LM loss " << loss);
  CHECK(loss < 6.46);
}
