#include "experiments/run/config.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include <fstream>
#include <sstream>

namespace diffode {

const toml::table ConfigTable::empty_{};

ConfigTable::ConfigTable(const toml::table& table, std::string key_path, std::string file, std::shared_ptr<const SourceLines> lines)
    : table_(&table), path_(std::move(key_path)), file_(std::move(file)), lines_(std::move(lines)) {}

std::string ConfigTable::full_path(std::string_view key) const {
  return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
}

int ConfigTable::line_of(const toml::node* node, std::string_view key) const {
  if (node && node->source().begin.line > 0) return static_cast<int>(node->source().begin.line);
  if (!lines_) return node ? 0 : static_cast<int>(table_->source().begin.line);
  // The key's own line, else its table's (a missing key is reported where its table is).
  for (std::string path = node ? full_path(key) : path_;; ) {
    if (auto it = lines_->find(path); it != lines_->end()) return it->second;
    const auto dot = path.rfind('.');
    if (dot == std::string::npos) return 0;
    path.resize(dot);
  }
}

std::string ConfigTable::where(std::string_view key) const {
  const std::string full = full_path(key);
  const int line = line_of(table_->get(key), key);
  if (line > 0) return fmt::format("{}:{}: {}", file_, line, full);
  return fmt::format("{}: {}", file_, full);
}

void ConfigTable::fail(std::string_view key, const std::string& what) const {
  std::string message = fmt::format("{}: {}", where(key), what);
  if (!table_->contains(key)) {
    // A missing key is often a misspelt one: name what the table does hold.
    std::vector<std::string> present;
    for (const auto& [k, node] : *table_) present.emplace_back(k.str());
    if (!present.empty()) message += fmt::format(" (the table holds: {})", fmt::join(present, ", "));
  }
  throw ConfigError(message);
}

bool ConfigTable::has(std::string_view key) const { return table_->contains(key); }

ConfigTable ConfigTable::bind(const TableSchema& schema) const {
  ConfigTable bound = *this;
  bound.schema_ = &schema;
  return bound;
}

const KeySpec* ConfigTable::spec(std::string_view key) const {
  if (!schema_) return nullptr;
  const KeySpec* s = schema_->find(key);
  if (!s) throw std::logic_error(fmt::format("config schema [{}] does not declare the key '{}'", schema_->name, key));
  return s;
}

const toml::node* ConfigTable::lookup(std::string_view key) {
  read_.emplace(key);
  return table_->get(key);
}

double ConfigTable::number(std::string_view key, std::optional<double> fallback) {
  const KeySpec* s = spec(key);
  if (!fallback && s) fallback = s->number_default;
  const toml::node* node = lookup(key);
  if (!node) {
    if (!fallback) fail(key, "missing (a number is required)");
    return *fallback;
  }
  if (auto v = node->value<double>(); v && (node->is_floating_point() || node->is_integer())) {
    // NaN is never a value (absent is absent); the schema's range and finiteness apply.
    if (std::isnan(*v)) fail(key, "must be a number, got nan");
    if (s)
      if (const std::string why = check_number(*s, *v); !why.empty()) fail(key, why);
    return *v;
  }
  fail(key, fmt::format("expected a number, got {}", toml::impl::node_type_friendly_names[static_cast<int>(node->type())]));
}

std::int64_t ConfigTable::integer(std::string_view key, std::optional<std::int64_t> fallback) {
  const KeySpec* s = spec(key);
  if (!fallback && s) fallback = s->integer_default;
  const toml::node* node = lookup(key);
  if (!node) {
    if (!fallback) fail(key, "missing (an integer is required)");
    return *fallback;
  }
  if (node->is_integer()) {
    const std::int64_t v = *node->value<std::int64_t>();
    if (s)
      if (const std::string why = check_number(*s, static_cast<double>(v)); !why.empty()) fail(key, why);
    return v;
  }
  fail(key, fmt::format("expected an integer, got {}", toml::impl::node_type_friendly_names[static_cast<int>(node->type())]));
}

bool ConfigTable::boolean(std::string_view key, std::optional<bool> fallback) {
  if (const KeySpec* s = spec(key); !fallback && s) fallback = s->boolean_default;
  const toml::node* node = lookup(key);
  if (!node) {
    if (!fallback) fail(key, "missing (true or false is required)");
    return *fallback;
  }
  if (node->is_boolean()) return *node->value<bool>();
  fail(key, fmt::format("expected true or false, got {}", toml::impl::node_type_friendly_names[static_cast<int>(node->type())]));
}

std::string ConfigTable::string(std::string_view key, std::optional<std::string> fallback, const std::vector<std::string>& allowed_values) {
  const KeySpec* s = spec(key);
  if (!fallback && s) fallback = s->string_default;
  const std::vector<std::string>& allowed = allowed_values.empty() && s ? s->allowed : allowed_values;
  const toml::node* node = lookup(key);
  std::string value;
  if (!node) {
    if (!fallback) fail(key, "missing (a string is required)");
    value = *fallback;
  } else if (node->is_string()) {
    value = *node->value<std::string>();
  } else {
    fail(key, fmt::format("expected a string, got {}", toml::impl::node_type_friendly_names[static_cast<int>(node->type())]));
  }
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), value) == allowed.end())
    fail(key, fmt::format("'{}' is not one of: {}", value, fmt::join(allowed, ", ")));
  return value;
}

