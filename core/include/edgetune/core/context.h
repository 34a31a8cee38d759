// The execution context of a session: the accountant its tensors are counted by, the number of
// threads its kernels use, its dropout generator, and the key its files are encrypted with. This is what the library would otherwise
// keep process-wide; instead a session (a training run, a classifier) owns one and installs it on
// the calling thread for the duration of each call with a ContextScope.
//
// Which context is current is a per-thread pointer, set and restored by ContextScope; nothing
// here is shared between threads unless a caller shares a Context. A Context is used by one
// thread at a time (the one whose scope installed it); its accountant is thread-safe and may be
// read from any thread. A thread with no scope installed has a default context of its own, made
// on first use: an accountant with no budget, threads 0, generator (0, 0), no key.
#pragma once

#include <cstdint>
#include <memory>

#include "edgetune/core/memory.h"

namespace edgetune {

class EncryptionKey;

// The dropout generator: counter-based, so any element's draw depends only on (seed, counter),
// which makes masks independent of thread count and cheap to replay.
struct RngState {
  std::uint64_t seed = 0;
  std::uint64_t counter = 0;
  // While a forward runs on rows [row_offset, row_offset + rows) of a batch of batch_rows rows (a
  // micro-batch; autograd's DropoutRows sets these), each dropout call takes its rows' part of
  // the mask it would draw over the whole batch, and the counter advances by the whole batch's
  // elements: how a plan splits a batch changes no mask. 0: not split.
  std::uint64_t row_offset = 0, rows = 0, batch_rows = 0;
};

struct Context {
  // Counts every tensor allocated while this context is current; a tensor gives its bytes back to
  // this accountant when freed, on whatever thread that happens and however long it outlives the
  // context (it holds a reference).
  std::shared_ptr<Accountant> accountant = std::make_shared<Accountant>();
  // Threads of every parallel kernel; 0: OpenMP's default for the calling thread
  // (omp_get_max_threads(), which OMP_NUM_THREADS sets).
  int threads = 0;
  RngState rng;  // dropout draws advance rng.counter
  // While set, core's file writer encrypts every file with it and read_file() decrypts with it
  // (file_io.h, encryption.h). Null: files are written plain, and an encrypted one cannot be read.
  std::shared_ptr<const EncryptionKey> key;
};

// The calling thread's current context: the one of the innermost ContextScope alive on this
// thread, else this thread's default context.
Context& current_context();

// Makes `context` current on the calling thread until the scope ends, then restores the context
// that was current before. Scopes nest; each must end on the thread that made it, in reverse
// order. `context` must outlive the scope.
class ContextScope {
 public:
  explicit ContextScope(Context& context);
  ~ContextScope();
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  Context* previous_;
};

}  // namespace edgetune
