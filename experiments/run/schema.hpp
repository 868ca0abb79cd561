// The config schema: every key of every config table declared once, with its type, default,
// allowed values or range, unit and help. Reading (ConfigTable bound to a TableSchema), every
// command's --help and the reference docs/config.md all derive from these declarations, so a
// default or a range is written in one place only.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace diffode {

enum class ValueType { integer, number, boolean, string, numbers, number_rows, table };

struct KeySpec {
  std::string key;
  ValueType type = ValueType::number;
  std::string help;
  // The default, when the key may be absent; none of them set: the key is required (or, with
  // `default_note`, absent has a meaning the note states, e.g. "the process's own").
  std::optional<double> number_default;
  std::optional<std::int64_t> integer_default;
  std::optional<bool> boolean_default;
  std::optional<std::string> string_default;
  std::string default_note;
  std::vector<std::string> allowed;  // strings: the values accepted
  std::optional<double> min, max;    // numbers and integers: inclusive bounds unless *_open
  bool min_open = false, max_open = false;
  bool infinite_ok = false;          // numbers: +-inf accepted (NaN never is)
  std::string unit;

  bool required() const { return !number_default && !integer_default && !boolean_default && !string_default && default_note.empty(); }

  // Fluent declaration: number("rtol", "...").fallback(1e-5).above(0).
  KeySpec& fallback(double v) { return number_default = v, *this; }
  KeySpec& fallback_int(std::int64_t v) { return integer_default = v, *this; }
  KeySpec& fallback_bool(bool v) { return boolean_default = v, *this; }
  KeySpec& fallback_str(std::string v) { return string_default = std::move(v), *this; }
  KeySpec& optional(std::string note) { return default_note = std::move(note), *this; }
  KeySpec& one_of(std::vector<std::string> values) { return allowed = std::move(values), *this; }
  KeySpec& at_least(double v) { return min = v, min_open = false, *this; }
  KeySpec& above(double v) { return min = v, min_open = true, *this; }
  KeySpec& at_most(double v) { return max = v, max_open = false, *this; }
  KeySpec& below(double v) { return max = v, max_open = true, *this; }
  KeySpec& infinite() { return infinite_ok = true, *this; }
  KeySpec& in_unit(std::string u) { return unit = std::move(u), *this; }
};

KeySpec number_key(std::string key, std::string help);
KeySpec integer_key(std::string key, std::string help);
KeySpec boolean_key(std::string key, std::string help);
KeySpec string_key(std::string key, std::string help);
KeySpec numbers_key(std::string key, std::string help);
KeySpec rows_key(std::string key, std::string help);
KeySpec table_key(std::string key, std::string help);

struct TableSchema {
  std::string name;  // the table's path, e.g. "grid", or "sampler (dpmpp_2m)" for one sampler's options
  std::string help;
  std::vector<KeySpec> keys;

  const KeySpec* find(std::string_view key) const;
  std::vector<std::string> key_names() const;
};

// Why a value is not acceptable for `spec` ("" when it is): range, finiteness, allowed strings.
std::string check_number(const KeySpec& spec, double value);
std::string check_string(const KeySpec& spec, const std::string& value);

// The default as written in docs and help: "1e-05", "\"karras\"", "true", the note, or "required".
std::string default_text(const KeySpec& spec);
// "1..1000000", "> 0", "\"karras\" | \"uniform_t\"", ...; "" when anything of the type goes.
std::string constraint_text(const KeySpec& spec);

// The schema as plain text for a command's --help (one block per table), and as Markdown.
std::string schema_help(const std::vector<const TableSchema*>& tables);
std::string schema_markdown(const TableSchema& table, int heading_level = 3);

}  // namespace diffode
