// `edgetune update` as a process: an update after `train`, killed with -9 at moments spread over
// its whole length (the run folder is then as before the update, or committed and completed by
// the next update), stopped with Ctrl-C (the folder as before), and its refusals as one line.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include "interrupted_run.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

void write_rows(const fs::path& p, const char* good, const char* bad, int n) {
  std::ofstream out(p);
  out << "sentence\tlabel\n";
  for (int i = 0; i < n; ++i) out << good << " number " << i << "\t1\n" << bad << " number " << i << "\t0\n";
}

// Every regular file of the run folder (not the staging folder) and its bytes.
std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) out[e.path().filename().string()] = slurp(e.path());
  }
  return out;
}

std::string tiny_model() { return q(golden_dir() / "bert" / "tiny"); }

// A finished run in `run` of 80 rows.
void train_run(const ScratchDir& d, const fs::path& run) {
  write_rows(d / "train.tsv", "a good film", "a bad film", 40);
  const RunResult r = run_cli("train --model " + tiny_model() + " --train " + q(d / "train.tsv") + " --out " +
                              q(run) + " --epochs 1 --batch-size 8 --threads 1");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
}

// A finished run in d/run, its files as train left them, and 60 new rows in d/new.tsv.
struct TrainedRun {
  ScratchDir d;
  fs::path run = d / "run";
  std::map<std::string, std::string> before;
  explicit TrainedRun(const std::string& tag) : d(tag) {
    REQUIRE(cli_built());
    train_run(d, run);
    before = files_of(run);
    write_rows(d / "new.tsv", "great", "awful", 30);
  }
};

}  // namespace

TEST_CASE("update after train: a new label grows the head, the buffer and metrics record it",
          "[cli][update]") {
  REQUIRE(cli_built());
  ScratchDir d("update-cli");
  const fs::path run = d / "run";
  train_run(d, run);
  REQUIRE(fs::exists(run / "replay.json"));
  {
    std::ofstream out(d / "new.tsv");
    out << "sentence\tlabel\nso so\tmeh\nfine i guess\tmeh\nreally great\t1\n";
  }
  const RunResult r = run_cli("update --run " + q(run) + " --train " + q(d / "new.tsv") + " --threads 1");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.err.find("done: update 1") != std::string::npos);
  REQUIRE(r.err.find("1 new label(s): the head grows to 3") != std::string::npos);
  REQUIRE(slurp(run / "labels.json").find("\"2\": \"meh\"") != std::string::npos);
  REQUIRE(slurp(run / "metrics.jsonl").find("\"new_labels\":[\"meh\"]") != std::string::npos);
  require_whole(run);
  std::ofstream(d / "texts.tsv") << "sentence\nso so\n";
  const RunResult p = run_cli("predict --model " + tiny_model() + " --adapter " + q(run) + " --data " + q(d / "texts.tsv"));
  INFO(p.err);
  REQUIRE(p.exit_code == 0);
}

