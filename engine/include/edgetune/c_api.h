/* The C ABI of edgetune, for apps that embed it through JNI (Android), Swift / Objective-C (iOS)
 * or any language with a C FFI. Every call returns 0 on success; on failure it returns a non-zero
 * code and writes a one-line message (NUL-terminated, truncated to err_len) into err when err is
 * not NULL. No C++ exception crosses this boundary. Handles are not thread-safe: use one per
 * thread, or lock around calls.
 *
 *   edgetune_classifier* c = NULL;
 *   char err[512];
 *   if (edgetune_open("models/edgetune-mini-uncased", "runs/sentiment", "q8", &c, err, sizeof err))
 *     fprintf(stderr, "%s\n", err);
 *   const char* texts[] = {"what a lovely day"};
 *   float probs[8];  // n * edgetune_num_labels(c)
 *   edgetune_predict(c, texts, 1, probs, err, sizeof err);
 *   edgetune_close(c);
 */
#ifndef EDGETUNE_C_API_H
#define EDGETUNE_C_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct edgetune_classifier edgetune_classifier;

enum {
  EDGETUNE_OK = 0,
  EDGETUNE_ERROR = 1,          /* bad input (file, data, options) */
  EDGETUNE_OUT_OF_BUDGET = 2,  /* the memory budget does not fit the work */
  EDGETUNE_INTERRUPTED = 3     /* training stopped by edgetune_request_stop (checkpoint saved) */
};

/* The library version, e.g. "0.1.0". */
const char* edgetune_version(void);

/* Opens model_dir (a Hugging Face BERT folder) with an optional adapter or run folder
 * (adapter_dir may be NULL). quant: "f32", "q8" or "q4" (NULL: "q8"). */
int edgetune_open(const char* model_dir, const char* adapter_dir, const char* quant,
                  edgetune_classifier** out, char* err, size_t err_len);

/* Number of classes K, and the name of class i (valid while the handle lives). */
int edgetune_num_labels(const edgetune_classifier* c);
const char* edgetune_label(const edgetune_classifier* c, int i);

/* Class probabilities of n texts (UTF-8) into probs, row-major n x K. */
int edgetune_predict(edgetune_classifier* c, const char* const* texts, size_t n, float* probs,
                     char* err, size_t err_len);

void edgetune_close(edgetune_classifier* c);

/* Fine-tunes like `edgetune train`. options_json is a JSON object of the run settings named as in
 * a run folder's run.json ("method", "epochs", "batch_size", "lr", "quant", "memory_budget", ...);
 * missing settings take the command line's defaults. "model", "train" and "out" are required. */
int edgetune_train(const char* options_json, char* err, size_t err_len);

/* Asks a running edgetune_train (on another thread) to stop at the next step and save a
 * checkpoint; it then returns EDGETUNE_INTERRUPTED. "resume": true in options_json continues. */
void edgetune_request_stop(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGETUNE_C_API_H */
