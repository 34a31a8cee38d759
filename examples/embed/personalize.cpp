// A minimal app that embeds edgetune's C++ API: fine-tunes a model on labelled examples held in
// memory (the user's own text, which never leaves the device) under a memory budget, then
// classifies new text with the result.
//
//   edgetune_personalize MODEL_DIR RUN_DIR
#include <iostream>

#include <xtensor/xsort.hpp>
#include <xtensor/xview.hpp>

#include "edgetune/engine/api.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR RUN_DIR\n";
    return 2;
  }
  // The app's own data; in a real app, what the user labelled on the device.
  const std::vector<edgetune::LabelledText> examples = {
      {"remind me to call mom tonight", "personal"}, {"quarterly report due friday", "work"},
      {"dinner with the kids at seven", "personal"}, {"send the invoice to the client", "work"},
      {"buy flowers for her birthday", "personal"},  {"review the pull request before standup", "work"},
      {"book the dentist for next week", "personal"}, {"prepare slides for the board meeting", "work"},
  };
  try {
    edgetune::TrainConfig cfg;
    cfg.model_dir = argv[1];
    cfg.out = argv[2];
    cfg.quant = edgetune::DType::Q4;
    cfg.epochs = 10;
    cfg.batch_size = 4;
    cfg.memory_budget = 64u << 20;
    const edgetune::TrainResult r = edgetune::fine_tune(cfg, examples, &std::cerr);
    std::cout << "trained " << r.steps << " steps, peak memory " << edgetune::format_bytes(r.peak_rss)
              << "\n";
    const auto clf = edgetune::Classifier::open(argv[1], argv[2], {.base = edgetune::DType::Q4});
    const std::vector<std::string> texts = {"pick up the kids from school", "schedule a call with the vendor"};
    const auto labels = clf.predict(texts);
    const auto probs = clf.predict_proba(texts);
    for (std::size_t i = 0; i < texts.size(); ++i) {
      std::cout << labels[i] << "\t" << xt::amax(xt::row(probs, static_cast<long>(i)))() << "\t" << texts[i] << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "edgetune_personalize: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
