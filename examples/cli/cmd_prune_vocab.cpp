// `edgetune prune-vocab`: cuts a WordPiece vocabulary (bert-base-uncased's) down to the tokens a
// corpus uses, plus the specials and every single character, and writes it as vocab.txt
// (data/vocab_prune.h says what is kept and why the corpus then tokenizes exactly as before).
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "edgetune/data/vocab_prune.h"

namespace edgetune::cli {
namespace {

struct PruneArgs {
  std::string vocab, out;
  std::vector<std::string> corpus;
  bool no_lower_case = false;
};

int run(const PruneArgs& a) {
  const data::Vocab full = data::Vocab::load(a.vocab);
  data::TokenizerOptions options;
  options.do_lower_case = !a.no_lower_case;
  const data::WordPieceTokenizer tokenizer(full, options);
  data::TokenUsage usage(tokenizer);
  for (const std::string& file : a.corpus) usage.add_file(file);
  const data::PrunedVocab pruned = data::prune_vocab(full, usage.counts());
  data::save_vocab(a.out, pruned.tokens);
  std::fprintf(stderr,
               "wrote %s: %zu of %d tokens (%d specials, %d used by the corpus, %d more single "
               "characters); corpus: %lld lines, %lld tokens\n",
               a.out.c_str(), pruned.tokens.size(), full.size(), pruned.specials, pruned.used,
               pruned.characters, static_cast<long long>(usage.lines()),
               static_cast<long long>(usage.tokens()));
  return 0;
}

const RegisterCommand kRegister{
    "prune-vocab",
    "cut a WordPiece vocabulary to the tokens a corpus uses (plus specials and single characters)",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<PruneArgs>();
      app.add_option("--vocab", a->vocab,
                     "the full vocabulary (vocab.txt, e.g. bert-base-uncased's)")
          ->required();
      app.add_option("--corpus", a->corpus, "plain-text files whose tokens are kept")->required();
      app.add_option("--out", a->out, "the pruned vocab.txt to write")->required();
      app.add_flag("--no-lower-case", a->no_lower_case,
                   "tokenize without lowercasing (a cased vocabulary)");
      return [a] { return run(*a); };
    }};

}  // namespace
}  // namespace edgetune::cli
