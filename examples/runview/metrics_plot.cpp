// Curves of training runs (see metrics_plot.h).
#include "metrics_plot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "edgetune/core/file_io.h"

namespace edgetune::plot {

namespace fs = std::filesystem;

const Series* RunMetrics::find(const std::string& key) const {
  const auto it = series.find(key);
  return it == series.end() || it->second.step.empty() ? nullptr : &it->second;
}

RunMetrics parse_metrics(std::string_view text, const std::string& file, std::string name) {
  RunMetrics run;
  run.name = std::move(name);
  std::size_t line_no = 0;
  while (!text.empty()) {
    const std::size_t end = std::min(text.find('\n'), text.size());
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(std::min(end + 1, text.size()));
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = file + ":" + std::to_string(line_no) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw std::runtime_error(where + "expected one JSON object per line (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string() || !j.contains("step") ||
        !j["step"].is_number()) {
      throw std::runtime_error(where + "expected a JSON object with a string \"type\" and a number \"step\"");
    }
    const std::string type = j["type"].get<std::string>();
    const double step = j["step"].get<double>();
    for (const auto& [key, value] : j.items()) {
      if (key == "step" || !value.is_number()) continue;
      Series& s = run.series[type + "." + key];
      s.step.push_back(step);
      s.value.push_back(value.get<double>());
    }
  }
  return run;
}

RunMetrics read_run(const fs::path& run_dir) {
  const fs::path file = run_dir / "metrics.jsonl";
  fs::path name = run_dir.lexically_normal();
  if (name.filename().empty()) name = name.parent_path();
  return parse_metrics(read_file(file), file.string(), name.filename().string());
}

std::vector<double> ema(std::span<const double> x, double factor) {
  if (!(factor >= 0 && factor < 1)) throw std::invalid_argument("the smoothing factor must lie in [0, 1)");
  std::vector<double> out;
  out.reserve(x.size());
  double s = 0, weight = 1;
  for (const double v : x) {
    s = factor * s + (1 - factor) * v;
    weight *= factor;
    out.push_back(s / (1 - weight));
  }
  return out;
}

namespace {

std::string fmt(const char* format, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// ---- what is drawn ------------------------------------------------------------------------------

struct CurveSpec {
  const char* key;   // series key
  const char* dash;  // stroke-dasharray, "" for solid
};

struct PanelSpec {
  const char* id;
  std::string title;
  const char* y_label;
  double scale;  // values are multiplied by it (bytes to MiB)
  std::vector<CurveSpec> curves;
  bool smoothed = false;  // the first curve raw (faint) and its EMA
  bool budget = false;    // train.memory_budget as a horizontal line per run
};

constexpr double kMiB = 1.0 / (1024.0 * 1024.0);

std::vector<PanelSpec> panel_specs(const PlotStyle& style) {
  return {
      {"loss", "training loss (faint: raw; solid: EMA, factor " + fmt("%g", style.smoothing) + ")", "loss", 1, {{"train.loss", ""}}, true, false},
      {"lr", "learning rate", "lr", 1, {{"train.lr", ""}}, false, false},
      {"eval", "evaluation: accuracy (solid), macro-F1 (dashed)", "", 1,
       {{"eval.accuracy", ""}, {"eval.macro_f1", "6,4"}}, false, false},
      {"mlm_loss", "held-out masked-LM loss (dashed: an ELECTRA run's generator)", "loss", 1,
       {{"eval.mlm_loss", ""}, {"eval.generator_mlm_loss", "6,4"}}, false, false},
      {"mlm_accuracy", "held-out masked-LM accuracy (dashed: an ELECTRA run's generator)", "accuracy", 1,
       {{"eval.mlm_accuracy", ""}, {"eval.generator_mlm_accuracy", "6,4"}}, false, false},
      {"rtd", "held-out replaced-token detection (ELECTRA): accuracy", "accuracy", 1,
       {{"eval.rtd_accuracy", ""}}, false, false},
      {"memory", "memory: accountant (solid), RSS (dashed), VmHWM (dotted), budget", "MiB", kMiB,
       {{"train.memory_live", ""}, {"train.rss", "6,4"}, {"train.peak_rss", "2,3"}}, false, true},
  };
}

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                   "#9467bd", "#8c564b", "#e377c2", "#17becf"};

const char* color_of(std::size_t run) { return kColors[run % std::size(kColors)]; }

// ---- axes ---------------------------------------------------------------------------------------

// 1, 2 or 5 times a power of ten, at least `raw`.
double nice_step(double raw) {
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= raw * (1 - 1e-9)) return m * p;
  }
  return 10 * p;
}

struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  // Rounded bounds around [lo, hi] with about five ticks; a single value gets a range around it.
  static Axis around(double lo, double hi) {
    if (hi <= lo) {
      const double pad = lo != 0 ? std::abs(lo) * 0.1 : 1.0;
      lo -= pad;
      hi += pad;
    }
    Axis a;
    a.step = nice_step((hi - lo) / 5);
    a.lo = std::floor(lo / a.step + 1e-9) * a.step;
    a.hi = std::ceil(hi / a.step - 1e-9) * a.step;
    return a;
  }
  double fraction(double v) const { return (v - lo) / (hi - lo); }
};

// A tick label: at most 4 significant digits, so that 0.30000000000000004 reads 0.3.
std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-6) v = 0;
  return fmt("%.4g", v);
}

std::string xml_escape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

struct Range {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

double budget_of(const RunMetrics& run) {
  const Series* s = run.find("train.memory_budget");
  return s ? *std::max_element(s->value.begin(), s->value.end()) : 0;
}

// One panel's frame, axes and curves, its plot area at (x0, y0) of size w x h.
void draw_panel(std::string& svg, const PanelSpec& p, std::span<const RunMetrics> runs, double x0, double y0,
                double w, double h, const PlotStyle& style) {
  Range xr, yr;
  xr.add(0);
  for (const RunMetrics& run : runs) {
    for (const CurveSpec& c : p.curves) {
      if (const Series* s = run.find(c.key)) {
        for (std::size_t i = 0; i < s->step.size(); ++i) {
          xr.add(s->step[i]);
          yr.add(s->value[i] * p.scale);
        }
      }
    }
    if (p.budget && budget_of(run) > 0) yr.add(budget_of(run) * p.scale);
  }
  if (yr.empty()) yr.add(0);
  const Axis xa = Axis::around(xr.lo, xr.hi), ya = Axis::around(yr.lo, yr.hi);
  const auto px = [&](double v) { return x0 + xa.fraction(v) * w; };
  const auto py = [&](double v) { return y0 + h - ya.fraction(v) * h; };

  svg += "<g class=\"panel\" data-panel=\"" + std::string(p.id) + "\">\n";
  svg += "<text x=\"" + fmt("%.2f", x0 - style.margin_left + 10) + "\" y=\"" + fmt("%.2f", y0 - 10) +
         "\" font-weight=\"bold\">" + xml_escape(p.title) + "</text>\n";
  svg += "<rect x=\"" + fmt("%.2f", x0) + "\" y=\"" + fmt("%.2f", y0) + "\" width=\"" + fmt("%.2f", w) +
         "\" height=\"" + fmt("%.2f", h) + "\" fill=\"none\" stroke=\"#888\"/>\n";
  const int xticks = static_cast<int>(std::lround((xa.hi - xa.lo) / xa.step));
  for (int i = 0; i <= xticks; ++i) {
    const double v = xa.lo + i * xa.step, x = px(v);
    svg += "<line x1=\"" + fmt("%.2f", x) + "\" y1=\"" + fmt("%.2f", y0 + h) + "\" x2=\"" + fmt("%.2f", x) +
           "\" y2=\"" + fmt("%.2f", y0 + h + 4) + "\" stroke=\"#888\"/>\n";
    svg += "<text x=\"" + fmt("%.2f", x) + "\" y=\"" + fmt("%.2f", y0 + h + 16) +
           "\" text-anchor=\"middle\">" + tick_label(v, xa.step) + "</text>\n";
  }
  const int yticks = static_cast<int>(std::lround((ya.hi - ya.lo) / ya.step));
  for (int i = 0; i <= yticks; ++i) {
    const double v = ya.lo + i * ya.step, y = py(v);
    svg += "<line x1=\"" + fmt("%.2f", x0) + "\" y1=\"" + fmt("%.2f", y) + "\" x2=\"" + fmt("%.2f", x0 + w) +
           "\" y2=\"" + fmt("%.2f", y) + "\" stroke=\"#eee\"/>\n";
    svg += "<text x=\"" + fmt("%.2f", x0 - 6) + "\" y=\"" + fmt("%.2f", y + 4) + "\" text-anchor=\"end\">" +
           tick_label(v, ya.step) + "</text>\n";
  }
  svg += "<text x=\"" + fmt("%.2f", x0 + w / 2) + "\" y=\"" + fmt("%.2f", y0 + h + 32) +
         "\" text-anchor=\"middle\">step</text>\n";
  if (*p.y_label) {
    const double lx = x0 - style.margin_left + 14, ly = y0 + h / 2;
    svg += "<text x=\"" + fmt("%.2f", lx) + "\" y=\"" + fmt("%.2f", ly) + "\" text-anchor=\"middle\" transform=\"rotate(-90 " +
           fmt("%.2f", lx) + " " + fmt("%.2f", ly) + ")\">" + xml_escape(p.y_label) + "</text>\n";
  }

  const auto polyline = [&](std::size_t run, const char* series, const std::vector<double>& xs,
                            const std::vector<double>& ys, const std::string& stroke_style) {
    svg += "<polyline data-panel=\"" + std::string(p.id) + "\" data-run=\"" + std::to_string(run) +
           "\" data-series=\"" + series + "\" fill=\"none\" stroke=\"" + color_of(run) + "\"" + stroke_style +
           " points=\"";
    for (std::size_t i = 0; i < xs.size(); ++i) {
      if (i) svg += ' ';
      svg += fmt("%.2f", px(xs[i]));
      svg += ',';
      svg += fmt("%.2f", py(ys[i] * p.scale));
    }
    svg += "\"/>\n";
  };
  for (std::size_t r = 0; r < runs.size(); ++r) {
    for (const CurveSpec& c : p.curves) {
      const Series* s = runs[r].find(c.key);
      if (!s) continue;
      const std::string dash = *c.dash ? std::string(" stroke-dasharray=\"") + c.dash + "\"" : "";
      if (p.smoothed) {
        polyline(r, "raw", s->step, s->value, " stroke-width=\"1\" stroke-opacity=\"0.3\"");
        polyline(r, "smoothed", s->step, ema(s->value, style.smoothing), " stroke-width=\"2\"");
      } else {
        polyline(r, c.key, s->step, s->value, " stroke-width=\"1.5\"" + dash);
      }
    }
    const double budget = p.budget ? budget_of(runs[r]) : 0;
    if (budget > 0) {
      const double y = py(budget * p.scale);
      svg += "<line data-run=\"" + std::to_string(r) + "\" class=\"budget\" x1=\"" + fmt("%.2f", x0) + "\" y1=\"" +
             fmt("%.2f", y) + "\" x2=\"" + fmt("%.2f", x0 + w) + "\" y2=\"" + fmt("%.2f", y) + "\" stroke=\"" +
             color_of(r) + "\" stroke-width=\"2\" stroke-dasharray=\"12,3,2,3\"/>\n";
      svg += "<text x=\"" + fmt("%.2f", x0 + 4) + "\" y=\"" + fmt("%.2f", y - 4) + "\" fill=\"" + color_of(r) +
             "\">budget " + fmt("%.0f", budget * kMiB) + " MiB</text>\n";
    }
  }
  svg += "</g>\n";
}

}  // namespace

