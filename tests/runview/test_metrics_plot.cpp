// edgetune plot's reading and drawing (examples/runview/metrics_plot.h): metrics.jsonl of
// fine-tuning and pretraining runs parsed into series, the SVG's structure (well-formed, one
// polyline per run and series of each panel with one point per value, the legend's names), a
// known value at its pixel, the PNG through rsvg-convert, and the errors.
#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "cli_run.h"
#include "edgetune/core/file_io.h"
#include "metrics_plot.h"

using namespace edgetune;
using namespace edgetune::test;
namespace fs = std::filesystem;

namespace {

// A fine-tuning run's metrics.jsonl as the trainer writes it: train lines every 25 steps with the
// lr rising linearly to 1 at step 100 (0.01 per step), evaluations at steps 50 and 100.
std::string finetune_metrics() {
  std::string text;
  for (int step = 25; step <= 100; step += 25) {
    text += R"({"type":"train","step":)" + std::to_string(step) + R"(,"epoch":0.5,"loss":)" +
            std::to_string(1.0 - step / 200.0) + R"(,"lr":)" + std::to_string(step / 100.0) +
            R"(,"memory_live":20971520,"memory_peak":20971520,"rss":29360128,"peak_rss":30408704,)"
            R"("memory_budget":33554432,"examples_per_second":300.0})" "\n";
    if (step % 50 == 0) {
      text += R"({"type":"eval","step":)" + std::to_string(step) +
              R"(,"epoch":1,"accuracy":0.7,"macro_f1":0.65,"rows":10,"per_class":[{"f1":0.5,"label":"0"}]})" "\n";
    }
  }
  return text;
}

// A pretraining run's: train lines (tokens/s, no budget) and held-out masked-LM evaluations.
std::string pretrain_metrics() {
  return R"({"type":"train","step":2,"loss":9.1,"lr":0.001,"memory_live":1000000,"rss":9000000,"peak_rss":9500000,"tokens_per_second":900})" "\n"
         R"({"type":"train","step":4,"loss":8.7,"lr":0.002,"memory_live":1000000,"rss":9100000,"peak_rss":9500000,"tokens_per_second":950})" "\n"
         R"({"type":"eval","step":4,"mlm_loss":8.5,"mlm_accuracy":0.04,"masked_tokens":40})" "\n";
}

// Checks that `xml` is well-formed as far as an SVG writer can get it wrong: one prolog, tags that
// nest and close, quoted attributes, and no stray '<' or '&' in text.
void require_well_formed(const std::string& xml) {
  REQUIRE(xml.rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", 0) == 0);
  std::vector<std::string> open;
  std::size_t pos = xml.find("?>") + 2;
  const std::regex tag(R"(^<(/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<&]*(?:&(?:amp|lt|gt|quot|apos);[^"<&]*)*")*)\s*(/?)>)");
  const std::regex text(R"(^[^<&]*(?:&(?:amp|lt|gt|quot|apos);[^<&]*)*)");
  bool root_seen = false;
  while (pos < xml.size()) {
    std::smatch m;
    const std::string rest = xml.substr(pos, std::min<std::size_t>(xml.size() - pos, 200000));
    if (xml[pos] == '<') {
      INFO("at offset " << pos << ": " << rest.substr(0, 80));
      REQUIRE(std::regex_search(rest, m, tag));
      const std::string name = m[2];
      if (m[1] == "/") {
        REQUIRE(!open.empty());
        REQUIRE(open.back() == name);
        open.pop_back();
      } else if (m[4] != "/") {
        if (open.empty()) {
          REQUIRE_FALSE(root_seen);
          root_seen = true;
        }
        open.push_back(name);
      }
      pos += static_cast<std::size_t>(m.length(0));
    } else {
      REQUIRE(std::regex_search(rest, m, text));
      REQUIRE(m.length(0) > 0);
      if (open.empty()) REQUIRE(m.str(0).find_first_not_of(" \n") == std::string::npos);
      pos += static_cast<std::size_t>(m.length(0));
    }
  }
  CHECK(root_seen);
  CHECK(open.empty());
}

