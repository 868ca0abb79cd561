// Reading TOML configs (toml++) strictly: every key a command reads is declared in a schema
// (experiments/run/schema.hpp) with its type, default and range; a key nobody declared, a wrong type
// or an impossible value is an error that names the file, the line and the key path, before
// anything runs.
#pragma once

#include "experiments/run/schema.hpp"

#include <toml++/toml.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace diffode {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Source lines by full key path ("sampler.name"), for tables assembled in code (a sweep's resolved
// run config): toml++ drops a node's source region when the node is copied, so the lines of the
// file the values came from travel beside the table.
using SourceLines = std::map<std::string, int, std::less<>>;

// A view of one table of a parsed config, e.g. [sampler], that records which keys were read. Bound
// to a TableSchema, its getters take defaults, allowed values and ranges from the schema (a key the
// schema does not declare is a programming error), and finish() names the declared keys.
class ConfigTable {
 public:
  ConfigTable(const toml::table& table, std::string key_path, std::string file,
              std::shared_ptr<const SourceLines> lines = nullptr);

  bool has(std::string_view key) const;
  double number(std::string_view key, std::optional<double> fallback = std::nullopt);
  std::int64_t integer(std::string_view key, std::optional<std::int64_t> fallback = std::nullopt);
  bool boolean(std::string_view key, std::optional<bool> fallback = std::nullopt);
  std::string string(std::string_view key, std::optional<std::string> fallback = std::nullopt,
                     const std::vector<std::string>& allowed = {});
  std::vector<double> numbers(std::string_view key);
  std::vector<std::vector<double>> number_rows(std::string_view key);
  // The node itself (nullptr when absent), marked read: for values of several shapes.
  const toml::node* node(std::string_view key) { return lookup(key); }
  // A sub-table; absent gives an empty table (so its keys take their defaults).
  ConfigTable table(std::string_view key);
  ConfigTable table(std::string_view key, const TableSchema& schema) { return table(key).bind(schema); }
  // This table read through `schema` (which must outlive it).
  ConfigTable bind(const TableSchema& schema) const;
  const TableSchema* schema() const { return schema_; }

  // Throws for every key that was never read: a misspelt or unsupported option.
  void finish() const;
  // The keys of this table that `declared` does not name, as (line, message) in file order: checked
  // before any value is read, so that a misspelt key is reported as itself and not first read as
  // the default of the key it was meant to be (e.g. a misspelt `solver`, taken as "dopri5", would
  // otherwise surface as an error about `steps`).
  std::vector<std::pair<int, std::string>> undeclared(const std::vector<std::string>& declared) const;
  // A sub-table, without marking it read; nullopt when absent or not a table.
  std::optional<ConfigTable> peek(std::string_view key) const;
  // The line of a key's value (0: unknown).
  int line(std::string_view key) const { return line_of(table_->get(key), key); }

  // "file:line: key.path" for messages about a key's value.
  std::string where(std::string_view key) const;
  [[noreturn]] void fail(std::string_view key, const std::string& what) const;

  const std::string& key_path() const { return path_; }
  // The table itself, for checks across keys; reading through it marks nothing read.
  const toml::table& raw() const { return *table_; }

 private:
  const toml::node* lookup(std::string_view key);
  const KeySpec* spec(std::string_view key) const;
  std::string full_path(std::string_view key) const;
  int line_of(const toml::node* node, std::string_view key) const;  // 0: unknown
  std::string unknown_key_message(std::string_view key, const std::vector<std::string>& known) const;
  const toml::table* table_;
  std::string path_, file_;
  std::shared_ptr<const SourceLines> lines_;
  std::set<std::string, std::less<>> read_;
  const TableSchema* schema_ = nullptr;
  static const toml::table empty_;
};

// A parsed config file; parse errors name the file, line and column.
class Config {
 public:
  explicit Config(const std::filesystem::path& path);
  static Config from_string(std::string_view text, std::string name = "<config>");
  ConfigTable root() const { return ConfigTable(table_, "", name_); }
  const std::string& text() const { return text_; }
  const std::string& name() const { return name_; }
  const toml::table& table() const { return table_; }

 private:
  Config() = default;
  toml::table table_;
  std::string name_, text_;
};

}  // namespace diffode
