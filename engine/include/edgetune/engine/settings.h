// Typed settings: one table per settings struct.
//
// A settings struct (TrainConfig, PretrainConfig, DataOptions, ...) lists its fields once, in a
// static member template `fields(self, v)` (self const or not) that calls the visitor with each
// field's key, value, help text and range; the default is the field's initialiser. Visitors walk that one table to
//   - write the struct as JSON (run.json, the C ABI's options),
//   - read it back from JSON: a missing key keeps its default (a run.json written before the field
//     existed still resumes), an unknown key or value is an error naming the key,
//   - check every range (one line naming the key),
//   - bind the fields to command-line options (examples/cli/settings_cli.h, CLI11).
//
//   template <class Self, class V> static void fields(Self& c, V& v) {
//     v("epochs", c.epochs, "passes over the training data", at_least(1));
//     v("optimizer", c.optimizer, kOptimizerNames, "adamw, adam (L2 decay) or sgd");
//   }
//
// Value kinds a table may hold: bool, integers, double, std::string, std::filesystem::path,
// std::optional of those, std::vector of strings or paths (a list on the command line), an enum
// with its table of names (Choices), data::ColumnRef (a header name or a 0-based index), and a
// byte size (std::size_t with Spec::bytes: "128M" on the command line or in a JSON string).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgetune/data/reader.h"

namespace edgetune::settings {

// A bad setting: one line naming the key (and the file, when read from one).
class SettingError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// One value of an enum and its name in JSON and on the command line.
template <class E>
struct Choice {
  E value;
  const char* name;
};
template <class E>
using Choices = std::span<const Choice<E>>;

template <class E>
const char* name_of(Choices<E> choices, E value) {
  for (const Choice<E>& c : choices) {
    if (c.value == value) return c.name;
  }
  throw std::logic_error("an enum value has no name in its settings table");
}

// "f32, q8 or q4"
template <class E>
std::string choice_list(Choices<E> choices) {
  std::string s;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    if (i > 0) s += i + 1 == choices.size() ? " or " : ", ";
    s += choices[i].name;
  }
  return s;
}

// The value named `name`; SettingError "<key>: unknown value 'q5' (expected f32, q8 or q4)".
template <class E>
E parse_choice(Choices<E> choices, std::string_view key, std::string_view name) {
  for (const Choice<E>& c : choices) {
    if (name == c.name) return c.value;
  }
  throw SettingError(std::string(key) + ": unknown value '" + std::string(name) + "' (expected " +
                     choice_list(choices) + ")");
}

// What a table says of a field besides its key, value and help.
struct Spec {
  std::optional<double> min, max;  // bounds of a number
  bool min_exclusive = false;      // min itself is not allowed
  bool max_exclusive = false;      // max itself is not allowed
  // The command-line flag when it is not "--" + key with '-' for '_'; "" keeps the field off the
  // command line.
  const char* flag = nullptr;
  bool negated = false;  // a bool whose flag sets it to false ("--no-shuffle")
  bool bytes = false;  // a byte size (std::size_t)
};
inline Spec at_least(double min) {
  Spec s;
  s.min = min;
  return s;
}
inline Spec above(double min) {
  Spec s = at_least(min);
  s.min_exclusive = true;
  return s;
}
inline Spec in_range(double min, double max) {
  Spec s = at_least(min);
  s.max = max;
  return s;
}
// [min, max)
inline Spec below(double min, double max) {
  Spec s = in_range(min, max);
  s.max_exclusive = true;
  return s;
}
inline Spec bytes() {
  Spec s;
  s.bytes = true;
  return s;
}
inline Spec off_cli() {
  Spec s;
  s.flag = "";
  return s;
}
inline Spec with_flag(const char* flag, Spec s = {}) {
  s.flag = flag;
  return s;
}
inline Spec negated_flag(const char* flag) {
  Spec s = with_flag(flag);
  s.negated = true;
  return s;
}

// "--batch-size" for "batch_size".
std::string default_flag(std::string_view key);

// The JSON form of a column: "" unset, the header name, or the index as digits.
std::string column_spec(const data::ColumnRef& c);

// ---- JSON ---------------------------------------------------------------------------------------

namespace detail {
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

template <class T>
nlohmann::json to_json_value(const T& v) {
  if constexpr (std::is_same_v<T, std::optional<data::ColumnRef>>) {
    return v ? column_spec(*v) : std::string();  // "" is an unset column
  } else if constexpr (is_optional<T>::value) {
    return v ? to_json_value(*v) : nlohmann::json(nullptr);
  } else if constexpr (std::is_same_v<T, std::filesystem::path>) {
    return v.string();
  } else if constexpr (std::is_same_v<T, std::vector<std::filesystem::path>>) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& p : v) a.push_back(p.string());
    return a;
  } else if constexpr (std::is_same_v<T, data::ColumnRef>) {
    return column_spec(v);
  } else {
    return v;
  }
}