struct Polyline {
  std::string panel, run, series;
  std::vector<std::pair<double, double>> points;
};

std::vector<Polyline> polylines(const std::string& svg) {
  std::vector<Polyline> out;
  const std::regex re(R"re(<polyline data-panel="([^"]*)" data-run="([^"]*)" data-series="([^"]*)"[^>]* points="([^"]*)"/>)re");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it) {
    Polyline p{(*it)[1], (*it)[2], (*it)[3], {}};
    std::istringstream in((*it)[4].str());
    std::string pair;
    while (in >> pair) {
      const std::size_t comma = pair.find(',');
      p.points.emplace_back(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1)));
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::size_t count(const std::vector<Polyline>& lines, const std::string& panel, const std::string& run) {
  return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](const Polyline& p) {
    return p.panel == panel && p.run == run;
  }));
}

const Polyline& find(const std::vector<Polyline>& lines, const std::string& panel, const std::string& run,
                     const std::string& series) {
  for (const Polyline& p : lines) {
    if (p.panel == panel && p.run == run && p.series == series) return p;
  }
  FAIL("no polyline " << panel << "/" << run << "/" << series);
  throw std::logic_error("unreachable");
}

std::uint32_t be32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

}  // namespace

TEST_CASE("metrics.jsonl of a fine-tuning run parses into a series per type and key, against the step",
          "[runview]") {
  const plot::RunMetrics run = plot::parse_metrics(finetune_metrics() + "\n", "m.jsonl", "lora");
  CHECK(run.name == "lora");
  const plot::Series* lr = run.find("train.lr");
  REQUIRE(lr != nullptr);
  CHECK(lr->step == std::vector<double>{25, 50, 75, 100});
  CHECK(lr->value == std::vector<double>{0.25, 0.5, 0.75, 1.0});
  REQUIRE(run.find("eval.accuracy") != nullptr);
  CHECK(run.find("eval.accuracy")->step == std::vector<double>{50, 100});
  CHECK(run.find("eval.macro_f1")->value == std::vector<double>{0.65, 0.65});
  CHECK(run.find("train.memory_budget")->value.front() == 33554432.0);
  CHECK(run.find("eval.per_class") == nullptr);  // not a number
  CHECK(run.find("eval.mlm_loss") == nullptr);
}

TEST_CASE("the loss's smoothing is a bias-corrected EMA", "[runview]") {
  const std::vector<double> x = {0, 2, 2};
  const std::vector<double> s = plot::ema(x, 0.5);
  REQUIRE(s.size() == 3);
  CHECK(s[0] == Approx(0.0).margin(1e-15));
  CHECK(s[1] == Approx(1.0 / 0.75));               // (0.5 * 0 + 0.5 * 2) / (1 - 0.25)
  CHECK(s[2] == Approx((0.5 * 1.0 + 1.0) / 0.875));  // s_2 = 1, s_3 = 1.5
  CHECK(plot::ema(x, 0.0) == x);
  for (const double v : plot::ema(std::vector<double>{3, 3, 3}, 0.9)) CHECK(v == Approx(3.0).epsilon(1e-12));
  CHECK_THROWS_AS(plot::ema(x, 1.0), std::invalid_argument);
}

