/* The C ABI of edgetune, for apps that embed it through JNI (Android), Swift / Objective-C (iOS)
 * or any language with a C FFI. Valid C99. No C++ exception crosses it, and the library keeps no
 * process-wide state of its own behind it: everything lives in a handle.
 *
 * Versioning: EDGETUNE_ABI_VERSION is the version this header describes; edgetune_abi_version()
 * is the version of the library actually loaded. An app checks that they are equal.
 *
 * Errors: calls return EDGETUNE_OK (0) or one of the codes below. A session keeps the message of
 * its last failure (edgetune_session_last_error, like sqlite3_errmsg); calls without a session
 * write theirs into a caller's buffer (err, err_len: NUL-terminated, cut to err_len - 1 bytes;
 * err may be NULL).
 *
 * Pointers: unless a function says otherwise, every pointer argument is borrowed for the length
 * of the call (the library copies what it keeps), and every returned pointer is owned by the
 * library.
 *
 * Threads: a session may be used from any thread. Calls that use its model (train, resume,
 * predict, evaluate, save / load adapter, examples) run one at a time: a call made while another
 * runs waits for it. edgetune_session_cancel and edgetune_session_memory never wait and may be
 * called from any thread at any moment, progress callbacks included. edgetune_session_close must
 * not race with any other call on the same session.
 *
 *   edgetune_session* s = NULL;
 *   char err[512];
 *   if (edgetune_session_open("models/edgetune-mini-uncased", "{\"memory_budget\": \"32M\"}",
 *                             &s, err, sizeof err) != EDGETUNE_OK) {
 *     fprintf(stderr, "%s\n", err);
 *     return 1;
 *   }
 *   edgetune_session_add_example(s, "what a lovely day", "positive");
 *   edgetune_session_add_example(s, "worst service ever", "negative");
 *   if (edgetune_session_train(s, "{\"epochs\": 3}", "runs/mine", NULL, NULL) != EDGETUNE_OK)
 *     fprintf(stderr, "%s\n", edgetune_session_last_error(s));
 *   const char* texts[] = {"lovely"};
 *   float probs[2];  // n * edgetune_session_num_labels(s)
 *   edgetune_session_predict(s, texts, 1, probs, 2);
 *   edgetune_session_close(&s);  // s is NULL afterwards
 */
#ifndef EDGETUNE_C_API_H
#define EDGETUNE_C_API_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define EDGETUNE_API
#else
#define EDGETUNE_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* 1: edgetune_open / predict / train with a process-wide stop request. 2: sessions.
 * 3: edgetune_session_set_key (encryption at rest), edgetune_session_update (continual updates
 *    with a replay buffer). */
#define EDGETUNE_ABI_VERSION 3

enum {
  EDGETUNE_OK = 0,
  EDGETUNE_ERROR = 1,          /* bad input: a file, the data, the options, a label */
  EDGETUNE_OUT_OF_BUDGET = 2,  /* the memory budget does not fit the work */
  EDGETUNE_INTERRUPTED = 3,    /* training stopped by a cancel (a checkpoint is saved: resume) */
  EDGETUNE_BAD_ARGUMENT = 4    /* a NULL handle or pointer, or a size that does not fit */
};

/* The ABI version of the loaded library (EDGETUNE_ABI_VERSION of its build). Any thread. */
EDGETUNE_API int edgetune_abi_version(void);

/* The library version, e.g. "0.1.0": a static string. Any thread. */
EDGETUNE_API const char* edgetune_version(void);

/* ---- sessions ------------------------------------------------------------------------------- */

typedef struct edgetune_session edgetune_session;

/* Opens a session on model_dir (a Hugging Face BERT folder: config.json, model.safetensors,
 * vocab.txt; or a model file from edgetune compress, whose "quant" must be the file's and whose
 * embeddings load as the file stores them). options_json (NULL: defaults) is a JSON object with any of
 *   "quant": "f32" | "q8" | "q4" | "nf4" | "pal4"   storage of the frozen base (default "q8")
 *   "quant_embeddings": bool       word embeddings as quant too, positions q8 (default false;
 *                                  true for a model file without them is an error)
 *   "memory_budget": bytes         hard limit of training: a number or "32M" (default none)
 *   "threads": int                 kernel threads (default 0: all cores)
 *   "max_length": int              tokens per text (default 128)
 *   "batch_size": int              rows per forward pass of predict and evaluate (default 32)
 * On success *out is a new session, owned by the caller until edgetune_session_close. On failure
 * *out is NULL and the message is in err. Any thread. */
EDGETUNE_API int edgetune_session_open(const char* model_dir, const char* options_json,
                                       edgetune_session** out, char* err, size_t err_len);

/* Serves the edgetune_session_predict_async requests still queued (their callbacks run), joins
 * the session's worker thread, frees the session and sets *s to NULL. close(NULL) and close of
 * a pointer to NULL do nothing, so closing twice is safe. Not from a predict_async callback. */
EDGETUNE_API void edgetune_session_close(edgetune_session** s);

