// The live progress line of a terminal (examples/runview/live_progress.h): its text, bar and
// width, and the stream that keeps it below the run's other messages.
#include <catch2/catch.hpp>

#include <sstream>

#include "live_progress.h"

using namespace edgetune;
using namespace edgetune::cli;

namespace {

Progress sample() {
  Progress p;
  p.step = 150;
  p.total_steps = 600;
  p.loss = 0.61234;
  p.examples_per_second = 342.4;
  p.eta_seconds = 45;
  p.memory_live = 20 * 1024 * 1024;
  p.rss = 28 * 1024 * 1024;
  p.budget = 32 * 1024 * 1024;
  return p;
}

}  // namespace

TEST_CASE("the live line: bar, step/total, time left, loss, throughput, memory against the budget",
          "[runview]") {
  CHECK(live_progress_line(sample(), 200) ==
        "[#####---------------] 150/600  45 s left  loss 0.6123  342 ex/s  rss 28.0 MiB/32.0 MiB  mem 20.0 MiB");
  Progress p = sample();
  p.budget = 0;
  p.examples_per_second = 0;
  p.tokens_per_second = 12345;
  p.eta_seconds = 600;
  CHECK(live_progress_line(p, 0) ==
        "[#####---------------] 150/600  10 min left  loss 0.6123  12345 tok/s  rss 28.0 MiB  mem 20.0 MiB");
}

TEST_CASE("where the OS splits the resident set, the live line gives its private and file-backed parts",
          "[runview]") {
  Progress p = sample();
  p.rss_private = 11 * 1024 * 1024;
  p.rss_file = 17 * 1024 * 1024;
  CHECK(live_progress_line(p, 200) ==
        "[#####---------------] 150/600  45 s left  loss 0.6123  342 ex/s  rss 28.0 MiB/32.0 MiB  private 11.0 MiB  "
        "file 17.0 MiB  mem 20.0 MiB");
  CHECK(live_progress_line(p, 100) ==
        "[##--------] 150/600  45 s left  loss 0.6123  342 ex/s  rss 28.0 MiB/32.0 MiB  private 11.0 MiB");
}

TEST_CASE("the bar fills in proportion to the steps done", "[runview]") {
  Progress p = sample();
  p.step = 0;
  CHECK(live_progress_line(p, 200).rfind("[--------------------] 0/600  ", 0) == 0);
  p.step = 599;
  CHECK(live_progress_line(p, 200).rfind("[###################-] 599/600  ", 0) == 0);
  p.step = 600;
  CHECK(live_progress_line(p, 200).rfind("[####################] 600/600  ", 0) == 0);
  CHECK(live_progress_line(p, 80).rfind("[##########] 600/600  ", 0) == 0);
  p.total_steps = 0;
  CHECK(live_progress_line(p, 200).rfind("[--------------------] 600/0  ", 0) == 0);
}

TEST_CASE("on a narrow terminal the bar shrinks and whole fields are left out from the right, "
          "never filling the last column",
          "[runview]") {
  CHECK(live_progress_line(sample(), 80) ==
        "[##--------] 150/600  45 s left  loss 0.6123  342 ex/s  rss 28.0 MiB/32.0 MiB");
  CHECK(live_progress_line(sample(), 78).size() == 77);
  CHECK(live_progress_line(sample(), 77) == "[##--------] 150/600  45 s left  loss 0.6123  342 ex/s");
  CHECK(live_progress_line(sample(), 40) == "[##--------] 150/600  45 s left");
  CHECK(live_progress_line(sample(), 10) == "[##--------] 150/600");
}

TEST_CASE("messages scroll above the live line, which is redrawn below them and ended at the end",
          "[runview]") {
  std::ostringstream out;
  {
    LiveTerminal t(out);
    t.stream() << "plan: no checkpointing\n" << std::flush;
    CHECK(out.str() == "plan: no checkpointing\n");
    t.show("[#---] 1/4");
    t.stream() << "eval after" << std::flush;  // a part of a line waits for its end
    CHECK(out.str() == "plan: no checkpointing\n\r\033[K[#---] 1/4");
    t.stream() << " epoch 1:\n  accuracy 0.5\n" << std::flush;
    t.show("[####] 4/4");
  }
  CHECK(out.str() ==
        "plan: no checkpointing\n"
        "\r\033[K[#---] 1/4"
        "\r\033[Keval after epoch 1:\n  accuracy 0.5\n[#---] 1/4"
        "\r\033[K[####] 4/4"
        "\n");
}
