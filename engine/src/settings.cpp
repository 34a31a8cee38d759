// Typed settings (see settings.h).
#include "edgetune/engine/settings.h"

#include <cstdio>

#include "edgetune/core/memory.h"

namespace edgetune::settings {

std::string default_flag(std::string_view key) {
  std::string flag = "--";
  for (const char c : key) flag += c == '_' ? '-' : c;
  return flag;
}

std::string column_spec(const data::ColumnRef& c) {
  return !c.is_set() ? "" : c.by_name() ? c.name() : std::to_string(c.index());
}

namespace detail {

void wrong_type(const std::string& where, const char* expected, const nlohmann::json& j) {
  std::string got = j.dump();
  if (got.size() > 40) got = got.substr(0, 37) + "...";
  throw SettingError(where + ": expected " + expected + ", got " + got);
}

std::size_t bytes_from_json(const std::string& where, const nlohmann::json& j) {
  if (j.is_number_unsigned()) return j.get<std::size_t>();
  if (!j.is_string()) wrong_type(where, "a byte count or a size such as \"128M\"", j);
  try {
    return parse_bytes(j.get<std::string>());
  } catch (const std::invalid_argument& e) {
    throw SettingError(where + ": " + e.what());
  }
}

}  // namespace detail

void JsonReader::finish() const {
  for (const auto& [key, value] : in.items()) {
    if (!taken.contains(key)) throw SettingError(source + ": unknown setting '" + key + "'");
  }
}

void RangeChecker::check(const char* key, double value, const Spec& spec) {
  char buf[64];
  auto fail = [&](const char* relation, double bound) {
    std::snprintf(buf, sizeof buf, "%.6g", bound);
    std::string got(32, '\0');
    got.resize(static_cast<std::size_t>(std::snprintf(got.data(), got.size(), "%.6g", value)));
    throw SettingError(std::string(key) + " must be " + relation + " " + buf + ", got " + got);
  };
  if (spec.min) {
    if (spec.min_exclusive ? !(value > *spec.min) : !(value >= *spec.min)) {
      fail(spec.min_exclusive ? "above" : "at least", *spec.min);
    }
  }
  if (spec.max) {
    if (spec.max_exclusive ? !(value < *spec.max) : !(value <= *spec.max)) {
      fail(spec.max_exclusive ? "below" : "at most", *spec.max);
    }
  }
}

}  // namespace edgetune::settings
