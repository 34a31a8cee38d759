/* The C ABI driven from C (compiled as C99, -pedantic): every function of c_api.h's sessions,
 * with every error path: NULL pointers, a bad model path, bad options, a budget too small or
 * passed mid-run, an unknown label and labels out of range, a probs buffer too small, calls after
 * close; and a session's key (encryption at rest): files written encrypted, read back only with that key.
 *
 *   test_c_api MODEL_DIR SCRATCH_DIR
 *
 * MODEL_DIR is a small BERT folder (the tiny test model); SCRATCH_DIR a folder for the runs. Exits
 * non-zero at the first failed check, naming its line. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgetune/c_api.h"

static int g_checks = 0;

#define CHECK(cond)                                                      \
  do {                                                                   \
    ++g_checks;                                                          \
    if (!(cond)) {                                                       \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                           \
    }                                                                    \
  } while (0)

#define CHECK_CONTAINS(text, part) CHECK((text) != NULL && strstr((text), (part)) != NULL)

static const char* const kTexts[] = {"good", "bad", "great", "awful", "nice", "poor", "superb", "terrible"};
static const char* const kLabels[] = {"pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"};
enum { kExamples = 8 };

/* ---- progress callbacks ---- */

typedef struct {
  long long last_step, total;
  long long stop_at;        /* return non-zero at this step (0: never) */
  long long cancel_at;      /* call edgetune_session_cancel at this step (0: never) */
  edgetune_session* session;
  int calls;
  int memory_ok;
} progress_log;

static int on_progress(const edgetune_progress* p, void* user) {
  progress_log* log = user;
  edgetune_memory m;
  ++log->calls;
  log->last_step = p->step;
  log->total = p->total_steps;
  /* The figures are live ones, and the memory query is allowed from the callback. */
  log->memory_ok = p->memory_live > 0 && p->memory_peak >= p->memory_live && p->rss > 0 &&
                   p->peak_rss >= p->rss && isfinite(p->loss) && p->lr > 0 &&
                   edgetune_session_memory(log->session, &m) == EDGETUNE_OK && m.rss > 0;
  if (log->cancel_at > 0 && p->step == log->cancel_at) edgetune_session_cancel(log->session);
  return log->stop_at > 0 && p->step == log->stop_at;
}

/* ---- asynchronous predict ---- */

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  int done, status;
  size_t n, k;
  float probs[16];
  pthread_t thread;
} predicted;

static void on_predicted(void* user, int status, const float* probs, size_t n, size_t k, const char* error) {
  predicted* r = user;
  pthread_mutex_lock(&r->lock);
  r->status = status;
  r->n = n;
  r->k = k;
  r->thread = pthread_self();
  if (status == EDGETUNE_OK && n * k <= 16) memcpy(r->probs, probs, n * k * sizeof(float));
  if (status != EDGETUNE_OK) fprintf(stderr, "predict_async: %s\n", error);
  r->done = 1;
  pthread_cond_signal(&r->changed);
  pthread_mutex_unlock(&r->lock);
}

static void wait_for(predicted* r) {
  pthread_mutex_lock(&r->lock);
  while (!r->done) pthread_cond_wait(&r->changed, &r->lock);
  pthread_mutex_unlock(&r->lock);
}

/* ---- helpers ---- */

