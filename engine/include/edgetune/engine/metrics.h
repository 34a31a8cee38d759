// Classification metrics: accuracy, macro-F1, per-class precision / recall / F1 and the confusion
// matrix, as sklearn computes them (a class with no predictions has precision 0, with no true rows
// recall 0; F1 0 when both are 0; macro-F1 averages over every class of the label map).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgetune {

struct ClassReport {
  std::string label;
  double precision = 0, recall = 0, f1 = 0;
  std::int64_t support = 0;  // true rows of the class
};

struct EvalReport {
  std::int64_t rows = 0;
  double loss = 0;      // mean cross-entropy
  double accuracy = 0;
  double macro_f1 = 0;
  std::vector<ClassReport> classes;
  std::vector<std::vector<std::int64_t>> confusion;  // [true][predicted]

  nlohmann::json to_json() const;
  static EvalReport from_json(const nlohmann::json& j);
  // A table for people: accuracy, macro-F1, per-class lines and the confusion matrix.
  std::string to_text() const;
};

// Builds the report from true and predicted class ids (same length) over `labels` classes.
EvalReport make_report(const std::vector<std::int32_t>& truth, const std::vector<std::int32_t>& predicted,
                       const std::vector<std::string>& labels, double loss);

}  // namespace edgetune