// The value of `j` as T, or SettingError "<where>: expected <kind>, got <json>".
[[noreturn]] void wrong_type(const std::string& where, const char* expected, const nlohmann::json& j);
std::size_t bytes_from_json(const std::string& where, const nlohmann::json& j);

template <class T>
T from_json_value(const std::string& where, const nlohmann::json& j) {
  if constexpr (is_optional<T>::value) {
    if (j.is_null()) return std::nullopt;
    if constexpr (std::is_same_v<T, std::optional<data::ColumnRef>>) {
      if (j.is_string() && j.get<std::string>().empty()) return std::nullopt;
    }
    return from_json_value<typename T::value_type>(where, j);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) wrong_type(where, "true or false", j);
    return j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!j.is_number_integer()) wrong_type(where, "an integer", j);
    if constexpr (std::is_unsigned_v<T>) {
      if (!j.is_number_unsigned()) wrong_type(where, "a non-negative integer", j);
    }
    return j.get<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!j.is_number()) wrong_type(where, "a number", j);
    return j.get<T>();
  } else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::filesystem::path>) {
    if (!j.is_string()) wrong_type(where, "a string", j);
    return T(j.get<std::string>());
  } else if constexpr (std::is_same_v<T, std::vector<std::string>> ||
                       std::is_same_v<T, std::vector<std::filesystem::path>>) {
    if (!j.is_array()) wrong_type(where, "an array of strings", j);
    T v;
    for (const auto& e : j) {
      if (!e.is_string()) wrong_type(where, "an array of strings", j);
      v.emplace_back(e.get<std::string>());
    }
    return v;
  } else if constexpr (std::is_same_v<T, data::ColumnRef>) {
    if (j.is_number_unsigned()) return data::ColumnRef(j.get<int>());
    if (!j.is_string()) wrong_type(where, "a column name or index", j);
    const std::string s = j.get<std::string>();
    return s.empty() ? data::ColumnRef() : data::ColumnRef::parse(s);
  } else {
    static_assert(sizeof(T) == 0, "a settings field of a kind the JSON reader does not know");
  }
}
}  // namespace detail

// Writes every field into a JSON object.
struct JsonWriter {
  nlohmann::json out = nlohmann::json::object();

  template <class T>
  void operator()(const char* key, const T& value, const char* /*help*/, const Spec& = {}) {
    out[key] = detail::to_json_value(value);
  }
  template <class E, std::size_t N>
  void operator()(const char* key, const E& value, const Choice<E> (&choices)[N], const char* /*help*/,
                  const Spec& = {}) {
    out[key] = name_of<E>(choices, value);
  }
};

// Reads the fields present in a JSON object; the others keep their values. finish() rejects the
// keys no field took. `source` names the file (or "options") in errors.
struct JsonReader {
  const nlohmann::json& in;
  std::string source;
  std::set<std::string> taken = {};

  template <class T>
  void operator()(const char* key, T& value, const char* /*help*/, const Spec& spec = {}) {
    const auto it = in.find(key);
    if (it == in.end()) return;
    taken.insert(key);
    const std::string where = source + ": setting '" + key + "'";
    if constexpr (std::is_same_v<T, std::size_t>) {
      if (spec.bytes) {
        value = detail::bytes_from_json(where, *it);
        return;
      }
    }
    value = detail::from_json_value<T>(where, *it);
  }
  template <class E, std::size_t N>
  void operator()(const char* key, E& value, const Choice<E> (&choices)[N], const char* /*help*/,
                  const Spec& = {}) {
    const auto it = in.find(key);
    if (it == in.end()) return;
    taken.insert(key);
    if (!it->is_string()) {
      detail::wrong_type(source + ": setting '" + key + "'", "a string", *it);
    }
    value = parse_choice<E>(choices, source + ": setting '" + key + "'", it->template get<std::string>());
  }
  void finish() const;
};

// Checks the range of every number (and of the numbers inside optionals).
struct RangeChecker {
  template <class T>
  void operator()(const char* key, const T& value, const char* /*help*/, const Spec& spec = {}) {
    if constexpr (detail::is_optional<T>::value) {
      if (value) (*this)(key, *value, "", spec);
    } else if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      check(key, static_cast<double>(value), spec);
    }
  }
  template <class E, std::size_t N>
  void operator()(const char*, const E&, const Choice<E> (&)[N], const char*, const Spec& = {}) {}
  static void check(const char* key, double value, const Spec& spec);
};

// ---- helpers for a settings struct S with `template <class Self, class V> static fields` -------

template <class S>
nlohmann::json to_json(const S& s) {
  JsonWriter w;
  S::fields(s, w);
  return std::move(w.out);
}

// `base` with the keys of j applied over it; unknown keys and values are errors naming them.
template <class S>
S from_json(const nlohmann::json& j, const std::string& source, S base = S{}) {
  if (!j.is_object()) throw SettingError(source + ": expected a JSON object of settings");
  JsonReader r{j, source};
  S::fields(base, r);
  r.finish();
  return base;
}

template <class S>
void check_ranges(const S& s) {
  RangeChecker c;
  S::fields(s, c);
}

}  // namespace edgetune::settings