static int remove_entry(const char* path, const struct stat* st, int flag, struct FTW* ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void remove_tree(const char* dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int file_exists(const char* dir, const char* name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return access(path, F_OK) == 0;
}

static edgetune_session* open_ok(const char* model, const char* options) {
  char err[512] = "";
  edgetune_session* s = NULL;
  const int rc = edgetune_session_open(model, options, &s, err, sizeof err);
  if (rc != EDGETUNE_OK) fprintf(stderr, "open: %s\n", err);
  CHECK(rc == EDGETUNE_OK);
  CHECK(s != NULL);
  CHECK(strcmp(edgetune_session_last_error(s), "") == 0);
  return s;
}

static void add_examples(edgetune_session* s) {
  int i;
  for (i = 0; i < kExamples; ++i) CHECK(edgetune_session_add_example(s, kTexts[i], kLabels[i]) == EDGETUNE_OK);
  CHECK(edgetune_session_num_examples(s) == kExamples);
}

static void check_rows_sum_to_one(const float* probs, size_t n, size_t k) {
  size_t i, j;
  for (i = 0; i < n; ++i) {
    double sum = 0;
    for (j = 0; j < k; ++j) {
      CHECK(probs[i * k + j] >= 0 && probs[i * k + j] <= 1);
      sum += probs[i * k + j];
    }
    CHECK(fabs(sum - 1) < 1e-5);
  }
}

/* ---- the checks ---- */

static void test_versions(void) {
  CHECK(edgetune_abi_version() == EDGETUNE_ABI_VERSION);
  CHECK(edgetune_version() != NULL && strlen(edgetune_version()) > 0);
}

static void test_open_errors(const char* model) {
  char err[512];
  char small[8];
  edgetune_session* s = (edgetune_session*)&err; /* any non-NULL value: a failed open sets NULL */

  CHECK(edgetune_session_open(NULL, NULL, &s, err, sizeof err) == EDGETUNE_BAD_ARGUMENT);
  CHECK(s == NULL);
  CHECK_CONTAINS(err, "model_dir is NULL");
  CHECK(edgetune_session_open(model, NULL, NULL, err, sizeof err) == EDGETUNE_BAD_ARGUMENT);
  CHECK_CONTAINS(err, "out is NULL");

  CHECK(edgetune_session_open("/no/such/model", NULL, &s, err, sizeof err) == EDGETUNE_ERROR);
  CHECK(s == NULL);
  CHECK_CONTAINS(err, "/no/such/model");
  CHECK(strchr(err, '\n') == NULL);
  /* A message longer than the buffer is cut, never overrun; a NULL buffer is allowed. */
  CHECK(edgetune_session_open("/no/such/model", NULL, &s, small, sizeof small) == EDGETUNE_ERROR);
  CHECK(strlen(small) == sizeof small - 1);
  CHECK(edgetune_session_open("/no/such/model", NULL, &s, NULL, 0) == EDGETUNE_ERROR);

  CHECK(edgetune_session_open(model, "{\"quant\": ", &s, err, sizeof err) == EDGETUNE_ERROR);
  CHECK_CONTAINS(err, "not JSON");
  CHECK(edgetune_session_open(model, "{\"quant\": \"q5\"}", &s, err, sizeof err) == EDGETUNE_ERROR);
  CHECK_CONTAINS(err, "q5");
  CHECK(edgetune_session_open(model, "{\"epochz\": 3}", &s, err, sizeof err) == EDGETUNE_ERROR);
  CHECK_CONTAINS(err, "epochz");
  CHECK(edgetune_session_open(model, "{\"threads\": -1}", &s, err, sizeof err) == EDGETUNE_ERROR);
  CHECK_CONTAINS(err, "threads");
  CHECK(edgetune_session_open(model, "[1, 2]", &s, err, sizeof err) == EDGETUNE_ERROR);
  CHECK(s == NULL);
}

static void test_null_session(void) {
  edgetune_session* s = NULL;
  const char* texts[] = {"x"};
  float probs[2];
  edgetune_eval ev;
  edgetune_memory m;
  CHECK(edgetune_session_last_error(NULL) != NULL && strlen(edgetune_session_last_error(NULL)) > 0);
  CHECK(edgetune_session_add_example(NULL, "a", "b") == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_clear_examples(NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_num_examples(NULL) == 0);
  CHECK(edgetune_session_train(NULL, NULL, "x", NULL, NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_resume(NULL, "x", NULL, NULL) == EDGETUNE_BAD_ARGUMENT);
  edgetune_session_cancel(NULL);
  CHECK(edgetune_session_num_labels(NULL) == 0);
  CHECK(edgetune_session_label(NULL, 0) == NULL);
  CHECK(edgetune_session_predict(NULL, texts, 1, probs, 2) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_predict_async(NULL, texts, 1, on_predicted, NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_evaluate(NULL, NULL, NULL, 0, &ev) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_save_adapter(NULL, "x") == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_load_adapter(NULL, "x") == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_memory(NULL, &m) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_set_key(NULL, NULL, 0) == EDGETUNE_BAD_ARGUMENT);
  edgetune_session_close(NULL);
  edgetune_session_close(&s);
  CHECK(s == NULL);
}

/* The untrained model: its placeholder labels, prediction, and the errors of the calls. */
static void test_before_training(edgetune_session* s) {
  const char* texts[] = {"hello there", "another text"};
  const char* bad_texts[] = {"hello", NULL};
  const char* digit_labels[] = {"0", "1"};
  const char* unknown[] = {"0", "maybe"};
  float probs[4];
  edgetune_eval ev;
  edgetune_memory m;

  CHECK(edgetune_session_num_labels(s) == 2);
  CHECK(strcmp(edgetune_session_label(s, 1), "LABEL_1") == 0);
  CHECK(edgetune_session_label(s, -1) == NULL);
  CHECK(edgetune_session_label(s, 2) == NULL);

  CHECK(edgetune_session_predict(s, texts, 2, probs, 4) == EDGETUNE_OK);
  check_rows_sum_to_one(probs, 2, 2);
  CHECK(edgetune_session_predict(s, texts, 2, probs, 3) == EDGETUNE_BAD_ARGUMENT);
  CHECK_CONTAINS(edgetune_session_last_error(s), "probs holds 3 floats");
  CHECK(edgetune_session_predict(s, NULL, 2, probs, 4) == EDGETUNE_BAD_ARGUMENT);
  CHECK_CONTAINS(edgetune_session_last_error(s), "texts is NULL");
  CHECK(edgetune_session_predict(s, bad_texts, 2, probs, 4) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_predict(s, texts, 2, NULL, 4) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_predict(s, NULL, 0, NULL, 0) == EDGETUNE_OK);

  CHECK(edgetune_session_add_example(s, NULL, "pos") == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_add_example(s, "good", NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_add_example(s, "good", "") == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "label is empty");
  CHECK(edgetune_session_num_examples(s) == 0);

  /* Nothing to evaluate or train on yet. */
  CHECK(edgetune_session_evaluate(s, NULL, NULL, 0, &ev) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "no examples");
  CHECK(edgetune_session_train(s, NULL, "/tmp/edgetune-never-written", NULL, NULL) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "no examples");
  CHECK(access("/tmp/edgetune-never-written", F_OK) != 0);

  /* The placeholder labels LABEL_i take a file's integer labels; others are unknown. */
  CHECK(edgetune_session_evaluate(s, texts, digit_labels, 2, &ev) == EDGETUNE_OK);
  CHECK(ev.rows == 2);
  CHECK(ev.accuracy >= 0 && ev.accuracy <= 1 && isfinite(ev.loss) && ev.loss > 0);
  CHECK(edgetune_session_evaluate(s, texts, unknown, 2, &ev) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "'maybe'");
  CHECK(edgetune_session_evaluate(s, texts, NULL, 2, &ev) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_evaluate(s, texts, digit_labels, 2, NULL) == EDGETUNE_BAD_ARGUMENT);

  CHECK(edgetune_session_memory(s, NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_memory(s, &m) == EDGETUNE_OK);
  CHECK(m.live > 0 && m.peak >= m.live && m.rss > 0 && m.peak_rss >= m.rss);

  CHECK(edgetune_session_load_adapter(s, NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_load_adapter(s, "/no/such/adapter") == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "/no/such/adapter");
  CHECK(edgetune_session_save_adapter(s, NULL) == EDGETUNE_BAD_ARGUMENT);
  /* After a failed load the session still predicts with its model. */
  CHECK(edgetune_session_predict(s, texts, 2, probs, 4) == EDGETUNE_OK);
  CHECK(edgetune_session_num_labels(s) == 2);

  CHECK(edgetune_session_clear_examples(s) == EDGETUNE_OK);
}

static void test_budget_too_small(const char* model, const char* run) {
  edgetune_session* s = open_ok(model, "{\"memory_budget\": \"64K\", \"threads\": 1}");
  add_examples(s);
  CHECK(edgetune_session_train(s, "{\"epochs\": 1, \"batch_size\": 2}", run, NULL, NULL) ==
        EDGETUNE_OUT_OF_BUDGET);
  CHECK_CONTAINS(edgetune_session_last_error(s), "memory budget");
  CHECK(strchr(edgetune_session_last_error(s), '\n') == NULL);
  CHECK(!file_exists(run, "run.json"));
  edgetune_session_close(&s);
  CHECK(s == NULL);
}

/* Memory the engine never sees, written from the progress callback once, after step 1: enough to
 * take the process's resident set 8 MiB past the budget, as an app's own growth would. */
typedef struct {
  size_t budget;
  char* hog;
} outside_growth;

static int grow_outside(const edgetune_progress* p, void* user) {
  outside_growth* g = user;
  if (g->hog == NULL && p->step == 1) {
    const size_t n = g->budget - p->rss + ((size_t)8 << 20);
    g->hog = malloc(n);
    CHECK(g->hog != NULL);
    memset(g->hog, 1, n);
  }
  return 0;
}

/* Under a process budget, a run whose VmHWM passes it (here through memory outside the engine)
 * saves a checkpoint and returns EDGETUNE_OUT_OF_BUDGET with a one-line message. */
static void test_process_budget_passed(const char* model, const char* run) {
  edgetune_session* s = open_ok(model, "{\"threads\": 1, \"max_length\": 32}");
  edgetune_memory m;
  outside_growth g;
  char options[256];
  add_examples(s);
  CHECK(edgetune_session_memory(s, &m) == EDGETUNE_OK);
  g.budget = m.peak_rss + ((size_t)64 << 20);
  g.hog = NULL;
  snprintf(options, sizeof options,
           "{\"epochs\": 1, \"batch_size\": 2, \"log_every\": 1, \"memory_budget\": \"%lluK\"}",
           (unsigned long long)(g.budget >> 10));
  g.budget = (g.budget >> 10) << 10;
  CHECK(edgetune_session_train(s, options, run, grow_outside, &g) == EDGETUNE_OUT_OF_BUDGET);
  CHECK(g.hog != NULL);
  CHECK_CONTAINS(edgetune_session_last_error(s), "peak resident set (VmHWM)");
  CHECK_CONTAINS(edgetune_session_last_error(s), "checkpoint saved in");
  CHECK(strchr(edgetune_session_last_error(s), '\n') == NULL);
  CHECK(file_exists(run, "train_state.safetensors"));
  free(g.hog);
  edgetune_session_close(&s);
  CHECK(s == NULL);
}

/* 1 if the file dir/name holds `text`. */
static int file_contains(const char* dir, const char* name, const char* text) {
  char path[1024], buf[65536];
  size_t n;
  FILE* f;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  f = fopen(path, "rb");
  if (f == NULL) return 0;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strstr(buf, text) != NULL;
}

/* DP-SGD's settings come through options_json like every other: a run at a target epsilon
 * reports its epsilon in metrics.jsonl; settings DP cannot run with are a one-line error. */
static void test_train_dp(const char* model, const char* run) {
  edgetune_session* s = open_ok(model, "{\"threads\": 1, \"max_length\": 32}");
  add_examples(s);
  CHECK(edgetune_session_train(s, "{\"dp_noise_multiplier\": 1, \"grad_accum\": 2}", run, NULL, NULL) ==
        EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "grad_accum");
  CHECK(strchr(edgetune_session_last_error(s), '\n') == NULL);
  CHECK(edgetune_session_train(s, "{\"epochs\": 1, \"batch_size\": 2, \"dp_target_epsilon\": 8}", run, NULL,
                               NULL) == EDGETUNE_OK);
  CHECK(file_contains(run, "run.json", "\"dp_target_epsilon\": 8"));
  CHECK(file_contains(run, "metrics.jsonl", "\"epsilon\":"));
  edgetune_session_close(&s);
}

static void test_train_cancel_resume(edgetune_session* s, const char* run) {
  const char* texts[] = {"good", "awful", "something else"};
  const char* labels[] = {"pos", "neg", "maybe"};
  progress_log steps = {0, 0, 0, 0, s, 0, 0};
  float probs[6], all[2 * kExamples];
  double loss = 0;
  int right = 0;
  edgetune_eval ev;
  predicted r = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -1, 0, 0, {0}, pthread_self()};
  size_t i;

  add_examples(s);
  CHECK(edgetune_session_train(s, NULL, NULL, NULL, NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_train(s, "{\"model\": \"x\"}", run, NULL, NULL) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "'model'");
  CHECK(edgetune_session_train(s, "{\"epochz\": 1}", run, NULL, NULL) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "epochz");
  CHECK(edgetune_session_train(s, "{\"epochs\": ", run, NULL, NULL) == EDGETUNE_ERROR);
  CHECK(edgetune_session_resume(s, NULL, NULL, NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_resume(s, "/no/such/run", NULL, NULL) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "/no/such/run");

  /* 4 epochs of 8 rows in batches of 2: 16 steps. The callback asks to stop at step 3. */
  steps.stop_at = 3;
  CHECK(edgetune_session_train(s, "{\"epochs\": 4, \"batch_size\": 2, \"log_every\": 1, \"lr\": 0.01}", run,
                               on_progress, &steps) == EDGETUNE_INTERRUPTED);
  CHECK(steps.last_step == 3 && steps.total == 16 && steps.calls == 3 && steps.memory_ok);
  CHECK(file_exists(run, "train_state.safetensors"));
  CHECK(!file_exists(run, "adapter_model.safetensors"));
  /* Interrupted: the model is still the base one. */
  CHECK(strcmp(edgetune_session_label(s, 0), "LABEL_0") == 0);

  /* A cancel made before a training call is cleared by it; one from the callback stops it. */
  edgetune_session_cancel(s);
  steps.stop_at = 0;
  steps.cancel_at = 7;
  CHECK(edgetune_session_resume(s, run, on_progress, &steps) == EDGETUNE_INTERRUPTED);
  CHECK(steps.last_step == 7);

  steps.cancel_at = 0;
  CHECK(edgetune_session_resume(s, run, on_progress, &steps) == EDGETUNE_OK);
  CHECK(steps.last_step == 16);
  CHECK(file_exists(run, "adapter_model.safetensors"));

  /* The trained adapter predicts at once, with the examples' labels. */
  CHECK(edgetune_session_num_labels(s) == 2);
  CHECK(strcmp(edgetune_session_label(s, 0), "neg") == 0);
  CHECK(strcmp(edgetune_session_label(s, 1), "pos") == 0);
  CHECK(edgetune_session_label(s, 2) == NULL);
  CHECK(edgetune_session_predict(s, texts, 3, probs, 6) == EDGETUNE_OK);
  check_rows_sum_to_one(probs, 3, 2);

  /* Evaluation on the added examples agrees with predict: accuracy of the argmax, mean -log p. */
  CHECK(edgetune_session_evaluate(s, NULL, NULL, 0, &ev) == EDGETUNE_OK);
  CHECK(ev.rows == kExamples);
  CHECK(edgetune_session_predict(s, kTexts, kExamples, all, 2 * kExamples) == EDGETUNE_OK);
  for (i = 0; i < kExamples; ++i) {
    const size_t truth = strcmp(kLabels[i], "pos") == 0 ? 1 : 0;
    right += all[2 * i + truth] > all[2 * i + 1 - truth];
    loss -= log(all[2 * i + truth]) / kExamples;
  }
  CHECK(fabs(ev.accuracy - right / (double)kExamples) < 1e-12);
  CHECK(fabs(ev.loss - loss) < 1e-4 * loss);
  CHECK(edgetune_session_evaluate(s, texts, labels, 2, &ev) == EDGETUNE_OK);
  CHECK(ev.rows == 2);
  CHECK(edgetune_session_evaluate(s, texts, labels, 3, &ev) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "'maybe'");
  CHECK_CONTAINS(edgetune_session_last_error(s), "neg, pos");

  /* Asynchronous predict: the same numbers as the synchronous one, on another thread. */
  CHECK(edgetune_session_predict_async(s, texts, 3, NULL, &r) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_predict_async(s, NULL, 3, on_predicted, &r) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_predict_async(s, texts, 3, on_predicted, &r) == EDGETUNE_OK);
  wait_for(&r);
  CHECK(r.status == EDGETUNE_OK && r.n == 3 && r.k == 2);
  CHECK(!pthread_equal(r.thread, pthread_self()));
  for (i = 0; i < 6; ++i) CHECK(r.probs[i] == probs[i]);
}

/* Continual update of the finished run: refusals, a cancel that leaves the run as it was, then an
 * update whose new label grows the head. */
static void test_update(edgetune_session* s, const char* run) {
  const char* texts[] = {"so so", "fine i guess"};
  progress_log steps = {0, 0, 0, 0, s, 0, 0};
  float probs[6];
  CHECK(edgetune_session_clear_examples(s) == EDGETUNE_OK);
  CHECK(edgetune_session_update(s, run, NULL, NULL, NULL) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "no examples");
  CHECK(edgetune_session_add_example(s, texts[0], "meh") == EDGETUNE_OK);
  CHECK(edgetune_session_add_example(s, texts[1], "meh") == EDGETUNE_OK);
  CHECK(edgetune_session_update(NULL, run, NULL, NULL, NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_update(s, NULL, NULL, NULL, NULL) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_update(s, "/no/such/run", NULL, NULL, NULL) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "/no/such/run: no such run folder");
  CHECK(edgetune_session_update(s, run, "{\"run\": \"x\"}", NULL, NULL) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(s), "'run'");

  /* Stopped at step 2 of 4: the run keeps its two labels. */
  steps.stop_at = 2;
  CHECK(edgetune_session_update(s, run, "{\"max_steps\": 4}", on_progress, &steps) == EDGETUNE_INTERRUPTED);
  CHECK(steps.last_step == 2 && steps.total == 4);
  CHECK(edgetune_session_num_labels(s) == 2);
  CHECK(!file_exists(run, "update-staging"));

  steps.stop_at = 0;
  CHECK(edgetune_session_update(s, run, "{\"max_steps\": 4}", on_progress, &steps) == EDGETUNE_OK);
  CHECK(steps.last_step == 4 && steps.memory_ok);
  CHECK(edgetune_session_num_labels(s) == 3);
  CHECK(strcmp(edgetune_session_label(s, 2), "meh") == 0);
  CHECK(edgetune_session_predict(s, texts, 2, probs, 6) == EDGETUNE_OK);
  check_rows_sum_to_one(probs, 2, 3);
  CHECK(file_exists(run, "replay.json"));
  CHECK(!file_exists(run, "update-staging"));
}

static void test_save_load(edgetune_session* s, const char* model, const char* saved) {
  const char* texts[] = {"good", "awful"};
  float a[4], b[4];
  size_t i;
  edgetune_session* other = open_ok(model, "{\"threads\": 1}");
  CHECK(edgetune_session_save_adapter(s, saved) == EDGETUNE_OK);
  CHECK(file_exists(saved, "adapter_model.safetensors") && file_exists(saved, "labels.json"));
  CHECK(edgetune_session_load_adapter(other, saved) == EDGETUNE_OK);
  CHECK(edgetune_session_num_labels(other) == 2);
  CHECK(strcmp(edgetune_session_label(other, 1), "pos") == 0);
  CHECK(edgetune_session_predict(s, texts, 2, a, 4) == EDGETUNE_OK);
  CHECK(edgetune_session_predict(other, texts, 2, b, 4) == EDGETUNE_OK);
  for (i = 0; i < 4; ++i) CHECK(a[i] == b[i]);
  edgetune_session_close(&other);
  CHECK(other == NULL);
}

/* The first 8 bytes of dir/name are the encrypted format's magic. */
static int starts_encrypted(const char* dir, const char* name) {
  static const unsigned char magic[8] = {0x89, 'E', 'T', 'E', 'N', 'C', '\r', '\n'};
  unsigned char head[8] = {0};
  char path[1024 + 64];
  FILE* f;
  size_t n;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  f = fopen(path, "rb");
  if (f == NULL) return 0;
  n = fread(head, 1, sizeof head, f);
  fclose(f);
  return n == sizeof head && memcmp(head, magic, sizeof magic) == 0;
}

/* A session with a key writes every file encrypted; the adapter loads back only with that key. */
static void test_key(const char* model, const char* run, const char* saved) {
  static const char* const names[] = {"adapter_config.json", "adapter_model.safetensors", "labels.json",
                                      "run.json", "metrics.jsonl", "train_state.safetensors"};
  uint8_t key[32], other[32];
  const char* texts[] = {"good", "awful"};
  float a[4], b[4];
  size_t i;
  edgetune_session* s = open_ok(model, "{\"threads\": 1}");
  edgetune_session* reader = open_ok(model, "{\"threads\": 1}");
  for (i = 0; i < 32; ++i) {
    key[i] = (uint8_t)(3 * i + 1);
    other[i] = (uint8_t)(5 * i + 2);
  }
  CHECK(edgetune_session_set_key(s, key, 16) == EDGETUNE_BAD_ARGUMENT);
  CHECK_CONTAINS(edgetune_session_last_error(s), "32");
  CHECK(edgetune_session_set_key(s, NULL, 32) == EDGETUNE_BAD_ARGUMENT);
  CHECK(edgetune_session_set_key(s, key, sizeof key) == EDGETUNE_OK);
  add_examples(s);
  CHECK(edgetune_session_train(s, "{\"epochs\": 1, \"batch_size\": 4, \"save_every\": 1}", run, NULL,
                               NULL) == EDGETUNE_OK);
  for (i = 0; i < sizeof names / sizeof names[0]; ++i) CHECK(starts_encrypted(run, names[i]));
  CHECK(edgetune_session_save_adapter(s, saved) == EDGETUNE_OK);
  CHECK(starts_encrypted(saved, "adapter_model.safetensors") && starts_encrypted(saved, "labels.json"));

  /* Without the key, and with another one: one line naming the file. */
  CHECK(edgetune_session_load_adapter(reader, saved) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(reader), "adapter_config.json");
  CHECK_CONTAINS(edgetune_session_last_error(reader), "encrypted");
  CHECK(edgetune_session_set_key(reader, other, sizeof other) == EDGETUNE_OK);
  CHECK(edgetune_session_load_adapter(reader, saved) == EDGETUNE_ERROR);
  CHECK_CONTAINS(edgetune_session_last_error(reader), "another key");
  CHECK(edgetune_session_set_key(reader, key, sizeof key) == EDGETUNE_OK);
  CHECK(edgetune_session_load_adapter(reader, saved) == EDGETUNE_OK);
  CHECK(edgetune_session_predict(s, texts, 2, a, 4) == EDGETUNE_OK);
  CHECK(edgetune_session_predict(reader, texts, 2, b, 4) == EDGETUNE_OK);
  for (i = 0; i < 4; ++i) CHECK(a[i] == b[i]);
  /* The key removed: files are plain again. */
  CHECK(edgetune_session_set_key(s, NULL, 0) == EDGETUNE_OK);
  remove_tree(saved);
  CHECK(edgetune_session_save_adapter(s, saved) == EDGETUNE_OK);
  CHECK(file_exists(saved, "labels.json") && !starts_encrypted(saved, "labels.json"));
  edgetune_session_close(&reader);
  edgetune_session_close(&s);
}

/* Requests still queued at close are served before it returns. */
static void test_close_serves_queue(const char* model) {
  const char* texts[] = {"one", "two"};
  predicted r[3] = {{PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -1, 0, 0, {0}, pthread_self()},
                    {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -1, 0, 0, {0}, pthread_self()},
                    {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -1, 0, 0, {0}, pthread_self()}};
  int i;
  edgetune_session* s = open_ok(model, "{\"threads\": 1}");
  for (i = 0; i < 3; ++i) CHECK(edgetune_session_predict_async(s, texts, 2, on_predicted, &r[i]) == EDGETUNE_OK);
  edgetune_session_close(&s);
  for (i = 0; i < 3; ++i) CHECK(r[i].done && r[i].status == EDGETUNE_OK && r[i].n == 2);
  /* After close the handle is NULL: every call says so instead of touching freed memory. */
  CHECK(s == NULL);
  CHECK(edgetune_session_predict_async(s, texts, 2, on_predicted, &r[0]) == EDGETUNE_BAD_ARGUMENT);
  edgetune_session_close(&s);
}

int main(int argc, char** argv) {
  char run[1024], budget_run[1024], passed_run[1024], saved[1024], dp_run[1024], key_run[1024], key_saved[1024],
      scratch[960];
  edgetune_session* s;
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL_DIR SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  snprintf(scratch, sizeof scratch, "%s/capi-%ld", argv[2], (long)getpid());
  snprintf(run, sizeof run, "%s/run", scratch);
  snprintf(budget_run, sizeof budget_run, "%s/budget", scratch);
  snprintf(passed_run, sizeof passed_run, "%s/budget-passed", scratch);
  snprintf(saved, sizeof saved, "%s/saved", scratch);
  snprintf(dp_run, sizeof dp_run, "%s/dp", scratch);
  snprintf(key_run, sizeof key_run, "%s/key-run", scratch);
  snprintf(key_saved, sizeof key_saved, "%s/key-saved", scratch);

  test_versions();
  test_open_errors(argv[1]);
  test_null_session();
  s = open_ok(argv[1], "{\"quant\": \"q8\", \"threads\": 1, \"max_length\": 32}");
  test_before_training(s);
  test_budget_too_small(argv[1], budget_run);
  test_process_budget_passed(argv[1], passed_run);
  test_train_dp(argv[1], dp_run);
  test_train_cancel_resume(s, run);
  test_save_load(s, argv[1], saved);
  test_update(s, run);
  edgetune_session_close(&s);
  CHECK(s == NULL);
  test_close_serves_queue(argv[1]);
  test_key(argv[1], key_run, key_saved);
  remove_tree(scratch);
  printf("%d checks passed\n", g_checks);
  return 0;
}