/* The message of the session's last failed call, one line; "" when none failed. The string is
 * owned by the session and valid until the next call on it; read it on the thread that made the
 * failing call. For s == NULL: a static message saying so. */
EDGETUNE_API const char* edgetune_session_last_error(const edgetune_session* s);

/* Adds a labelled example, copied: text is UTF-8, label any non-empty UTF-8 name (the labels of
 * the added examples become the classes of the next training). */
EDGETUNE_API int edgetune_session_add_example(edgetune_session* s, const char* text, const char* label);
/* Removes every added example. */
EDGETUNE_API int edgetune_session_clear_examples(edgetune_session* s);
/* The number of added examples; 0 for s == NULL. */
EDGETUNE_API size_t edgetune_session_num_examples(edgetune_session* s);

/* One progress report of a training. */
typedef struct edgetune_progress {
  int64_t step;         /* optimizer steps done */
  int64_t total_steps;  /* of the whole run */
  double loss;          /* mean training loss since the last report */
  double lr;            /* learning rate of the last step */
  size_t memory_live;   /* the memory accountant's live bytes */
  size_t memory_peak;   /* the accountant's peak bytes */
  size_t rss;           /* the process's resident bytes */
  size_t peak_rss;      /* the process's peak resident bytes (VmHWM) */
} edgetune_progress;

/* Called on the thread that called train or resume, after every log_every steps (option
 * "log_every", default 10) and the last. p is valid during the call only. Returns 0 to go on,
 * non-zero to stop as edgetune_session_cancel does. It may call edgetune_session_cancel and
 * edgetune_session_memory, no other function of the session. */
typedef int (*edgetune_progress_fn)(const edgetune_progress* p, void* user);

/* Fine-tunes on the added examples into the run folder out_dir (created; it then holds the
 * adapter, labels.json, run.json, metrics.jsonl and the checkpoint). options_json (NULL: {}) holds
 * run.json settings ("method", "epochs", "batch_size", "lr", "seed", "log_every", "save_every",
 * ...) over the session's options; "model", "train" and "out" are not allowed. progress and user
 * may be NULL. Returns EDGETUNE_OK and from then on predicts with the trained adapter;
 * EDGETUNE_INTERRUPTED when cancelled (checkpoint saved, the model unchanged);
 * EDGETUNE_OUT_OF_BUDGET when the budget cannot hold the training, or when under a process budget
 * ("budget_scope": "process") the process's peak resident set passed it mid-run (checkpoint
 * saved: resume with a larger budget). A cancel made before the call is cleared by it. */
EDGETUNE_API int edgetune_session_train(edgetune_session* s, const char* options_json, const char* out_dir,
                                        edgetune_progress_fn progress, void* user);

/* Continues the run in out_dir from its checkpoint, with its run.json settings and, for a run
 * trained from added examples, the session's examples (the same ones give the same result as an
 * uninterrupted run). Codes and callback as for train. */
EDGETUNE_API int edgetune_session_resume(edgetune_session* s, const char* out_dir,
                                         edgetune_progress_fn progress, void* user);

/* Continues the finished run in run_dir (written by train) on the added examples, mixed with the
 * run's replay buffer (run_dir/replay.json), as one atomic step: labels the run lacks grow the
 * classifier head (old classes keep their rows; labels.json updated), the buffer takes the new
 * examples, and a kill at any moment leaves run_dir as before the update or, once committed, is
 * completed by the next update. options_json (NULL: {}) holds update settings over the session's
 * threads, memory budget and max_length: "epochs" (3), "min_steps" (10), "max_steps" (0: the
 * epochs), "lr" (2e-4), "replay_ratio" (1: a replayed example per new one), "memory_budget", ...;
 * "run" and "train" are not allowed. Returns EDGETUNE_OK and from then on predicts with the
 * updated adapter; EDGETUNE_INTERRUPTED when cancelled (run_dir unchanged, nothing to resume).
 * Codes and callback otherwise as for train. Since ABI 3. */
EDGETUNE_API int edgetune_session_update(edgetune_session* s, const char* run_dir, const char* options_json,
                                         edgetune_progress_fn progress, void* user);
/* Asks the session's running train, resume or update to stop after its current step; train and
 * resume save a checkpoint, an update is discarded; it returns EDGETUNE_INTERRUPTED. Any thread,
 * never waits; NULL does nothing. */
EDGETUNE_API void edgetune_session_cancel(edgetune_session* s);

/* Number of classes K of the session's model (0 for NULL or on failure), and the name of class
 * i: NULL when i is out of range. The name is owned by the session and valid until the next
 * train, resume, load_adapter or label call on it. */
EDGETUNE_API int edgetune_session_num_labels(edgetune_session* s);
EDGETUNE_API const char* edgetune_session_label(edgetune_session* s, int i);

/* Class probabilities of n UTF-8 texts into probs (caller's, probs_len floats, at least n * K),
 * row-major n x K. */
