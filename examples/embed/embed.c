/* An app that embeds edgetune through its C ABI, as a phone app would: it opens the shipped
 * model, adds labelled messages from memory (the user's own, which never leave the device),
 * trains under a memory budget with a progress bar, is cancelled halfway by another thread (the
 * user leaving the screen), resumes, and classifies new messages asynchronously, so that the
 * thread that asks (an app's UI thread) never waits for the model.
 *
 *   edgetune_embed [--model DIR] [--out DIR] [--budget BYTES] [--epochs N]
 *
 * Defaults: --model models/edgetune-mini-uncased, --out runs/embed, --budget 32M, --epochs 4.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgetune/c_api.h"

static const char* const kMessages[][2] = {
    {"i love this app, it works perfectly", "positive"},
    {"great service and very friendly staff", "positive"},
    {"the food was delicious and fresh", "positive"},
    {"what a wonderful day at the beach", "positive"},
    {"thank you so much, this made my week", "positive"},
    {"the movie was brilliant and moving", "positive"},
    {"fast delivery and the package was intact", "positive"},
    {"best purchase i have made this year", "positive"},
    {"the hotel room was clean and comfortable", "positive"},
    {"i am so happy with the results", "positive"},
    {"excellent quality for the price", "positive"},
    {"the team did an amazing job", "positive"},
    {"lovely people and a beautiful place", "positive"},
    {"this update fixed everything, well done", "positive"},
    {"the concert was fantastic", "positive"},
    {"highly recommended, five stars", "positive"},
    {"the new design looks great", "positive"},
    {"she gave a warm and inspiring talk", "positive"},
    {"our trip was a delight from start to finish", "positive"},
    {"the coffee here is superb", "positive"},
    {"i enjoyed every minute of it", "positive"},
    {"support answered quickly and solved my problem", "positive"},
    {"a charming and funny book", "positive"},
    {"the garden looks gorgeous in spring", "positive"},
    {"my kids adored the show", "positive"},
    {"smooth, simple and pleasant to use", "positive"},
    {"the best pizza in town", "positive"},
    {"a truly great experience", "positive"},
    {"i would happily buy it again", "positive"},
    {"everything went better than expected", "positive"},
    {"this app is terrible and keeps crashing", "negative"},
    {"rude staff and awful service", "negative"},
    {"the food was cold and tasteless", "negative"},
    {"what a miserable rainy day", "negative"},
    {"i want a refund, this is a scam", "negative"},
    {"the movie was boring and far too long", "negative"},
    {"the package arrived broken and late", "negative"},
    {"worst purchase i have ever made", "negative"},
    {"the hotel room was dirty and noisy", "negative"},
    {"i am very disappointed with the results", "negative"},
    {"poor quality, it fell apart in a week", "negative"},
    {"the team did a sloppy job", "negative"},
    {"unfriendly people and an ugly place", "negative"},
    {"this update broke everything", "negative"},
    {"the concert was a total mess", "negative"},
    {"not recommended, one star", "negative"},
    {"the new design is confusing and ugly", "negative"},
    {"he gave a dull and pointless talk", "negative"},
    {"our trip was a disaster from start to finish", "negative"},
    {"the coffee here is bitter and burnt", "negative"},
    {"i hated every minute of it", "negative"},
    {"support never answered my emails", "negative"},
    {"a tedious and badly written book", "negative"},
    {"the garden is full of weeds and trash", "negative"},
    {"my kids were bored by the show", "negative"},
    {"slow, buggy and annoying to use", "negative"},
    {"the worst pizza in town", "negative"},
    {"a truly horrible experience", "negative"},
    {"i would never buy it again", "negative"},
    {"everything went wrong, as usual", "negative"},
};

/* What the training thread and the cancelling thread share. */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  long long step, total;
  int done;
} training_state;

/* Progress callback (on the training thread): draws the bar and tells the other thread. */
static int on_progress(const edgetune_progress* p, void* user) {
  training_state* t = user;
  enum { width = 30 };
  char bar[width + 1];
  const int filled = p->total_steps > 0 ? (int)(width * p->step / p->total_steps) : 0;
  for (int i = 0; i < width; ++i) bar[i] = i < filled ? '#' : '.';
  bar[width] = '\0';
  printf("\r[%s] %3lld/%lld  loss %.4f  lr %.2e  memory %.1f MiB (peak %.1f)  rss %.1f MiB", bar,
         (long long)p->step, (long long)p->total_steps, p->loss, p->lr, p->memory_live / 1048576.0,
         p->memory_peak / 1048576.0, p->rss / 1048576.0);
  fflush(stdout);
  pthread_mutex_lock(&t->lock);
  t->step = p->step;
  t->total = p->total_steps;
  pthread_cond_broadcast(&t->changed);
  pthread_mutex_unlock(&t->lock);
  return 0;
}

typedef struct {
  edgetune_session* session;
  training_state* state;
} canceller_args;

/* The second thread: cancels the training once it is halfway. */
static void* cancel_halfway(void* arg) {
  canceller_args* a = arg;
  training_state* t = a->state;
  pthread_mutex_lock(&t->lock);
  while (!t->done && (t->total == 0 || t->step * 2 < t->total)) pthread_cond_wait(&t->changed, &t->lock);
  const int cancel = !t->done;
  pthread_mutex_unlock(&t->lock);
  if (cancel) edgetune_session_cancel(a->session);
  return NULL;
}

/* What the asynchronous predict and the thread that asked share. */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  edgetune_session* session;
  const char* const* texts;
  int done;
  int status;
} predict_state;

/* The result of the asynchronous predict, on the session's worker thread. probs is the library's
 * and valid only here, so it is printed here. */
