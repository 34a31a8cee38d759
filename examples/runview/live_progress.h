// The live progress line of a training command on a terminal: one line, rewritten in place at
// every progress report, with a bar, step/total, loss, throughput, memory and the time left; the
// run's other messages scroll above it. The CLI decides when to use it (stderr is a terminal);
// when it does not, the run layer's plain progress lines are printed instead (engine/run.h).
#pragma once

#include <cstddef>
#include <ostream>
#include <streambuf>
#include <string>

#include "edgetune/engine/run.h"

namespace edgetune::cli {

// The text of the live line for `p`, at most `width` - 1 characters (a line that filled the last
// column would wrap on some terminals, and a wrapped line is not rewritten in place; 0: no limit):
//   "[#####---------------] 150/600  45 s left  loss 0.6123  342 ex/s  rss 28.0 MiB/32.0 MiB  mem 20.0 MiB"
// The bar is filled in proportion to step/total: 20 cells from 120 columns up (or without a
// limit), else 10. Throughput is tokens/s ("tok/s") when p.tokens_per_second > 0, else examples/s;
// rss is the process's resident set, "/<budget>" under a budget, followed where the OS splits it
// by its private and file-backed parts ("private 10.9 MiB  file 17.1 MiB": a mapped model file's
// weights are file pages); mem is the accountant's live bytes. Fields that do not fit whole are left out from the right, the time left last of all.
std::string live_progress_line(const Progress& p, std::size_t width);

// A stream for the run's messages on a terminal, with a live line kept below them: each complete
// line written to stream() erases the live line, is printed, and the live line is drawn again
// after it; show() replaces the live line. Destroying it ends the live line with a newline, so
// that what is printed next (the report, an error) starts on a line of its own.
class LiveTerminal {
 public:
  explicit LiveTerminal(std::ostream& out);
  ~LiveTerminal();
  LiveTerminal(const LiveTerminal&) = delete;
  LiveTerminal& operator=(const LiveTerminal&) = delete;

  std::ostream& stream() { return stream_; }
  void show(const std::string& line);

 private:
  class Buffer : public std::streambuf {
   public:
    explicit Buffer(std::ostream& out) : out_(out) {}
    void show(const std::string& line);
    void finish();

   protected:
    int overflow(int c) override;
    std::streamsize xsputn(const char* s, std::streamsize n) override;

   private:
    std::ostream& out_;
    std::string pending_;  // the part of a line written so far
    std::string live_;     // the live line on screen ("" when none)
  };
  Buffer buffer_;
  std::ostream stream_;
};

}  // namespace edgetune::cli
