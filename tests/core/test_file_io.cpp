// The one atomic writer (core/file_io.h): a commit replaces the file and leaves no temporary,
// an abandoned write leaves the old file and no temporary, failures name the file; and
// remove_stale_temporaries() removes exactly what killed writes leave behind.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "edgetune/core/file_io.h"
#include "test_support.h"

using namespace edgetune;
using edgetune::test::TempDir;
namespace fs = std::filesystem;

namespace {

// The names in `dir`, sorted.
std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

void put(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

// The message of the FileError `f` throws, or "" when it throws none.
template <class F>
std::string file_error(F&& f) {
  try {
    f();
  } catch (const FileError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("the temporary name is <path>.tmp-<pid>, beside the target", "[file_io]") {
  const fs::path tmp = temporary_path("run/labels.json");
  CHECK(tmp == fs::path("run/labels.json.tmp-" + std::to_string(::getpid())));
  CHECK(is_temporary_name(tmp.filename().string()));
}

TEST_CASE("a commit replaces the file and leaves no temporary beside it", "[file_io]") {
  TempDir dir("core_io");
  const fs::path p = dir.path / "run.json";
  put(p, "old contents that are longer than the new ones");
  {
    AtomicFile f(p);
    f.write("new ");
    // The target is untouched until commit(): the bytes are in the temporary file.
    CHECK(read_file(p) == "old contents that are longer than the new ones");
    CHECK(fs::exists(temporary_path(p)));
    const char tail[] = {'b', 'y', 't', 'e', 's', '\0', '!'};
    f.write(tail, sizeof tail);
    f.commit();
  }
  CHECK(read_file(p) == std::string("new bytes\0!", 11));
  CHECK(names_in(dir.path) == std::vector<std::string>{"run.json"});

  write_file_atomic(p, "");
  CHECK(read_file(p).empty());
  write_file_atomic(dir.path / "second.txt", "two\n");
  CHECK(read_file(dir.path / "second.txt") == "two\n");
  CHECK(names_in(dir.path) == std::vector<std::string>{"run.json", "second.txt"});
}

TEST_CASE("a relative path commits through the current folder", "[file_io]") {
  TempDir dir("core_io");
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path);
  write_file_atomic("relative.txt", "here");
  fs::current_path(cwd);
  CHECK(read_file(dir.path / "relative.txt") == "here");
  CHECK(names_in(dir.path) == std::vector<std::string>{"relative.txt"});
}

TEST_CASE("destroying an uncommitted write leaves the old file and no temporary", "[file_io]") {
  TempDir dir("core_io");
  const fs::path p = dir.path / "labels.json";
  put(p, "{\"old\": true}");
  {
    AtomicFile f(p);
    f.write("{\"new\": tr");
  }
  CHECK(read_file(p) == "{\"old\": true}");
  CHECK(names_in(dir.path) == std::vector<std::string>{"labels.json"});

  // With no old file, nothing at all is left.
  { AtomicFile f(dir.path / "fresh.json"); }
  CHECK(names_in(dir.path) == std::vector<std::string>{"labels.json"});
}

TEST_CASE("a failed write names the file and leaves nothing behind", "[file_io]") {
  TempDir dir("core_io");
  SECTION("the folder does not exist") {
    const fs::path p = dir.path / "no" / "such" / "out.txt";
    const std::string msg = file_error([&] { write_file_atomic(p, "x"); });
    CHECK(msg ==
          p.string() + ": cannot create a temporary file beside it (No such file or directory)");
    try {
      write_file_atomic(p, "x");
    } catch (const FileError& e) {
      CHECK(e.path() == p);
      CHECK(e.action() == "cannot create a temporary file beside it");
      CHECK(e.reason() == "No such file or directory");
    }
  }
  SECTION("the rename fails after the bytes were written") {
    // The target is a non-empty folder: the temporary file is complete, rename() refuses.
    const fs::path p = dir.path / "occupied";
    fs::create_directories(p / "inside");
    const std::string msg = file_error([&] { write_file_atomic(p, "bytes"); });
    CHECK(msg.rfind(p.string() + ": cannot rename the temporary file over it (", 0) == 0);
    CHECK(msg.ends_with("; the file was left as it was"));
    CHECK(fs::is_directory(p / "inside"));
  }
  SECTION("reading a missing file") {
    const fs::path p = dir.path / "missing.txt";
    CHECK(file_error([&] { read_file(p); }) ==
          p.string() + ": cannot open (No such file or directory)");
  }
  CHECK(std::none_of(fs::recursive_directory_iterator(dir.path), fs::recursive_directory_iterator(),
                     [](const fs::directory_entry& e) {
                       return is_temporary_name(e.path().filename().string());
                     }));
}

TEST_CASE("temporary names: the writer's scheme and the retired .tmp.<pid> one", "[file_io]") {
  CHECK(is_temporary_name("run.json.tmp-123"));
  CHECK(is_temporary_name("train_state.safetensors.tmp-4194304"));
  CHECK(is_temporary_name("labels.json.tmp.123"));
  CHECK(is_temporary_name("a.tmp-1.tmp-2"));
  CHECK_FALSE(is_temporary_name("labels.json"));
  CHECK_FALSE(is_temporary_name("run.json.tmp-"));
  CHECK_FALSE(is_temporary_name("run.json.tmp-12a"));
  CHECK_FALSE(is_temporary_name("run.json.tmp-12.bak"));
  CHECK_FALSE(is_temporary_name("notes.tmp"));
  CHECK_FALSE(is_temporary_name(".tmp-123"));
  CHECK_FALSE(is_temporary_name("run.json.TMP-123"));
  CHECK_FALSE(is_temporary_name("run.json.tmp_123"));
}

TEST_CASE("remove_stale_temporaries removes exactly the temporaries of killed writes",
          "[file_io]") {
  TempDir dir("core_io");
  for (const char* name :
       {"adapter_model.safetensors", "labels.json", "run.json", "metrics.jsonl", "notes.tmp",
        "run.json.tmp-", "data.tmp-12a", ".tmp-77", "keep.tmp-1.txt"}) {
    put(dir.path / name, "keep");
  }
  for (const char* name :
       {"run.json.tmp-4242", "train_state.safetensors.tmp-17", "labels.json.tmp.123"}) {
    put(dir.path / name, "torn");
  }
  // A folder with a temporary's name, and a temporary inside a sub-folder, are not touched.
  fs::create_directories(dir.path / "checkpoint.tmp-9");
  fs::create_directories(dir.path / "sub");
  put(dir.path / "sub" / "x.json.tmp-5", "other");

  CHECK(remove_stale_temporaries(dir.path) == 3);
  CHECK(names_in(dir.path) ==
        std::vector<std::string>{".tmp-77", "adapter_model.safetensors", "checkpoint.tmp-9",
                                 "data.tmp-12a", "keep.tmp-1.txt", "labels.json", "metrics.jsonl",
                                 "notes.tmp", "run.json", "run.json.tmp-", "sub"});
  CHECK(fs::exists(dir.path / "sub" / "x.json.tmp-5"));
  CHECK(remove_stale_temporaries(dir.path) == 0);

  // What a killed AtomicFile leaves (its own temporary name) is one of them.
  const fs::path left = temporary_path(dir.path / "run.json");
  put(left, "torn");
  CHECK(remove_stale_temporaries(dir.path) == 1);
  CHECK_FALSE(fs::exists(left));
  CHECK(read_file(dir.path / "run.json") == "keep");
}

TEST_CASE("remove_stale_temporaries on a missing folder names it", "[file_io]") {
  TempDir dir("core_io");
  const fs::path missing = dir.path / "gone";
  CHECK(file_error([&] {
          remove_stale_temporaries(missing);
        }).rfind(missing.string() + ": cannot list the folder (", 0) == 0);
}