TEST_CASE("kill -9 at any moment of an update leaves the run as before, or committed and completed "
          "by the next update",
          "[cli][update]") {
  const TrainedRun t("update-kill");
  const ScratchDir& d = t.d;
  const fs::path& run = t.run;
  const auto& before = t.before;
  const std::string update = cli_command() + " update --run " + q(run) + " --train " + q(d / "new.tsv") +
                             " --threads 1 --max-steps 60";
  // The kill moments are fractions of one whole update, timed here (under an emulator or a
  // sanitizer it takes many times as long), the last ones after it would have ended.
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(run_shell(update + " 2> " + q(d / "timed.log")).exit_code == 0);
  const double whole_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  fs::remove_all(run);
  fs::create_directories(run);
  for (const auto& [name, bytes] : before) std::ofstream(run / name, std::ios::binary) << bytes;
  int before_kept = 0, committed = 0, finished = 0;
  // The last moment (-1) is none: the update runs to its end (a slower run than the timed one,
  // on a loaded machine, may outlast any fraction of it).
  for (const double at : {0.0, 0.01, 0.04, 0.1, 0.25, 0.5, 0.8, 0.95, 1.5, -1.0}) {
    const auto ms = static_cast<int>(at * whole_ms);
    INFO("killed after " << ms << " ms");
    fs::remove(d / "update.log");  // a kill at once may leave none
    const pid_t pid = start_background(update, d / "update.log");
    if (at >= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      ::kill(pid, SIGKILL);
    }
    wait_exit(pid);
    // Three states: committed (the marker: the next update completes it), applied (the run's
    // files replaced, the marker gone; a kill while the staging folder was being removed may
    // leave some of it, which the next update discards), or the run as before.
    const bool marker = fs::exists(run / "update-staging" / "COMMITTED");
    const bool applied = !marker && files_of(run) != before;
    if (slurp(d / "update.log").find("done: update") != std::string::npos) {
      REQUIRE(applied);
      REQUIRE_FALSE(fs::exists(run / "update-staging"));
    }
    if (applied) {
      ++finished;
    } else if (marker) {
      ++committed;
    } else {
      ++before_kept;
    }
    require_whole(run);
    // The next update finishes a committed one first, or discards the unfinished one, and works.
    const RunResult next = run_cli("update --run " + q(run) + " --train " + q(d / "new.tsv") +
                                   " --threads 1 --max-steps 2");
    INFO(next.err);
    REQUIRE(next.exit_code == 0);
    REQUIRE((next.err.find("finished the update a kill had interrupted") != std::string::npos) == marker);
    REQUIRE_FALSE(fs::exists(run / "update-staging"));
    require_whole(run);
    const std::string metrics = slurp(run / "metrics.jsonl");
    const auto updates = static_cast<int>((applied || marker) ? 2 : 1);
    REQUIRE(metrics.find("\"type\":\"update\",\"update\":" + std::to_string(updates)) != std::string::npos);
    REQUIRE(metrics.find("\"type\":\"update\",\"update\":" + std::to_string(updates + 1)) == std::string::npos);
    // Back to the run as train left it.
    fs::remove_all(run);
    fs::create_directories(run);
    for (const auto& [name, bytes] : before) std::ofstream(run / name, std::ios::binary) << bytes;
  }
  // The early kills land before the commit; the update left to run finishes.
  REQUIRE(before_kept > 0);
  REQUIRE(finished > 0);
}

TEST_CASE("Ctrl-C stops an update and leaves the run folder as it was", "[cli][update]") {
  const TrainedRun t("update-sigint");
  const ScratchDir& d = t.d;
  const fs::path& run = t.run;
  const pid_t pid = start_background(cli_command() + " update --run " + q(run) + " --train " + q(d / "new.tsv") +
                                         " --threads 1 --max-steps 100000",
                                     d / "update.log");
  for (int i = 0; i < 3000 && slurp(d / "update.log").find("step 10/") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGINT);
  wait_exit(pid);
  const std::string log = slurp(d / "update.log");
  INFO(log);
  REQUIRE(log.find("update stopped: ") != std::string::npos);
  REQUIRE(files_of(run) == t.before);
  REQUIRE_FALSE(fs::exists(run / "update-staging"));
}

TEST_CASE("update refuses a missing run, a pretraining folder and a bad file in one line",
          "[cli][update]") {
  REQUIRE(cli_built());
  ScratchDir d("update-refusals");
  write_rows(d / "new.tsv", "great", "awful", 2);
  auto refused = [&](const std::string& args, const std::string& expected, int code = 1) {
    const RunResult r = run_cli("update " + args);
    INFO(r.err);
    REQUIRE(r.exit_code == code);
    REQUIRE(r.err.find(expected) != std::string::npos);
    REQUIRE(r.err.find('\n') == r.err.size() - 1);
  };
  refused("--run " + q(d / "none") + " --train " + q(d / "new.tsv"), "none: no such run folder");
  refused("--train " + q(d / "new.tsv"), "update needs --run RUN_DIR and --train FILE", 2);
  fs::create_directories(d / "pre");
  std::ofstream(d / "pre" / "run.json") << "{\"corpus\": \"c.txt\"}\n";
  refused("--run " + q(d / "pre") + " --train " + q(d / "new.tsv"), "not a fine-tuning run");
  const fs::path run = d / "run";
  train_run(d, run);
  std::ofstream(d / "bad.tsv") << "sentence\tlabel\ngood\t1\nonly one column\n";
  refused("--run " + q(run) + " --train " + q(d / "bad.tsv"), "bad.tsv:3");
}
