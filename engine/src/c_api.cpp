// The C ABI (see c_api.h): a thin wrapper over api.h that turns exceptions into codes and messages.
#include "edgetune/c_api.h"

#include <cstring>
#include <exception>
#include <string>

#include "edgetune/engine/api.h"
#include "edgetune/engine/planner.h"
#include "edgetune/engine/trainer.h"

struct edgetune_classifier {
  edgetune::Classifier classifier;
};

namespace {

// edgetune_request_stop's target. This C function predates per-session cancellation; it is the one
// piece of process-wide state of the C ABI.
const edgetune::StopToken g_stop;

void set_error(char* err, size_t len, const std::string& message) {
  if (err == nullptr || len == 0) return;
  const size_t n = std::min(len - 1, message.size());
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

// Runs f, mapping exceptions to codes and messages.
template <class F>
int guarded(char* err, size_t len, F&& f) {
  try {
    return f();
  } catch (const edgetune::BudgetExceeded& e) {
    set_error(err, len, e.what());
    return EDGETUNE_OUT_OF_BUDGET;
  } catch (const edgetune::PlanError& e) {
    set_error(err, len, e.what());
    return EDGETUNE_OUT_OF_BUDGET;
  } catch (const std::exception& e) {
    set_error(err, len, e.what());
    return EDGETUNE_ERROR;
  } catch (...) {
    set_error(err, len, "unknown error");
    return EDGETUNE_ERROR;
  }
}

edgetune::DType parse_quant(const char* q) {
  return edgetune::settings::parse_choice<edgetune::DType>(edgetune::kQuantNames, "quant", q ? q : "q8");
}

}  // namespace

extern "C" {

const char* edgetune_version(void) { return edgetune::version(); }

int edgetune_open(const char* model_dir, const char* adapter_dir, const char* quant,
                  edgetune_classifier** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (model_dir == nullptr || out == nullptr) throw std::invalid_argument("model_dir and out are required");
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
    if (!c || (n > 0 && (!texts || !probs))) throw std::invalid_argument("null argument");
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
    nlohmann::json given = nlohmann::json::parse(options_json ? options_json : "{}");
    if (!given.is_object()) throw std::invalid_argument("options_json must be a JSON object");
    g_stop.reset();
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
    edgetune::RunHooks hooks;
    hooks.should_stop = [] { return g_stop.stop_requested(); };
    const edgetune::TrainResult r = trainer->run(hooks);
    return r.interrupted ? EDGETUNE_INTERRUPTED : EDGETUNE_OK;
  });
}

// The stop request of edgetune_train, which runs at most one training at a time per process.
void edgetune_request_stop(void) { g_stop.request_stop(); }

}  // extern "C"
