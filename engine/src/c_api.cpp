// The C ABI (see c_api.h): a thin wrapper over api.h that turns exceptions into codes and messages.
#include "edgetune/c_api.h"

#include <cstring>
#include <exception>
#include <mutex>
#include <string>

#include "edgetune/core/encryption.h"
#include "edgetune/engine/api.h"
#include "edgetune/engine/planner.h"
#include "edgetune/engine/trainer.h"

struct edgetune_classifier {
  edgetune::Classifier classifier;
};

struct edgetune_session {
  std::unique_ptr<edgetune::TuningSession> session;
  // What the C side keeps for the pointers it hands out: the last error and the class names.
  mutable std::mutex lock;
  std::string error;
  std::vector<std::string> labels;
};

namespace {

// A failure of a C argument, reported as EDGETUNE_BAD_ARGUMENT.
class BadArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

void set_error(char* err, size_t len, const std::string& message) {
  if (err == nullptr || len == 0) return;
  const size_t n = std::min(len - 1, message.size());
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

// Runs f, mapping exceptions to codes and passing the message to report.
template <class Report, class F>
int guarded_with(Report&& report, F&& f) {
  try {
    return f();
  } catch (const edgetune::BudgetExceeded& e) {
    report(e.what());
    return EDGETUNE_OUT_OF_BUDGET;
  } catch (const edgetune::PlanError& e) {
    report(e.what());
    return EDGETUNE_OUT_OF_BUDGET;
  } catch (const edgetune::ProcessBudgetExceeded& e) {
    report(e.what());
    return EDGETUNE_OUT_OF_BUDGET;
  } catch (const BadArgument& e) {
    report(e.what());
    return EDGETUNE_BAD_ARGUMENT;
  } catch (const std::exception& e) {
    report(e.what());
    return EDGETUNE_ERROR;
  } catch (...) {
    report("unknown error");
    return EDGETUNE_ERROR;
  }
}

// Errors into a caller's buffer.
template <class F>
int guarded(char* err, size_t len, F&& f) {
  return guarded_with([&](const char* m) { set_error(err, len, m); }, std::forward<F>(f));
}

// Errors into the session's last error; a NULL session is EDGETUNE_BAD_ARGUMENT.
template <class F>
int on_session(edgetune_session* s, const char* function, F&& f) {
  if (s == nullptr) return EDGETUNE_BAD_ARGUMENT;
  return guarded_with(
      [&](const char* m) {
        const std::lock_guard g(s->lock);
        s->error = std::string(function) + ": " + m;
        // One line: a message from deeper down may hold a table or a hint on a second line.
        for (char& ch : s->error) {
          if (ch == '\n' || ch == '\r') ch = ' ';
        }
      },
      std::forward<F>(f));
}

void require(bool ok, const char* what) {
  if (!ok) throw BadArgument(what);
}

nlohmann::json parse_options(const char* options_json) {
  if (options_json == nullptr) return nlohmann::json::object();
  try {
    return nlohmann::json::parse(options_json);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("options_json is not JSON (") + e.what() + ")");
  }
}

std::vector<std::string> copy_texts(const char* const* texts, size_t n) {
  require(n == 0 || texts != nullptr, "texts is NULL");
  std::vector<std::string> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    require(texts[i] != nullptr, "a text is NULL");
    v.emplace_back(texts[i]);
  }
  return v;
}

void refresh_labels(edgetune_session* s) {
  std::vector<std::string> names = s->session->labels();
  const std::lock_guard g(s->lock);
  s->labels = std::move(names);
}

int train_code(edgetune_session* s, const edgetune::TrainResult& r) {
  if (r.interrupted) return EDGETUNE_INTERRUPTED;
  refresh_labels(s);
  return EDGETUNE_OK;
}

edgetune::TuningSession::ProgressFn progress_fn(edgetune_progress_fn progress, void* user) {
  if (progress == nullptr) return {};
  return [progress, user](const edgetune::Progress& p) {
    const edgetune_progress c{p.step, p.total_steps, p.loss, p.lr, p.memory_live, p.memory_peak, p.rss, p.peak_rss};
    return progress(&c, user) != 0;
  };
}

edgetune::DType parse_quant(const char* q) {
  return edgetune::settings::parse_choice<edgetune::DType>(edgetune::kQuantNames, "quant", q ? q : "q8");
}

}  // namespace