std::string plot_svg(std::span<const RunMetrics> runs, const PlotStyle& style) {
  if (runs.empty()) throw std::invalid_argument("plot_svg needs at least one run");
  std::vector<PanelSpec> panels;
  for (PanelSpec& p : panel_specs(style)) {
    const bool any = std::any_of(runs.begin(), runs.end(), [&](const RunMetrics& run) {
      return std::any_of(p.curves.begin(), p.curves.end(), [&](const CurveSpec& c) { return run.find(c.key); });
    });
    if (any) panels.push_back(std::move(p));
  }
  const int columns = std::max(1, style.columns);
  const double width = style.panel_width * columns;

  // The legend: one entry per run (a stroke in its colour and its name), wrapped into rows.
  std::string legend;
  double lx = 10, ly = 20;
  for (std::size_t r = 0; r < runs.size(); ++r) {
    const double entry = 34 + 7.0 * static_cast<double>(runs[r].name.size());
    if (lx > 10 && lx + entry > width) {
      lx = 10;
      ly += 18;
    }
    legend += "<line x1=\"" + fmt("%.2f", lx) + "\" y1=\"" + fmt("%.2f", ly - 4) + "\" x2=\"" + fmt("%.2f", lx + 22) +
              "\" y2=\"" + fmt("%.2f", ly - 4) + "\" stroke=\"" + color_of(r) + "\" stroke-width=\"3\"/>\n";
    legend += "<text class=\"legend\" data-run=\"" + std::to_string(r) + "\" x=\"" + fmt("%.2f", lx + 28) +
              "\" y=\"" + fmt("%.2f", ly) + "\">" + xml_escape(runs[r].name) + "</text>\n";
    lx += entry;
  }
  const double top = ly - 20 + style.legend_height;
  const auto rows = static_cast<double>((panels.size() + columns - 1) / columns);
  const double height = top + rows * style.panel_height;

  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt("%.0f", width) + "\" height=\"" +
         fmt("%.0f", height) + "\" viewBox=\"0 0 " + fmt("%.0f", width) + " " + fmt("%.0f", height) +
         "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  svg += "<rect width=\"" + fmt("%.0f", width) + "\" height=\"" + fmt("%.0f", height) + "\" fill=\"white\"/>\n";
  svg += legend;
  for (std::size_t i = 0; i < panels.size(); ++i) {
    const double px0 = style.panel_width * static_cast<double>(i % columns) + style.margin_left;
    const double py0 = top + style.panel_height * static_cast<double>(i / columns) + style.margin_top;
    draw_panel(svg, panels[i], runs, px0, py0, style.panel_width - style.margin_left - style.margin_right,
               style.panel_height - style.margin_top - style.margin_bottom, style);
  }
  svg += "</svg>\n";
  return svg;
}