TEST_CASE("two runs overlaid: well-formed SVG, one polyline per run and series of each panel, the legend",
          "[runview]") {
  std::vector<plot::RunMetrics> runs = {plot::parse_metrics(finetune_metrics(), "a", "lora <q4> & co"),
                                        plot::parse_metrics(finetune_metrics(), "b", "full")};
  const std::string svg = plot::plot_svg(runs);
  require_well_formed(svg);
  CHECK_THAT(svg, Catch::Contains(">lora &lt;q4&gt; &amp; co</text>") && Catch::Contains(">full</text>"));
  CHECK_THAT(svg, Catch::Contains("budget 32 MiB"));
  const auto lines = polylines(svg);
  for (const std::string run : {"0", "1"}) {
    CHECK(count(lines, "loss", run) == 2);  // raw and smoothed
    CHECK(count(lines, "lr", run) == 1);
    CHECK(count(lines, "eval", run) == 2);    // accuracy and macro-F1
    CHECK(count(lines, "memory", run) == 3);  // accountant, RSS, VmHWM
    CHECK(find(lines, "loss", run, "raw").points.size() == 4);
    CHECK(find(lines, "loss", run, "smoothed").points.size() == 4);
    CHECK(find(lines, "eval", run, "eval.accuracy").points.size() == 2);
    CHECK(find(lines, "memory", run, "train.peak_rss").points.size() == 4);
  }
  CHECK(count(lines, "mlm_loss", "0") == 0);
  CHECK_THAT(svg, !Catch::Contains("data-panel=\"mlm_loss\""));
}

TEST_CASE("a value is drawn at the pixel its axes give it", "[runview]") {
  // lr 0.25 .. 1 over steps 25 .. 100: the step axis runs 0 .. 100 and the lr axis 0.2 .. 1
  // (ticks of 0.2), so lr 0.5 at step 50 sits at 1/2 of the width and 3/8 of the height.
  const std::vector<plot::RunMetrics> runs = {plot::parse_metrics(finetune_metrics(), "a", "r")};
  const plot::PlotStyle style;
  const auto lines = polylines(plot::plot_svg(runs, style));
  const Polyline& lr = find(lines, "lr", "0", "train.lr");
  REQUIRE(lr.points.size() == 4);
  // The lr panel is the second of the first row, below the legend's one row.
  const double x0 = style.panel_width + style.margin_left;
  const double y0 = style.legend_height + style.margin_top;
  const double w = style.panel_width - style.margin_left - style.margin_right;
  const double h = style.panel_height - style.margin_top - style.margin_bottom;
  CHECK(lr.points[1].first == Approx(x0 + 0.5 * w).margin(0.006));
  CHECK(lr.points[1].second == Approx(y0 + h - (0.5 - 0.2) / 0.8 * h).margin(0.006));
  CHECK(lr.points[3].second == Approx(y0).margin(0.006));  // lr 1: the top
}

TEST_CASE("a pretraining run gets the held-out masked-LM panels instead of accuracy and macro-F1", "[runview]") {
  const std::vector<plot::RunMetrics> runs = {plot::parse_metrics(pretrain_metrics(), "p", "mlm"),
                                              plot::parse_metrics(finetune_metrics(), "f", "lora")};
  const std::string svg = plot::plot_svg(runs);
  require_well_formed(svg);
  const auto lines = polylines(svg);
  CHECK(count(lines, "mlm_loss", "0") == 1);
  CHECK(count(lines, "mlm_accuracy", "0") == 1);
  CHECK(find(lines, "mlm_loss", "0", "eval.mlm_loss").points.size() == 1);
  CHECK(count(lines, "eval", "0") == 0);
  CHECK(count(lines, "eval", "1") == 2);
  CHECK(count(lines, "memory", "0") == 3);
  CHECK(count(lines, "mlm_loss", "1") == 0);
  CHECK_THAT(svg, !Catch::Contains("data-panel=\"rtd\""));
}