extern "C" {

int edgetune_abi_version(void) { return EDGETUNE_ABI_VERSION; }

const char* edgetune_version(void) { return edgetune::version(); }

// ---- sessions -----------------------------------------------------------------------------------

int edgetune_session_open(const char* model_dir, const char* options_json, edgetune_session** out,
                          char* err, size_t err_len) {
  if (out != nullptr) *out = nullptr;
  return guarded(err, err_len, [&] {
    require(model_dir != nullptr, "edgetune_session_open: model_dir is NULL");
    require(out != nullptr, "edgetune_session_open: out is NULL");
    const auto options =
        edgetune::settings::from_json<edgetune::SessionOptions>(parse_options(options_json), "options_json");
    auto s = std::make_unique<edgetune_session>();
    s->session = edgetune::TuningSession::open(model_dir, options);
    refresh_labels(s.get());
    *out = s.release();
    return EDGETUNE_OK;
  });
}

void edgetune_session_close(edgetune_session** s) {
  if (s == nullptr || *s == nullptr) return;
  delete *s;
  *s = nullptr;
}

const char* edgetune_session_last_error(const edgetune_session* s) {
  if (s == nullptr) return "no session (NULL)";
  const std::lock_guard g(s->lock);
  return s->error.c_str();
}

int edgetune_session_add_example(edgetune_session* s, const char* text, const char* label) {
  return on_session(s, "edgetune_session_add_example", [&] {
    require(text != nullptr && label != nullptr, "text or label is NULL");
    s->session->add_example({text, label});
    return EDGETUNE_OK;
  });
}

int edgetune_session_clear_examples(edgetune_session* s) {
  return on_session(s, "edgetune_session_clear_examples", [&] {
    s->session->clear_examples();
    return EDGETUNE_OK;
  });
}

size_t edgetune_session_num_examples(edgetune_session* s) { return s ? s->session->num_examples() : 0; }

int edgetune_session_train(edgetune_session* s, const char* options_json, const char* out_dir,
                           edgetune_progress_fn progress, void* user) {
  return on_session(s, "edgetune_session_train", [&] {
    require(out_dir != nullptr, "out_dir is NULL");
    return train_code(s, s->session->train(parse_options(options_json), out_dir, progress_fn(progress, user)));
  });
}

int edgetune_session_resume(edgetune_session* s, const char* out_dir, edgetune_progress_fn progress,
                            void* user) {
  return on_session(s, "edgetune_session_resume", [&] {
    require(out_dir != nullptr, "out_dir is NULL");
    return train_code(s, s->session->resume(out_dir, progress_fn(progress, user)));
  });
}

int edgetune_session_update(edgetune_session* s, const char* run_dir, const char* options_json,
                            edgetune_progress_fn progress, void* user) {
  return on_session(s, "edgetune_session_update", [&] {
    require(run_dir != nullptr, "run_dir is NULL");
    return train_code(s, s->session->update(run_dir, parse_options(options_json), progress_fn(progress, user)).train);
  });
}

void edgetune_session_cancel(edgetune_session* s) {
  if (s != nullptr) s->session->cancel();
}

int edgetune_session_num_labels(edgetune_session* s) {
  if (s == nullptr) return 0;
  const std::lock_guard g(s->lock);
  return static_cast<int>(s->labels.size());
}

const char* edgetune_session_label(edgetune_session* s, int i) {
  if (s == nullptr) return nullptr;
  const std::lock_guard g(s->lock);
  if (i < 0 || static_cast<size_t>(i) >= s->labels.size()) return nullptr;
  return s->labels[static_cast<size_t>(i)].c_str();
}

int edgetune_session_predict(edgetune_session* s, const char* const* texts, size_t n, float* probs,
                             size_t probs_len) {
  return on_session(s, "edgetune_session_predict", [&] {
    const std::vector<std::string> v = copy_texts(texts, n);
    require(n == 0 || probs != nullptr, "probs is NULL");
    const auto p = s->session->predict_proba(v);
    if (p.size() > probs_len) {
      throw BadArgument("probs holds " + std::to_string(probs_len) + " floats, the result " +
                        std::to_string(p.size()) + " (n x K)");
    }
    std::copy(p.begin(), p.end(), probs);
    return EDGETUNE_OK;
  });
}

int edgetune_session_predict_async(edgetune_session* s, const char* const* texts, size_t n,
                                   edgetune_predict_fn done, void* user) {
  return on_session(s, "edgetune_session_predict_async", [&] {
    require(done != nullptr, "done is NULL");
    s->session->predict_async(copy_texts(texts, n), [done, user](const xt::xtensor<float, 2>& p,
                                                                 const std::string& error) {
      if (error.empty()) {
        done(user, EDGETUNE_OK, p.data(), p.shape()[0], p.shape()[1], nullptr);
      } else {
        done(user, EDGETUNE_ERROR, nullptr, 0, 0, error.c_str());
      }
    });
    return EDGETUNE_OK;
  });
}

int edgetune_session_evaluate(edgetune_session* s, const char* const* texts, const char* const* labels,
                              size_t n, edgetune_eval* out) {
  return on_session(s, "edgetune_session_evaluate", [&] {
    require(out != nullptr, "out is NULL");
    const std::vector<std::string> t = copy_texts(texts, n);
    const std::vector<std::string> l = copy_texts(labels, n);
    std::vector<edgetune::LabelledText> examples;
    for (size_t i = 0; i < n; ++i) examples.push_back({t[i], l[i]});
    const edgetune::EvalReport r = s->session->evaluate(examples);
    *out = edgetune_eval{static_cast<size_t>(r.rows), r.accuracy, r.loss, r.macro_f1};
    return EDGETUNE_OK;
  });
}

int edgetune_session_save_adapter(edgetune_session* s, const char* dir) {
  return on_session(s, "edgetune_session_save_adapter", [&] {
    require(dir != nullptr, "dir is NULL");
    s->session->save_adapter(dir);
    return EDGETUNE_OK;
  });
}

int edgetune_session_load_adapter(edgetune_session* s, const char* dir) {
  return on_session(s, "edgetune_session_load_adapter", [&] {
    require(dir != nullptr, "dir is NULL");
    s->session->load_adapter(dir);
    refresh_labels(s);
    return EDGETUNE_OK;
  });
}

int edgetune_session_set_key(edgetune_session* s, const uint8_t* key, size_t key_len) {
  return on_session(s, "edgetune_session_set_key", [&] {
    if (key == nullptr && key_len == 0) {
      s->session->set_key(nullptr);
      return EDGETUNE_OK;
    }
    require(key != nullptr, "key is NULL");
    require(key_len == edgetune::EncryptionKey::kBytes, "key_len must be 32 (bytes)");
    s->session->set_key(std::make_shared<const edgetune::EncryptionKey>(std::span(key, key_len)));
    return EDGETUNE_OK;
  });
}

int edgetune_session_memory(const edgetune_session* s, edgetune_memory* out) {
  if (s == nullptr || out == nullptr) return EDGETUNE_BAD_ARGUMENT;
  const edgetune::MemoryUse m = s->session->memory();
  *out = edgetune_memory{m.live, m.peak, m.budget, m.rss, m.peak_rss};
  return EDGETUNE_OK;
}

// ---- a classifier from files ----------------------------------------------------------------------

int edgetune_open(const char* model_dir, const char* adapter_dir, const char* quant,
                  edgetune_classifier** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (model_dir == nullptr || out == nullptr) throw BadArgument("model_dir and out are required");
    edgetune::ClassifierOptions o;
    o.base = parse_quant(quant);
    *out = new edgetune_classifier{
        edgetune::Classifier::open(model_dir, adapter_dir ? adapter_dir : "", o)};
    return EDGETUNE_OK;
  });
}