fs::path find_on_path(std::string_view program) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path ? path : "";
  while (!dirs.empty()) {
    const std::size_t end = std::min(dirs.find(':'), dirs.size());
    const fs::path candidate = fs::path(dirs.substr(0, end)) / program;
    dirs.remove_prefix(std::min(end + 1, dirs.size()));
    if (::access(candidate.c_str(), X_OK) == 0 && fs::is_regular_file(candidate)) return candidate;
  }
  return {};
}

namespace {

std::string shell_quote(const fs::path& p) {
  std::string out = "'";
  for (const char c : p.string()) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The PNG of `svg`, rendered by rsvg-convert through files beside `out` (temporary names that
// remove_stale_temporaries() recognises, removed here).
std::string render_png(const std::string& svg, const fs::path& out) {
  const fs::path rsvg = find_on_path("rsvg-convert");
  if (rsvg.empty()) {
    throw std::runtime_error(out.string() + ": cannot render PNG: rsvg-convert is not on PATH (install librsvg2-bin, "
                             "see scripts/deps.sh, or write an .svg)");
  }
  const fs::path svg_tmp = temporary_path(fs::path(out.string() + ".svg"));
  const fs::path png_tmp = temporary_path(fs::path(out.string() + ".png"));
  struct Cleanup {
    fs::path a, b;
    ~Cleanup() {
      std::error_code ec;
      fs::remove(a, ec);
      fs::remove(b, ec);
    }
  } cleanup{svg_tmp, png_tmp};
  write_file_atomic(svg_tmp, svg);
  const std::string command =
      shell_quote(rsvg) + " -f png -o " + shell_quote(png_tmp) + " " + shell_quote(svg_tmp);
  const int status = std::system(command.c_str());
  if (status != 0) {
    throw std::runtime_error(out.string() + ": rsvg-convert could not render the picture (exit status " +
                             std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
  }
  return read_file(png_tmp);
}

bool is_png_path(const fs::path& out) {
  std::string ext = out.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png";
}

}  // namespace

void write_plot(std::span<const RunMetrics> runs, const fs::path& out, const PlotStyle& style) {
  const std::string svg = plot_svg(runs, style);
  write_file_atomic(out, is_png_path(out) ? render_png(svg, out) : svg);
}

}  // namespace edgetune::plot
