// A small pretraining corpus for the command-line tests: three documents (blank-line separated)
// made of the words of the mini vocabulary (tests/golden/tokenizer/mini-uncased-vocab.txt), and
// labelled sentences of the same words, to fine-tune what was pretrained on it.
#pragma once

namespace edgetune::test {

inline constexpr const char* kMiniCorpus =
    "the quick brown fox jumped over the lazy dog.\n"
    "the cat sat on the mat, and the dog sat on the line.\n"
    "\n"
    "hello world! a new example is running in english.\n"
    "the big dog jumps over the thin cat; the cat jumps back.\n"
    "\n"
    "the lazy fox is on the rock and the brown dog is inside.\n"
    "hello cafe! the cat and the dog run back to the new world.\n";

// A TSV with a header (sentence, label) and six rows.
inline constexpr const char* kMiniLabelled =
    "sentence\tlabel\n"
    "the cat sat on the mat\t1\n"
    "the lazy dog\t0\n"
    "hello new world\t1\n"
    "the big dog jumps over the thin cat\t0\n"
    "a quick brown fox\t1\n"
    "the dog is inside\t0\n";

}  // namespace edgetune::test
