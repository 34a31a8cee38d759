// Vocabulary pruning (data/vocab_prune.h): what is kept and in which order, and the promise that
// corpus text tokenizes to the same token strings with the pruned vocabulary as with the full one:
// on a committed text with the committed mini vocabulary always, and on the real pretraining
// corpus (.cache/corpus, from scripts/fetch_corpus.sh) with bert-base-uncased's vocabulary from
// ../shared/data when both are on this machine.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "edgetune/data/vocab_prune.h"
#include "test_support.h"

using namespace edgetune::data;
namespace fs = std::filesystem;

namespace {

const char* kText =
    "The quick brown fox jumped over the lazy dog.\n"
    "Hello, world! Someone is running a new English example: 123 numbers.\n"
    "\n"
    "A cafe in Istanbul; the cat sat on the mat (a private line).\n"
    "Mixed text with combining marks and symbols: ™ € ±.\n";

// Text the corpus never saw, made of characters both vocabularies know.
const char* kUnseen = "zebra quizzes xylophone wizards; jazz kept vexing 987 fjords.";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Every line of `text` tokenizes to the same strings with both tokenizers.
void require_same_tokens(const WordPieceTokenizer& full, const WordPieceTokenizer& pruned,
                         const std::string& text, size_t max_lines = SIZE_MAX) {
  size_t start = 0, lines = 0;
  while (start < text.size() && lines < max_lines) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    ++lines;
    const auto a = full.tokenize(line), b = pruned.tokenize(line);
    if (a != b) {
      INFO("line " << lines << ": " << line.substr(0, 200));
      REQUIRE(a == b);
    }
  }
}

}  // namespace

TEST_CASE("is_single_character counts code points, with or without ##") {
  CHECK(is_single_character("a"));
  CHECK(is_single_character("##a"));
  CHECK(is_single_character("é"));
  CHECK(is_single_character("##中"));
  CHECK(is_single_character("\xF0\x9F\x98\x80"));  // U+1F600, four bytes
  CHECK_FALSE(is_single_character("ab"));
  CHECK_FALSE(is_single_character("##ab"));
  CHECK_FALSE(is_single_character("##"));
  CHECK_FALSE(is_single_character(""));
  CHECK_FALSE(is_single_character("[PAD]"));
  CHECK_FALSE(is_single_character("\xC3"));       // a lead byte without its continuation
  CHECK_FALSE(is_single_character("e\xCC\x81"));  // e + combining acute: two code points
}

TEST_CASE("prune_vocab keeps specials first, then used tokens and single characters in order") {
  const Vocab full(
      std::vector<std::string>{"[unused0]", "x", "[UNK]", "hello", "[CLS]", "[SEP]", "[MASK]",
                               "[PAD]", "world", "##s", "##ing", "y", "wor", "##ld", "##d"},
      "full");
  std::vector<std::int64_t> counts(static_cast<size_t>(full.size()), 0);
  counts[3] = 2;   // hello
  counts[12] = 1;  // wor
  counts[13] = 1;  // ##ld
  const PrunedVocab p = prune_vocab(full, counts);
  CHECK(p.tokens == std::vector<std::string>{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "x",
                                             "hello", "##s", "y", "wor", "##ld", "##d"});
  CHECK(p.specials == 5);
  CHECK(p.used == 3);
  CHECK(p.characters == 4);
  CHECK_THROWS_AS(prune_vocab(full, std::vector<std::int64_t>(3, 0)), std::invalid_argument);
  const Vocab no_mask(std::vector<std::string>{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"}, "nomask");
  CHECK_THROWS_WITH(prune_vocab(no_mask, std::vector<std::int64_t>(5, 0)),
                    Catch::Contains("nomask") && Catch::Contains("[MASK]"));
}

TEST_CASE("a pruned vocabulary tokenizes the corpus to the same strings (committed text)") {
  const fs::path vocab = edgetune::test::golden_dir() / "tokenizer" / "mini-uncased-vocab.txt";
  const Vocab full = Vocab::load(vocab);
  const WordPieceTokenizer full_tok(full);
  TokenUsage usage(full_tok);
  usage.add_text(kText);
  CHECK(usage.lines() == 4);
  CHECK(usage.tokens() > 40);
  const PrunedVocab p = prune_vocab(full, usage.counts());
  CHECK(p.tokens.size() < static_cast<size_t>(full.size()));
  CHECK(p.used > 20);

  const fs::path dir =
      fs::temp_directory_path() / ("edgetune-vocab-prune-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  save_vocab(dir / "vocab.txt", p.tokens);
  const Vocab back = Vocab::load(dir / "vocab.txt");
  CHECK(back.tokens() == p.tokens);
  CHECK(back.id("[PAD]") == 0);
  const WordPieceTokenizer pruned_tok(back);
  require_same_tokens(full_tok, pruned_tok, kText);
  // Unseen words still tokenize, without [UNK].
  for (const auto& t : pruned_tok.tokenize(kUnseen)) CHECK(t != "[UNK]");
  CHECK_THROWS_AS(save_vocab(dir / "bad.txt", std::vector<std::string>{"a\nb"}),
                  std::invalid_argument);
  fs::remove_all(dir);
}

TEST_CASE("the pruned bert-base-uncased vocabulary tokenizes the real corpus the same") {
  const fs::path shared = edgetune::test::shared_data_dir();
  const fs::path corpus = fs::path(EDGETUNE_TEST_DIR).parent_path() / ".cache" / "corpus";
  if (shared.empty() || !fs::exists(corpus / "sotu.txt")) {
    WARN("skipped: needs ../shared/data and the corpus of scripts/fetch_corpus.sh in " << corpus);
    return;
  }
  const Vocab full = Vocab::load(shared / "vocab" / "bert-base-uncased-vocab.txt");
  const WordPieceTokenizer full_tok(full);
  TokenUsage usage(full_tok);
  std::string text;
  for (const char* name : {"sotu.txt", "moby-dick.txt", "brown.txt"}) {
    const std::string t = slurp(corpus / name);
    usage.add_text(t);
    // A sample of each file for the string comparison (the whole corpus takes too long for a unit
    // test): its first lines and lines from its middle.
    size_t from = t.size() / 2;
    from = t.find('\n', from) + 1;
    text += t.substr(0, 200000) + "\n" + t.substr(from, 200000) + "\n";
  }
  const PrunedVocab p = prune_vocab(full, usage.counts());
  WARN("bert-base-uncased pruned to the corpus: " << p.tokens.size() << " tokens (" << p.used
                                                  << " used, " << p.characters
                                                  << " single characters)");
  CHECK(p.tokens.size() < static_cast<size_t>(full.size()));
  const WordPieceTokenizer pruned_tok(Vocab(p.tokens, "pruned"));
  require_same_tokens(full_tok, pruned_tok, text);
  for (const auto& t : pruned_tok.tokenize(kUnseen)) CHECK(t != "[UNK]");

  // The shipped model's vocabulary is this one.
  const fs::path shipped =
      fs::path(EDGETUNE_TEST_DIR).parent_path() / "models" / "edgetune-mini-uncased" / "vocab.txt";
  if (fs::exists(shipped)) CHECK(Vocab::load(shipped).tokens() == p.tokens);
}
