// Whole-file reading and the one atomic file writer: every file edgetune writes (weights,
// adapters, configs, labels, vocabularies, checkpoints, metrics snapshots) goes to a temporary
// name beside the target, is flushed to disk, and is renamed over the target, so a kill at any
// moment leaves either the old file or the new one, never a torn one. A kill can leave the
// temporary file itself behind; remove_stale_temporaries() clears those from a folder.
//
// Encryption at rest: while the current context (context.h) holds a key, the writer encrypts
// what it writes (encryption.h), and read_file() decrypts every file that carries the encrypted
// header, whatever the context, as long as the key is there.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace edgetune {

class EncryptionKey;
namespace encryption {
class Encryptor;
}

// A file that could not be read or written. what() is one line starting with the file name:
// "<path>: <action> (<reason>)<note>", where an atomic write that failed after making its
// temporary file notes "; the file was left as it was". action() ("cannot write", "cannot open",
// ...) and reason() (the system's text for the error) are kept apart so that a layer can word its
// own message.
class FileError : public std::runtime_error {
 public:
  FileError(std::filesystem::path path, std::string action, std::string reason,
            std::string_view note = {});

  const std::filesystem::path& path() const { return path_; }
  const std::string& action() const { return action_; }
  const std::string& reason() const { return reason_; }

 private:
  std::filesystem::path path_;
  std::string action_;
  std::string reason_;
};

// The temporary name an atomic write of `path` uses: `<path>.tmp-<pid>` (the pid of this
// process), beside the target so that the rename never crosses file systems.
std::filesystem::path temporary_path(const std::filesystem::path& path);

// True when `filename` (a name, not a path) is one temporary_path() makes: a non-empty name
// followed by ".tmp-" and decimal digits only. Also true for the form ".tmp.<digits>" that
// labels.json and vocabularies were written through before (a run folder from an older version
// can still hold one).
bool is_temporary_name(std::string_view filename);

// A file being written atomically. Writes go to temporary_path(path); commit() fsyncs it,
// renames it over `path` and fsyncs the folder. Destroying it without commit() removes the
// temporary file and leaves `path` as it was. Every failure throws FileError naming `path`, after
// removing the temporary file. When the current context holds a key at construction, the file
// is written encrypted with it (the key is kept until the file is done): `path` then holds the
// encryption of the bytes written.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Requires: not committed yet. After it returns, `path` holds exactly the bytes written.
  // A folder that cannot be fsynced (some file systems refuse, EINVAL) still has the file; only
  // an I/O error (EIO) from that fsync is reported.
  void commit();

 private:
  [[noreturn]] void fail(const std::string& action);
  void write_raw(std::string_view bytes);
  std::filesystem::path path_;
  std::filesystem::path tmp_;
  int fd_ = -1;
  std::shared_ptr<const EncryptionKey> key_;
  std::unique_ptr<encryption::Encryptor> encryptor_;  // set when key_ is
};

// Writes `bytes` to `path` atomically (an AtomicFile written once and committed).
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Who made a file being read, which decides what an unencrypted one means while the current
// context holds a key.
enum class FileOrigin {
  Input,   // given to edgetune (a model folder, data, a key file): read as it is
  Output,  // one edgetune wrote (run and adapter folders): must be encrypted when a key is set,
           // so a file swapped for a plain one, or whose magic bytes were altered, is refused
};

// The content of `path`, decrypted when it carries the encrypted header (encryption.h) with the
// current context's key. Throws FileError naming the file when it cannot be opened or read, when
// it is encrypted and no key is set ("it is encrypted: ... --key-file"), when decryption fails
// (another key, altered or truncated: never part of a file), and for an Output file without the
// header while a key is set.
std::string read_file(const std::filesystem::path& path, FileOrigin origin = FileOrigin::Input);

// The decrypted content of `path` when it carries the encrypted header, else nullopt (the file
// is plain and may be read as it is). Reads only the first bytes of a plain file. Throws as
// read_file() does.
std::optional<std::string> read_if_encrypted(const std::filesystem::path& path,
                                             FileOrigin origin = FileOrigin::Input);

// Removes the regular files of `dir` whose names satisfy is_temporary_name(): what atomic writes
// that were killed left behind. Nothing else is touched, and sub-folders are not entered. Returns
// how many were removed; a file that cannot be removed is left (it is never read). Throws
// FileError when `dir` cannot be listed.
std::size_t remove_stale_temporaries(const std::filesystem::path& dir);

}  // namespace edgetune
