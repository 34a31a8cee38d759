// Classification metrics (see metrics.h).
#include "edgetune/engine/metrics.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace edgetune {

EvalReport make_report(const std::vector<std::int32_t>& truth,
                       const std::vector<std::int32_t>& predicted,
                       const std::vector<std::string>& labels, double loss) {
  if (truth.size() != predicted.size()) throw std::invalid_argument("make_report: sizes differ");
  const size_t k = labels.size();
  EvalReport r;
  r.rows = static_cast<std::int64_t>(truth.size());
  r.loss = loss;
  r.confusion.assign(k, std::vector<std::int64_t>(k, 0));
  std::int64_t correct = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] < 0 || static_cast<size_t>(truth[i]) >= k || predicted[i] < 0 ||
        static_cast<size_t>(predicted[i]) >= k) {
      throw std::invalid_argument("make_report: class id out of range");
    }
    ++r.confusion[truth[i]][predicted[i]];
    correct += truth[i] == predicted[i];
  }
  r.accuracy = r.rows ? static_cast<double>(correct) / static_cast<double>(r.rows) : 0.0;
  double f1_sum = 0;
  for (size_t c = 0; c < k; ++c) {
    ClassReport cr;
    cr.label = labels[c];
    std::int64_t tp = r.confusion[c][c], pred = 0, real = 0;
    for (size_t j = 0; j < k; ++j) {
      pred += r.confusion[j][c];
      real += r.confusion[c][j];
    }
    cr.support = real;
    cr.precision = pred ? static_cast<double>(tp) / static_cast<double>(pred) : 0.0;
    cr.recall = real ? static_cast<double>(tp) / static_cast<double>(real) : 0.0;
    cr.f1 = cr.precision + cr.recall > 0 ? 2 * cr.precision * cr.recall / (cr.precision + cr.recall) : 0.0;
    f1_sum += cr.f1;
    r.classes.push_back(cr);
  }
  r.macro_f1 = k ? f1_sum / static_cast<double>(k) : 0.0;
  return r;
}

nlohmann::json EvalReport::to_json() const {
  nlohmann::json j;
  j["rows"] = rows;
  j["loss"] = loss;
  j["accuracy"] = accuracy;
  j["macro_f1"] = macro_f1;
  nlohmann::json per = nlohmann::json::array();
  for (const ClassReport& c : classes) {
    per.push_back({{"label", c.label}, {"precision", c.precision}, {"recall", c.recall},
                   {"f1", c.f1}, {"support", c.support}});
  }
  j["per_class"] = per;
  j["confusion_matrix"] = confusion;
  return j;
}

EvalReport EvalReport::from_json(const nlohmann::json& j) {
  EvalReport r;
  r.rows = j.at("rows").get<std::int64_t>();
  r.loss = j.at("loss").get<double>();
  r.accuracy = j.at("accuracy").get<double>();
  r.macro_f1 = j.at("macro_f1").get<double>();
  for (const auto& c : j.at("per_class")) {
    r.classes.push_back({c.at("label").get<std::string>(), c.at("precision").get<double>(),
                         c.at("recall").get<double>(), c.at("f1").get<double>(),
                         c.at("support").get<std::int64_t>()});
  }
  r.confusion = j.at("confusion_matrix").get<std::vector<std::vector<std::int64_t>>>();
  return r;
}

std::string EvalReport::to_text() const {
  std::string s;
  char buf[256];
  std::snprintf(buf, sizeof buf, "rows %lld  loss %.4f  accuracy %.4f  macro-F1 %.4f\n",
                static_cast<long long>(rows), loss, accuracy, macro_f1);
  s += buf;
  size_t w = 5;
  for (const ClassReport& c : classes) w = std::max(w, c.label.size());
  std::snprintf(buf, sizeof buf, "  %-*s  precision  recall     f1  support\n", static_cast<int>(w), "class");
  s += buf;
  for (const ClassReport& c : classes) {
    std::snprintf(buf, sizeof buf, "  %-*s  %9.4f  %6.4f  %5.4f  %7lld\n", static_cast<int>(w),
                  c.label.c_str(), c.precision, c.recall, c.f1, static_cast<long long>(c.support));
    s += buf;
  }
  s += "  confusion (rows: true, columns: predicted)\n";
  for (size_t i = 0; i < confusion.size(); ++i) {
    std::snprintf(buf, sizeof buf, "  %-*s", static_cast<int>(w), classes[i].label.c_str());
    s += buf;
    for (std::int64_t v : confusion[i]) {
      std::snprintf(buf, sizeof buf, " %7lld", static_cast<long long>(v));
      s += buf;
    }
    s += "\n";
  }
  return s;
}

}  // namespace edgetune