TEST_CASE("an ELECTRA run beside a masked-LM run: its generator's loss dashed in the masked-LM panels, "
          "its detection accuracy in a panel of its own",
          "[runview]") {
  const std::string electra =
      R"({"type":"train","step":2,"loss":30.5,"lr":0.001,"memory_live":1000000,"rss":9000000,"peak_rss":9500000})" "\n"
      R"({"type":"eval","step":2,"rtd_loss":0.45,"rtd_accuracy":0.86,"generator_mlm_loss":7.5,"generator_mlm_accuracy":0.05})" "\n"
      R"({"type":"eval","step":4,"rtd_loss":0.40,"rtd_accuracy":0.88,"generator_mlm_loss":7.1,"generator_mlm_accuracy":0.06})" "\n";
  const std::vector<plot::RunMetrics> runs = {plot::parse_metrics(pretrain_metrics(), "p", "mlm"),
                                              plot::parse_metrics(electra, "e", "electra")};
  const std::string svg = plot::plot_svg(runs);
  require_well_formed(svg);
  const auto lines = polylines(svg);
  CHECK(find(lines, "mlm_loss", "0", "eval.mlm_loss").points.size() == 1);
  CHECK(find(lines, "mlm_loss", "1", "eval.generator_mlm_loss").points.size() == 2);
  CHECK(find(lines, "mlm_accuracy", "1", "eval.generator_mlm_accuracy").points.size() == 2);
  CHECK(find(lines, "rtd", "1", "eval.rtd_accuracy").points.size() == 2);
  CHECK(count(lines, "rtd", "0") == 0);
}

TEST_CASE("a .png is rendered by rsvg-convert, at the SVG's size", "[runview]") {
  REQUIRE_FALSE(plot::find_on_path("rsvg-convert").empty());  // scripts/deps.sh installs librsvg2-bin
  ScratchDir d("plot-png");
  const std::vector<plot::RunMetrics> runs = {plot::parse_metrics(finetune_metrics(), "a", "lora"),
                                              plot::parse_metrics(pretrain_metrics(), "b", "mlm")};
  plot::write_plot(runs, d / "curves.png");
  plot::write_plot(runs, d / "curves.svg");
  const std::string png = slurp(d / "curves.png");
  REQUIRE(png.size() > 1000);
  CHECK(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  CHECK(png.substr(12, 4) == "IHDR");
  std::smatch m;
  const std::string svg = slurp(d / "curves.svg");
  REQUIRE(std::regex_search(svg, m, std::regex(R"re(<svg [^>]*width="(\d+)" height="(\d+)")re")));
  CHECK(be32(png, 16) == std::stoul(m[1]));
  CHECK(be32(png, 20) == std::stoul(m[2]));
  CHECK(std::stoul(m[1]) == 880);
  // Nothing but the two pictures is left in the folder.
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(d.path)) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 2);
}

TEST_CASE("bad metrics are one error naming the file and line", "[runview]") {
  const std::string good = R"({"type":"train","step":1,"loss":1})" "\n";
  try {
    plot::parse_metrics(good + good + "{\"type\":\"train\",\"step\":3,\n", "run/metrics.jsonl", "run");
    FAIL("no error");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK(what.rfind("run/metrics.jsonl:3: expected one JSON object per line", 0) == 0);
    CHECK(what.find('\n') == std::string::npos);
  }
  CHECK_THROWS_WITH(plot::parse_metrics(good + R"({"type":"eval","loss":2})" "\n", "m.jsonl", "r"),
                    "m.jsonl:2: expected a JSON object with a string \"type\" and a number \"step\"");
  CHECK_THROWS_WITH(plot::parse_metrics("[1, 2]\n", "m.jsonl", "r"),
                    Catch::StartsWith("m.jsonl:1: expected a JSON object"));
  ScratchDir d("plot-missing");
  CHECK_THROWS_AS(plot::read_run(d / "nothing"), FileError);
  CHECK_THROWS_WITH(plot::read_run(d / "nothing"), Catch::Contains((d / "nothing" / "metrics.jsonl").string()));
  CHECK_THROWS_AS(plot::plot_svg({}), std::invalid_argument);
}

TEST_CASE("a run's name is its folder's name, with or without a trailing slash", "[runview]") {
  ScratchDir d("plot-name");
  fs::create_directories(d / "q4-lora");
  std::ofstream(d / "q4-lora" / "metrics.jsonl") << finetune_metrics();
  CHECK(plot::read_run(d / "q4-lora").name == "q4-lora");
  CHECK(plot::read_run((d / "q4-lora").string() + "/").name == "q4-lora");
}
