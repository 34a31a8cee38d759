// The live progress line (see live_progress.h).
#include "live_progress.h"

#include <algorithm>
#include <cstdio>

#include "edgetune/core/memory.h"

namespace edgetune::cli {

namespace {
// Erases the terminal's current line and returns to its start.
constexpr const char* kEraseLine = "\r\033[K";
constexpr int kBarCells = 20;
}  // namespace

std::string live_progress_line(const Progress& p, std::size_t width) {
  const double done = p.total_steps > 0 ? std::clamp(static_cast<double>(p.step) / static_cast<double>(p.total_steps), 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(done * kBarCells);
  std::string line = "[";
  line.append(static_cast<std::size_t>(filled), '#');
  line.append(static_cast<std::size_t>(kBarCells - filled), '-');
  line += ']';
  const bool tokens = p.tokens_per_second > 0;
  const std::string budget = p.budget > 0 ? " of " + format_bytes(p.budget) : "";
  char buf[256];
  std::snprintf(buf, sizeof buf, " %lld/%lld  loss %.4f  %.0f %s  mem %s  rss %s%s  left %s",
                static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss,
                tokens ? p.tokens_per_second : p.examples_per_second, tokens ? "tokens/s" : "ex/s",
                format_bytes(p.memory_live).c_str(), format_bytes(p.rss).c_str(), budget.c_str(),
                format_duration(p.eta_seconds).c_str());
  line += buf;
  if (width > 0 && line.size() > width - 1) line.resize(width - 1);
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
