// Curves of training runs for people: metrics.jsonl of run folders (fine-tuning and pretraining,
// as engine/run.h, trainer and pretrain write them) read into series, and drawn as one SVG of
// panels (training loss raw and smoothed, learning rate, evaluation accuracy and macro-F1 or the
// held-out masked-LM loss and accuracy, the accountant's and the process's memory against the
// budget), several runs overlaid with a legend; a PNG through rsvg-convert. Used by `edgetune
// plot`. It lives beside the CLI, not in the library: an app that embeds the engine has no use
// for drawing, and the PNG path starts a process.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace edgetune::plot {

// Values of one metric against the optimizer step, in the order of the file.
struct Series {
  std::vector<double> step, value;
};

// One run: its name in the legend, and a series per "<type>.<key>" for every number of every
// line ("train.loss", "train.lr", "train.memory_live", "train.rss", "train.peak_rss",
// "train.memory_budget", "eval.accuracy", "eval.macro_f1", "eval.mlm_loss", "eval.mlm_accuracy",
// ...), keyed by the line's "type" and x = its "step".
struct RunMetrics {
  std::string name;
  std::map<std::string, Series> series;
  const Series* find(const std::string& key) const;  // null when the run has none
};

// Parses the text of a metrics.jsonl (`file` names it in errors). Requires: every non-empty line
// is a JSON object with a string "type" and a number "step"; otherwise throws std::runtime_error
// "<file>:<line>: <what was expected>". Empty lines are skipped.
RunMetrics parse_metrics(std::string_view text, const std::string& file, std::string name);

// Reads RUN_DIR/metrics.jsonl; the run's name is the folder's name. Throws FileError when the file
// cannot be read, std::runtime_error as parse_metrics.
RunMetrics read_run(const std::filesystem::path& run_dir);

// Exponential moving average with bias correction (as TensorBoard's smoothing): s_0 = 0,
// s_t = f s_{t-1} + (1 - f) x_t, out_t = s_t / (1 - f^t). f = 0 returns x. Requires 0 <= f < 1.
std::vector<double> ema(std::span<const double> x, double factor);

// Layout of the picture, in SVG user units (px). Panels are laid out `columns` to a row, below the
// legend; each has its plot area inset by the margins.
struct PlotStyle {
  double smoothing = 0.6;  // the training loss's EMA factor
  int columns = 2;
  double panel_width = 440, panel_height = 250;
  double margin_left = 62, margin_right = 14, margin_top = 30, margin_bottom = 40;
  double legend_height = 30;
};

// The picture of `runs` (at least one) as an SVG document. Panels whose series no run has are
// left out. Every curve is a <polyline> with data-panel, data-run (the run's index), data-series
// attributes and one point per value, "x,y" with two decimals. Axes run from a rounded bound
// below the smallest value to one above the largest (steps from 0), with ticks at 1, 2 or 5
// times a power of ten.
std::string plot_svg(std::span<const RunMetrics> runs, const PlotStyle& style = {});

// Writes the picture atomically (core's writer): SVG, or PNG when `out` ends in ".png" (rendered
// by rsvg-convert; throws std::runtime_error in one line when it is not on PATH or fails).
void write_plot(std::span<const RunMetrics> runs, const std::filesystem::path& out, const PlotStyle& style = {});

// The full path of `program` on PATH (an executable file), or empty.
std::filesystem::path find_on_path(std::string_view program);

}  // namespace edgetune::plot
