#include "experiments/run/schema.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

namespace diffode {
namespace {

KeySpec make_key(std::string key, ValueType type, std::string help) {
  KeySpec k;
  k.key = std::move(key);
  k.type = type;
  k.help = std::move(help);
  return k;
}

const char* type_name(ValueType t) {
  switch (t) {
    case ValueType::integer: return "integer";
    case ValueType::number: return "number";
    case ValueType::boolean: return "boolean";
    case ValueType::string: return "string";
    case ValueType::numbers: return "array of numbers";
    case ValueType::number_rows: return "array of arrays of numbers";
    case ValueType::table: return "table";
  }
  return "?";
}

std::string number_text(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);
}

}  // namespace

KeySpec number_key(std::string key, std::string help) { return make_key(std::move(key), ValueType::number, std::move(help)); }
KeySpec integer_key(std::string key, std::string help) { return make_key(std::move(key), ValueType::integer, std::move(help)); }
KeySpec boolean_key(std::string key, std::string help) { return make_key(std::move(key), ValueType::boolean, std::move(help)); }
KeySpec string_key(std::string key, std::string help) { return make_key(std::move(key), ValueType::string, std::move(help)); }
KeySpec numbers_key(std::string key, std::string help) { return make_key(std::move(key), ValueType::numbers, std::move(help)); }
KeySpec rows_key(std::string key, std::string help) { return make_key(std::move(key), ValueType::number_rows, std::move(help)); }
KeySpec table_key(std::string key, std::string help) { return make_key(std::move(key), ValueType::table, std::move(help)); }

const KeySpec* TableSchema::find(std::string_view key) const {
  for (const auto& k : keys)
    if (k.key == key) return &k;
  return nullptr;
}

std::vector<std::string> TableSchema::key_names() const {
  std::vector<std::string> names;
  for (const auto& k : keys) names.push_back(k.key);
  return names;
}

std::string check_number(const KeySpec& spec, double value) {
  if (std::isnan(value)) return "must be a number, got nan";
  if (std::isinf(value) && !spec.infinite_ok) return fmt::format("must be finite, got {}", number_text(value));
  const bool low = spec.min && (spec.min_open ? !(value > *spec.min) : !(value >= *spec.min));
  const bool high = spec.max && (spec.max_open ? !(value < *spec.max) : !(value <= *spec.max));
  if (!low && !high) return "";
  if (spec.min && spec.max && !spec.min_open && !spec.max_open)
    return fmt::format("must lie in {}..{}, got {}", number_text(*spec.min), number_text(*spec.max), number_text(value));
  std::vector<std::string> parts;
  if (spec.min) parts.push_back(fmt::format("{} {}", spec.min_open ? ">" : ">=", number_text(*spec.min)));
  if (spec.max) parts.push_back(fmt::format("{} {}", spec.max_open ? "<" : "<=", number_text(*spec.max)));
  const bool finite_number = spec.type == ValueType::number && !spec.infinite_ok;
  return fmt::format("must be {}{}, got {}", finite_number ? "a finite number " : "", fmt::join(parts, " and "), number_text(value));
}

std::string check_string(const KeySpec& spec, const std::string& value) {
  if (spec.allowed.empty()) return "";
  for (const auto& a : spec.allowed)
    if (a == value) return "";
  return fmt::format("'{}' is not one of: {}", value, fmt::join(spec.allowed, ", "));
}

std::string default_text(const KeySpec& spec) {
  if (spec.number_default) return number_text(*spec.number_default);
  if (spec.integer_default) return fmt::format("{}", *spec.integer_default);
  if (spec.boolean_default) return *spec.boolean_default ? "true" : "false";
  if (spec.string_default) return fmt::format("\"{}\"", *spec.string_default);
  if (!spec.default_note.empty()) return spec.default_note;
  return "required";
}

std::string constraint_text(const KeySpec& spec) {
  if (!spec.allowed.empty()) {
    std::vector<std::string> quoted;
    for (const auto& a : spec.allowed) quoted.push_back(fmt::format("\"{}\"", a));
    return fmt::format("{}", fmt::join(quoted, " | "));
  }
  if (spec.min && spec.max && !spec.min_open && !spec.max_open) return fmt::format("{}..{}", number_text(*spec.min), number_text(*spec.max));
  std::vector<std::string> parts;
  if (spec.min) parts.push_back(fmt::format("{} {}", spec.min_open ? ">" : ">=", number_text(*spec.min)));
  if (spec.max) parts.push_back(fmt::format("{} {}", spec.max_open ? "<" : "<=", number_text(*spec.max)));
  std::string text = fmt::format("{}", fmt::join(parts, " and "));
  if (spec.type == ValueType::number && !spec.infinite_ok) text += text.empty() ? "finite" : ", finite";
  return text;
}

std::string schema_help(const std::vector<const TableSchema*>& tables) {
  std::string out;
  for (const TableSchema* t : tables) {
    out += fmt::format("[{}]  {}\n", t->name, t->help);
    for (const auto& k : t->keys) {
      std::string line = fmt::format("  {} = {}", k.key, default_text(k));
      if (const std::string c = constraint_text(k); !c.empty()) line += fmt::format(" ({})", c);
      if (!k.unit.empty()) line += fmt::format(" [{}]", k.unit);
      out += fmt::format("{}\n      {}\n", line, k.help);
    }
  }
  return out;
}

std::string schema_markdown(const TableSchema& table, int heading_level) {
  std::string out = fmt::format("{} `[{}]`\n\n{}\n\n", std::string(heading_level, '#'), table.name, table.help);
  if (table.keys.empty()) return out + "No options.\n\n";
  out += "| key | type | default | allowed | unit | meaning |\n|---|---|---|---|---|---|\n";
  auto cell = [](std::string s) {
    std::string escaped;
    for (char c : s) escaped += c == '|' ? std::string("\\|") : std::string(1, c);
    return escaped;
  };
  for (const auto& k : table.keys)
    out += fmt::format("| `{}` | {} | {} | {} | {} | {} |\n", k.key, type_name(k.type), cell(default_text(k)), cell(constraint_text(k)), k.unit,
                       cell(k.help));
  return out + "\n";
}

}  // namespace diffode
