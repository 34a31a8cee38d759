// `edgetune tokenize` run as a process: ids per stdin line, a data file column, exit codes.
// Skipped when the edgetune binary has not been built beside the tests.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

#include "edgetune/data/tokenizer.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

struct Run {
  int status = -1;
  std::string out;
};

// Runs a shell command line; returns its exit status and standard output.
Run run(const std::string& command) {
  Run r;
  std::FILE* p = ::popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, p)) > 0) r.out.append(buffer, n);
  const int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// What the command should print for `text`: the library's ids as a JSON array line.
std::string expected(const edgetune::data::WordPieceTokenizer& tok, const std::string& a,
                     std::optional<std::string> b = {}, int max_length = 512) {
  const auto e = b ? tok.encode(a, *b, max_length) : tok.encode(a, std::nullopt, max_length);
  std::string out = "[";
  for (size_t i = 0; i < e.ids.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(e.ids[i]);
  }
  out += "]\n";
  return out;
}

}  // namespace

TEST_CASE("edgetune tokenize prints ids per line and maps errors to exit codes") {
  const std::string cli = edgetune::test::cli_path();
  INFO(cli << " must be built: the repository provides it");
  REQUIRE(fs::exists(cli));
  const fs::path vocab = edgetune::test::golden_dir() / "tokenizer/mini-uncased-vocab.txt";
  const std::string exe = edgetune::test::cli_command();
  const std::string base = exe + " tokenize --vocab '" + vocab.string() + "'";
  const edgetune::data::WordPieceTokenizer tok(edgetune::data::Vocab::load(vocab));

  const Run lines = run("printf 'the cat\\r\\n\\nHello, world!\\n' | " + base + " 2>/dev/null");
  CHECK(lines.status == 0);
  CHECK(lines.out == expected(tok, "the cat") + "[2,3]\n" + expected(tok, "Hello, world!"));
  CHECK(expected(tok, "the cat").size() > 10);

  const Run cut = run("echo 'the cat sat' | " + base + " --max-length 3");
  CHECK(cut.out == expected(tok, "the cat sat", std::nullopt, 3));

  const fs::path dir = fs::temp_directory_path() / "edgetune_cmd_tokenize";
  fs::create_directories(dir);
  std::ofstream(dir / "d.csv") << "label,text,other\n1,\"the\ncat\",hello\n";
  const Run data = run(base + " --data '" + (dir / "d.csv").string() +
                       "' --text-column text --text-pair-column 2");
  CHECK(data.status == 0);
  CHECK(data.out == expected(tok, "the\ncat", "hello"));

  const Run from_stdin =
      run("printf 'text\\tlabel\\nthe cat\\t1\\n' | " + base + " --data - --text-column text");
  CHECK(from_stdin.status == 0);
  CHECK(from_stdin.out == expected(tok, "the cat"));

  fs::copy_file(vocab, dir / "vocab.txt", fs::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json") << R"({"do_lower_case": true})";
  CHECK(run("echo 'THE CAT' | " + exe + " tokenize --model '" + dir.string() + "'").out ==
        expected(tok, "the cat"));

  CHECK(run(exe + " tokenize 2>/dev/null").status == 2);
  CHECK(run(base + " --max-length 1 </dev/null 2>/dev/null").status == 2);
  CHECK(run(exe + " tokenize --vocab '" + (dir / "missing.txt").string() +
            "' </dev/null 2>/dev/null")
            .status == 1);
  std::ofstream(dir / "bad.tsv") << "text\tlabel\nonly one column\n";
  const Run bad =
      run(base + " --data '" + (dir / "bad.tsv").string() + "' --text-column text 2>&1");
  CHECK(bad.status == 1);
  CHECK(bad.out.find("bad.tsv:2: expected 2 columns (text, label), found 1") != std::string::npos);
  fs::remove_all(dir);
}
