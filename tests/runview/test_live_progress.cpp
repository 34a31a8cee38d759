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

TEST_CASE("the live line: bar, step/total, loss, throughput, memory against the budget, time left",
          "[runview]") {
  CHECK(live_progress_line(sample(), 200) ==
        "[#####---------------] 150/600  loss 0.6123  342 ex/s  mem 20.0 MiB  rss 28.0 MiB of 32.0 MiB  left 45 s");
  Progress p = sample();
  p.budget = 0;
  p.examples_per_second = 0;
  p.tokens_per_second = 12345;
  p.eta_seconds = 600;
  CHECK(live_progress_line(p, 200) ==
        "[#####---------------] 150/600  loss 0.6123  12345 tokens/s  mem 20.0 MiB  rss 28.0 MiB  left 10 min");
}

TEST_CASE("the bar fills in proportion to the steps done", "[runview]") {
  Progress p = sample();
  p.step = 0;
  CHECK(live_progress_line(p, 200).rfind("[--------------------] 0/600", 0) == 0);
  p.step = 599;
  CHECK(live_progress_line(p, 200).rfind("[###################-] 599/600", 0) == 0);
  p.step = 600;
  CHECK(live_progress_line(p, 200).rfind("[####################] 600/600", 0) == 0);
  p.total_steps = 0;
  CHECK(live_progress_line(p, 200).rfind("[--------------------]", 0) == 0);
}

TEST_CASE("the live line never fills the terminal's last column", "[runview]") {
  const std::string full = live_progress_line(sample(), 1000);
  const std::string narrow = live_progress_line(sample(), 40);
  CHECK(narrow.size() == 39);
  CHECK(full.rfind(narrow, 0) == 0);
  CHECK(live_progress_line(sample(), 0) == full);
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