EDGETUNE_API int edgetune_session_predict(edgetune_session* s, const char* const* texts, size_t n,
                                          float* probs, size_t probs_len);

/* The result of an asynchronous predict, on the session's worker thread (one per session,
 * started by the first request): status EDGETUNE_OK with probs (n x K, row-major), or an error
 * code with error (one line) and probs NULL. probs and error are owned by the library and valid
 * during the call only. Callbacks come in the order of the requests. A callback may call the
 * session's functions, but not close. */
typedef void (*edgetune_predict_fn)(void* user, int status, const float* probs, size_t n, size_t k,
                                    const char* error);

/* Copies the n texts, queues the request and returns at once; done (not NULL) is called with
 * user later. Returns an error code (and done is never called) only for bad arguments. */
EDGETUNE_API int edgetune_session_predict_async(edgetune_session* s, const char* const* texts, size_t n,
                                                edgetune_predict_fn done, void* user);

/* Evaluation figures. */
typedef struct edgetune_eval {
  size_t rows;
  double accuracy;  /* fraction right */
  double loss;      /* mean cross-entropy */
  double macro_f1;
} edgetune_eval;

/* Evaluates the session's model on n labelled examples (texts[i] with labels[i]), or on the
 * added examples when n == 0 (texts and labels may then be NULL). A label the model does not
 * have is an EDGETUNE_ERROR naming it. out is the caller's. */
EDGETUNE_API int edgetune_session_evaluate(edgetune_session* s, const char* const* texts,
                                           const char* const* labels, size_t n, edgetune_eval* out);

/* Writes the session's current adapter into dir (adapter_config.json,
 * adapter_model.safetensors, labels.json). */
EDGETUNE_API int edgetune_session_save_adapter(edgetune_session* s, const char* dir);
/* Replaces the session's model by the base with the adapter (or run) folder dir. */
EDGETUNE_API int edgetune_session_load_adapter(edgetune_session* s, const char* dir);

/* Encryption at rest. From this call on, every file the session writes (train, resume,
 * save_adapter: the adapter, labels.json, run.json, metrics.jsonl, the checkpoint) is encrypted
 * and authenticated with key (XChaCha20-Poly1305, libsodium's secretstream), and the files it
 * reads back (resume, load_adapter) must be encrypted with it: a wrong key, or a file altered or
 * truncated, fails with a one-line error naming the file. The model folder given to open is read
 * as it is. key is key_len == 32 bytes (e.g. from the Android Keystore or the iOS Keychain),
 * copied into memory the library locks and wipes when the session closes or the key is replaced;
 * the caller may wipe its own copy after the call. key == NULL with key_len == 0 removes the key
 * (files are written plain again). Waits for a running call of the session. */
EDGETUNE_API int edgetune_session_set_key(edgetune_session* s, const uint8_t* key, size_t key_len);

/* Memory figures, in bytes. */
typedef struct edgetune_memory {
  size_t live;      /* the memory accountant's live bytes */
  size_t peak;      /* its peak */
  size_t budget;    /* its budget (0: none) */
  size_t rss;       /* the process's resident bytes */
  size_t peak_rss;  /* the process's peak resident bytes (VmHWM) */
} edgetune_memory;

/* Fills out (the caller's). Any thread, never waits, progress callbacks included. */
EDGETUNE_API int edgetune_session_memory(const edgetune_session* s, edgetune_memory* out);

/* ---- a classifier from files (ABI 1) ---------------------------------------------------------
 * The calls below keep ABI 1's use: a handle per thread, errors into err. */

typedef struct edgetune_classifier edgetune_classifier;

/* Opens model_dir with an optional adapter or run folder (adapter_dir may be NULL). quant: "f32",
 * "q8", "q4", "nf4" or "pal4" (NULL: "q8"). *out is owned by the caller until edgetune_close. */
EDGETUNE_API int edgetune_open(const char* model_dir, const char* adapter_dir, const char* quant,
                               edgetune_classifier** out, char* err, size_t err_len);

/* Number of classes K, and the name of class i (owned by the handle, valid while it lives). */
EDGETUNE_API int edgetune_num_labels(const edgetune_classifier* c);
EDGETUNE_API const char* edgetune_label(const edgetune_classifier* c, int i);

/* Class probabilities of n texts (UTF-8) into probs (the caller's), row-major n x K. */
EDGETUNE_API int edgetune_predict(edgetune_classifier* c, const char* const* texts, size_t n, float* probs,
                                  char* err, size_t err_len);

/* Frees the handle; NULL does nothing. */
EDGETUNE_API void edgetune_close(edgetune_classifier* c);

/* Fine-tunes like `edgetune train`, to the end. options_json is a JSON object of the run settings
 * named as in a run folder's run.json ("method", "epochs", "batch_size", "lr", "quant",
 * "memory_budget", ...); missing settings take the command line's defaults. "model", "train" and
 * "out" are required; "resume": true continues the run in "out". To cancel, use a session. */
EDGETUNE_API int edgetune_train(const char* options_json, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* EDGETUNE_C_API_H */
