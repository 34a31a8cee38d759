// `edgetune plot RUN_DIR... --out curves.svg`: the curves of runs' metrics.jsonl in one picture
// (examples/runview/metrics_plot.h); a .png is rendered through rsvg-convert.
#include <iostream>

#include "commands.h"
#include "metrics_plot.h"

namespace edgetune::cli {
namespace {

const RegisterCommand kRegister(
    "plot", "draw the curves of run folders' metrics.jsonl (loss, learning rate, evaluation, memory) as SVG or PNG",
    [](CLI::App& app) -> std::function<int()> {
      struct State {
        std::vector<std::string> runs;
        std::string out;
        plot::PlotStyle style;
      };
      auto s = std::make_shared<State>();
      app.add_option("runs", s->runs, "run folders (train or pretrain --out), overlaid in one picture")->required();
      app.add_option("--out", s->out, "the picture: FILE.svg, or FILE.png (needs rsvg-convert)")->required();
      app.add_option("--smoothing", s->style.smoothing, "EMA factor of the training loss's solid curve, in [0, 1)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 0.999));
      return [s] {
        std::vector<plot::RunMetrics> runs;
        for (const std::string& dir : s->runs) runs.push_back(plot::read_run(dir));
        plot::write_plot(runs, s->out, s->style);
        std::cerr << "wrote " << s->out << " (" << runs.size() << (runs.size() == 1 ? " run" : " runs") << ")\n";
        return 0;
      };
    });

}  // namespace
}  // namespace edgetune::cli