int edgetune_num_labels(const edgetune_classifier* c) {
  return c ? static_cast<int>(c->classifier.labels().size()) : 0;
}

const char* edgetune_label(const edgetune_classifier* c, int i) {
  if (!c || i < 0 || i >= edgetune_num_labels(c)) return nullptr;
  return c->classifier.labels()[static_cast<size_t>(i)].c_str();
}

int edgetune_predict(edgetune_classifier* c, const char* const* texts, size_t n, float* probs,
                     char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (!c || (n > 0 && (!texts || !probs))) throw BadArgument("null argument");
    std::vector<std::string> v;
    for (size_t i = 0; i < n; ++i) v.emplace_back(texts[i] ? texts[i] : "");
    const auto p = c->classifier.predict_proba(v);
    std::copy(p.begin(), p.end(), probs);
    return EDGETUNE_OK;
  });
}

void edgetune_close(edgetune_classifier* c) { delete c; }

int edgetune_train(const char* options_json, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    nlohmann::json given = parse_options(options_json);
    if (!given.is_object()) throw std::invalid_argument("options_json must be a JSON object");
    std::optional<edgetune::Trainer> trainer;
    const auto resume = given.find("resume");
    if (resume != given.end() && resume->is_boolean() && resume->get<bool>()) {
      trainer.emplace(edgetune::Trainer::resume(given.at("out").get<std::string>(), nullptr));
    } else {
      if (resume != given.end()) given.erase(resume);
      const edgetune::TrainConfig c = edgetune::TrainConfig::from_json(given, "options_json");
      for (const auto& [key, path] : {std::pair<const char*, const std::filesystem::path*>{"model", &c.model_dir},
                                      {"train", &c.train_file}, {"out", &c.out}}) {
        if (path->empty()) throw std::invalid_argument(std::string("training setting \"") + key + "\" is required");
      }
      trainer.emplace(c, nullptr);
    }
    trainer->run();
    return EDGETUNE_OK;
  });
}

}  // extern "C"
