// The live progress line (see live_progress.h).
#include "live_progress.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "edgetune/core/memory.h"

namespace edgetune::cli {

namespace {
// Erases the terminal's current line and returns to its start.
constexpr const char* kEraseLine = "\r\033[K";
// From this width up the bar has 20 cells, below 10.
constexpr std::size_t kWideColumns = 120;
}  // namespace

std::string live_progress_line(const Progress& p, std::size_t width) {
  const double done =
      p.total_steps > 0 ? std::clamp(static_cast<double>(p.step) / static_cast<double>(p.total_steps), 0.0, 1.0) : 0.0;
  const int cells = width == 0 || width >= kWideColumns ? 20 : 10;
  const int filled = static_cast<int>(done * cells);
  std::string line = "[";
  line.append(static_cast<std::size_t>(filled), '#');
  line.append(static_cast<std::size_t>(cells - filled), '-');
  line += "] ";
  line += std::to_string(p.step);
  line += '/';
  line += std::to_string(p.total_steps);

  const bool tokens = p.tokens_per_second > 0;
  char buf[64];
  std::vector<std::string> fields;
  fields.push_back(format_duration(p.eta_seconds) + " left");
  std::snprintf(buf, sizeof buf, "loss %.4f", p.loss);
  fields.emplace_back(buf);
  std::snprintf(buf, sizeof buf, "%.0f %s", tokens ? p.tokens_per_second : p.examples_per_second,
                tokens ? "tok/s" : "ex/s");
  fields.emplace_back(buf);
  fields.push_back("rss " + format_bytes(p.rss));
  if (p.budget > 0) {
    fields.back() += '/';
    fields.back() += format_bytes(p.budget);
  }
  if (p.rss_file + p.rss_private > 0) {
    fields.push_back("private " + format_bytes(p.rss_private));
    fields.push_back("file " + format_bytes(p.rss_file));
  }
  fields.push_back("mem " + format_bytes(p.memory_live));
  for (const std::string& f : fields) {
    if (width > 0 && line.size() + 2 + f.size() > width - 1) break;
    line += "  ";
    line += f;
  }
  return line;
}

LiveTerminal::LiveTerminal(std::ostream& out) : buffer_(out), stream_(&buffer_) {}

LiveTerminal::~LiveTerminal() { buffer_.finish(); }

void LiveTerminal::show(const std::string& line) { buffer_.show(line); }

void LiveTerminal::Buffer::show(const std::string& line) {
  live_ = line;
  out_ << kEraseLine << live_ << std::flush;
}

void LiveTerminal::Buffer::finish() {
  if (!pending_.empty()) xsputn("\n", 1);
  if (!live_.empty()) out_ << "\n" << std::flush;
  live_.clear();
}

int LiveTerminal::Buffer::overflow(int c) {
  if (c == traits_type::eof()) return traits_type::not_eof(c);
  const char ch = traits_type::to_char_type(c);
  xsputn(&ch, 1);
  return c;
}

std::streamsize LiveTerminal::Buffer::xsputn(const char* s, std::streamsize n) {
  pending_.append(s, static_cast<std::size_t>(n));
  const std::size_t end = pending_.rfind('\n');
  if (end == std::string::npos) return n;
  if (!live_.empty()) out_ << kEraseLine;
  out_ << pending_.substr(0, end + 1) << live_ << std::flush;
  pending_.erase(0, end + 1);
  return n;
}

}  // namespace edgetune::cli