static void on_predicted(void* user, int status, const float* probs, size_t n, size_t k, const char* error) {
  predict_state* s = user;
  if (status == EDGETUNE_OK) {
    for (size_t i = 0; i < n; ++i) {
      size_t best = 0;
      for (size_t j = 1; j < k; ++j) {
        if (probs[i * k + j] > probs[i * k + best]) best = j;
      }
      printf("  %-9s %.3f  %s\n", edgetune_session_label(s->session, (int)best), probs[i * k + best],
             s->texts[i]);
    }
  } else {
    fprintf(stderr, "edgetune_embed: predict: %s\n", error);
  }
  pthread_mutex_lock(&s->lock);
  s->status = status;
  s->done = 1;
  pthread_cond_signal(&s->changed);
  pthread_mutex_unlock(&s->lock);
}

static int fail(edgetune_session** s, const char* what) {
  fprintf(stderr, "\nedgetune_embed: %s: %s\n", what, edgetune_session_last_error(*s));
  edgetune_session_close(s);
  return 1;
}

int main(int argc, char** argv) {
  const char* model = "models/edgetune-mini-uncased";
  const char* out = "runs/embed";
  const char* budget = "32M";
  int epochs = 4;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("usage: %s [--model DIR] [--out DIR] [--budget BYTES] [--epochs N]\n"
             "Fine-tunes DIR (default models/edgetune-mini-uncased) on 60 messages held in memory\n"
             "into the run folder --out (default runs/embed) under a memory budget (default 32M),\n"
             "cancelling halfway from another thread and resuming, then classifies new messages.\n"
             "edgetune %s, C ABI %d.\n",
             argv[0], edgetune_version(), edgetune_abi_version());
      return 0;
    }
    if (i + 1 < argc && strcmp(argv[i], "--model") == 0) {
      model = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--out") == 0) {
      out = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--budget") == 0) {
      budget = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--epochs") == 0) {
      epochs = atoi(argv[++i]);
    } else {
      fprintf(stderr, "edgetune_embed: unknown argument '%s' (try --help)\n", argv[i]);
      return 2;
    }
  }
  if (edgetune_abi_version() != EDGETUNE_ABI_VERSION) {
    fprintf(stderr, "edgetune_embed: built for C ABI %d, the library has %d\n", EDGETUNE_ABI_VERSION,
            edgetune_abi_version());
    return 1;
  }

  char options[256], err[512];
  snprintf(options, sizeof options, "{\"quant\": \"q8\", \"quant_embeddings\": true, \"memory_budget\": \"%s\"}",
           budget);
  edgetune_session* s = NULL;
  if (edgetune_session_open(model, options, &s, err, sizeof err) != EDGETUNE_OK) {
    fprintf(stderr, "edgetune_embed: %s\n", err);
    return 1;
  }
  const size_t n = sizeof kMessages / sizeof kMessages[0];
  for (size_t i = 0; i < n; ++i) {
    if (edgetune_session_add_example(s, kMessages[i][0], kMessages[i][1]) != EDGETUNE_OK) {
      return fail(&s, "add_example");
    }
  }
  printf("%zu messages added; training %s under a %s budget\n", edgetune_session_num_examples(s), model,
         budget);

  training_state t = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
  canceller_args ca = {s, &t};
  pthread_t canceller;
  if (pthread_create(&canceller, NULL, cancel_halfway, &ca) != 0) return fail(&s, "pthread_create");
  char train_options[128];
  snprintf(train_options, sizeof train_options,
           "{\"epochs\": %d, \"batch_size\": 8, \"lr\": 0.005, \"log_every\": 1}", epochs);
  int rc = edgetune_session_train(s, train_options, out, on_progress, &t);
  pthread_mutex_lock(&t.lock);
  t.done = 1;
  pthread_cond_broadcast(&t.changed);
  pthread_mutex_unlock(&t.lock);
  pthread_join(canceller, NULL);
  if (rc == EDGETUNE_INTERRUPTED) {
    printf("\ncancelled at step %lld of %lld; resuming\n", t.step, t.total);
    rc = edgetune_session_resume(s, out, on_progress, &t);
  }
  if (rc != EDGETUNE_OK) return fail(&s, "train");
  printf("\n");

  edgetune_eval ev;
  if (edgetune_session_evaluate(s, NULL, NULL, 0, &ev) != EDGETUNE_OK) return fail(&s, "evaluate");
  printf("accuracy on the %zu messages: %.3f, loss %.4f\n", ev.rows, ev.accuracy, ev.loss);

  static const char* const fresh[] = {"the staff were kind and the room was lovely",
                                      "it broke after one day, avoid it", "a delightful little film",
                                      "slow and rude, never again"};
  predict_state p = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, s, fresh, 0, EDGETUNE_OK};
  if (edgetune_session_predict_async(s, fresh, sizeof fresh / sizeof fresh[0], on_predicted, &p) != EDGETUNE_OK) {
    return fail(&s, "predict_async");
  }
  printf("predictions (asynchronous):\n");
  /* An app's UI thread would go on here; this program has nothing else to do but wait. */
  pthread_mutex_lock(&p.lock);
  while (!p.done) pthread_cond_wait(&p.changed, &p.lock);
  pthread_mutex_unlock(&p.lock);

  edgetune_memory m;
  edgetune_session_memory(s, &m);
  printf("memory: accountant peak %.1f MiB of a %.1f MiB budget, peak resident %.1f MiB\n", m.peak / 1048576.0,
         m.budget / 1048576.0, m.peak_rss / 1048576.0);
  edgetune_session_close(&s);
  return p.status == EDGETUNE_OK ? 0 : 1;
}
