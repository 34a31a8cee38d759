// A small pretraining corpus for the command-line tests: three documents (blank-line separated)
// made of the words of the mini vocabulary (tests/golden/tokenizer/mini-uncased-vocab.txt).
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

}  // namespace edgetune::test
