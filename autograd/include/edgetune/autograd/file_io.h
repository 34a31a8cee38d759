// Atomic file writing: every file edgetune writes (weights, adapters, configs, checkpoints,
// metrics snapshots) goes to a temporary name beside the target, is flushed to disk, and is renamed
// over the target, so a kill at any moment leaves either the old file or the new one, never a torn
// one.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace edgetune {

// A file being written atomically. Writes go to `<path>.tmp-<pid>`; commit() fsyncs it, renames
// it over `path` and fsyncs the folder. Destroying it without commit() removes the temporary file
// and leaves `path` as it was. Errors throw std::runtime_error naming `path`.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  void commit();

 private:
  [[noreturn]] void fail(const std::string& what);
  std::filesystem::path path_;
  std::filesystem::path tmp_;
  int fd_ = -1;
};

// Writes `bytes` to `path` atomically.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// The whole content of a file; throws std::runtime_error naming it.
std::string read_file(const std::filesystem::path& path);

}  // namespace edgetune