std::vector<double> ConfigTable::numbers(std::string_view key) {
  spec(key);
  const toml::node* node = lookup(key);
  if (!node || !node->is_array()) fail(key, node ? "expected an array of numbers" : "missing (an array of numbers is required)");
  std::vector<double> out;
  for (const auto& item : *node->as_array()) {
    auto v = item.value<double>();
    if (!v || !(item.is_floating_point() || item.is_integer())) fail(key, "expected an array of numbers");
    out.push_back(*v);
  }
  return out;
}

std::vector<std::vector<double>> ConfigTable::number_rows(std::string_view key) {
  spec(key);
  const toml::node* node = lookup(key);
  if (!node || !node->is_array()) fail(key, node ? "expected an array of arrays of numbers" : "missing (an array of arrays is required)");
  std::vector<std::vector<double>> out;
  for (const auto& row : *node->as_array()) {
    if (!row.is_array()) fail(key, "expected an array of arrays of numbers");
    auto& r = out.emplace_back();
    for (const auto& item : *row.as_array()) {
      auto v = item.value<double>();
      if (!v || !(item.is_floating_point() || item.is_integer())) fail(key, "expected an array of arrays of numbers");
      r.push_back(*v);
    }
  }
  return out;
}

ConfigTable ConfigTable::table(std::string_view key) {
  const toml::node* node = lookup(key);
  const std::string child_path = path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
  if (!node) return ConfigTable(empty_, child_path, file_, lines_);
  if (!node->is_table()) fail(key, "expected a table");
  return ConfigTable(*node->as_table(), child_path, file_, lines_);
}

std::string ConfigTable::unknown_key_message(std::string_view key, const std::vector<std::string>& known) const {
  return fmt::format("{}: unknown key (this table takes: {})", where(key), known.empty() ? "nothing" : fmt::format("{}", fmt::join(known, ", ")));
}

void ConfigTable::finish() const {
  for (const auto& [key, node] : *table_) {
    if (read_.contains(key.str())) continue;
    if (schema_ && schema_->find(key.str()))
      fail(key.str(), "not used with the other keys given (docs/config.md says where this key applies)");
    throw ConfigError(unknown_key_message(key.str(), schema_ ? schema_->key_names() : std::vector<std::string>(read_.begin(), read_.end())));
  }
}

std::vector<std::pair<int, std::string>> ConfigTable::undeclared(const std::vector<std::string>& declared) const {
  std::vector<std::pair<int, std::string>> out;
  for (const auto& [key, node] : *table_)
    if (std::find(declared.begin(), declared.end(), key.str()) == declared.end())
      out.emplace_back(line_of(&node, key.str()), unknown_key_message(key.str(), declared));
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

std::optional<ConfigTable> ConfigTable::peek(std::string_view key) const {
  const toml::node* node = table_->get(key);
  if (!node || !node->is_table()) return std::nullopt;
  return ConfigTable(*node->as_table(), full_path(key), file_, lines_);
}

namespace {

constexpr std::size_t kMaxConfigBytes = 4 << 20;  // a config is a few kilobytes; anything near this is not one
constexpr int kMaxNesting = 64;                   // tables, arrays and dotted keys inside each other

// Refuses input the parser should never see: too large, or nested deeper than any config needs (a
// deeply nested header exhausts the parser's stack). Brackets and dots inside strings and comments
// do not count.
void check_shape(std::string_view text, const std::string& name) {
  if (text.size() > kMaxConfigBytes)
    throw ConfigError(fmt::format("{}: {} bytes is not a config (at most {} bytes)", name, text.size(), kMaxConfigBytes));
  int depth = 0, line = 1, dots = 0;
  char quote = 0;
  bool comment = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line, dots = 0, comment = false;
      if (quote == '\'') quote = 0;
      continue;
    }
    if (comment) continue;
    if (quote) {
      if (c == '\\' && quote == '"') ++i;
      else if (c == quote) quote = 0;
      continue;
    }
    if (c == '"' || c == '\'') quote = c;
    else if (c == '#') comment = true;
    else if (c == '[' || c == '{') ++depth;
    else if (c == ']' || c == '}') depth = std::max(0, depth - 1);
    else if (c == '.' && !(i > 0 && std::isdigit(static_cast<unsigned char>(text[i - 1])))) ++dots;
    if (depth + dots > kMaxNesting)
      throw ConfigError(fmt::format("{}:{}: nested more than {} levels deep: not a config", name, line, kMaxNesting));
  }
}

toml::table parse(const std::string& text, const std::string& name) {
  check_shape(text, name);
  try {
    return toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt::format("{}:{}:{}: {}", name, e.source().begin.line, e.source().begin.column, e.description()));
  }
}

}  // namespace

Config::Config(const std::filesystem::path& path) : name_(path.string()) {
  if (path.empty()) throw ConfigError("the config path is empty: name a TOML config file");
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw ConfigError(fmt::format("{}: no such config file", name_));
  if (!std::filesystem::is_regular_file(path, ec)) throw ConfigError(fmt::format("{}: not a file", name_));
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxConfigBytes)
    throw ConfigError(fmt::format("{}: {} bytes is not a config (at most {} bytes)", name_, size, kMaxConfigBytes));
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("{}: cannot open the config file", name_));
  std::stringstream buffer;
  buffer << in.rdbuf();
  text_ = buffer.str();
  table_ = parse(text_, name_);
}

Config Config::from_string(std::string_view text, std::string name) {
  Config c;
  c.name_ = std::move(name);
  c.text_ = std::string(text);
  c.table_ = parse(c.text_, c.name_);
  return c;
}

}  // namespace diffode
