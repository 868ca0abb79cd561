// Bad input, fuzzed. Malformed configs, data files and command lines are generated from the shipped
// configs (experiments/*.toml, tests/data/pinned/*.toml) and from small HDF5 files written here, and
// each is run through the `diffode` binary as a child process in a fresh folder of its own. For every
// case the test requires what README.md promises of bad input:
//   - exit code 2: never a crash, an abort or a signal, and never a hang (a child past its time
//     limit is killed and reported);
//   - stderr names the config file and the key, with the line where the key has one
//     ("quick.toml:12: grid.steps: ..."), or the data file and its key; command-line misuse names
//     the argument;
//   - no file created, changed or removed in the case's folder (an earlier output placed at the
//     config's output path stays as it was) nor among the shared data files.
// The classes: keys misspelt, added or dropped at every level (tables, keys, sweep axes, the inline
// tables of an axis), type swaps, NaN / inf / huge / negative / zero / empty / unknown values per
// the schema's declared ranges, every registered sampler's options out of range, cross-key
// conflicts, data files (truncated, zeroed, foreign, empty, a folder or a FIFO, wrong shapes, zero
// rows, NaN, missing datasets, sigma lists that are not grids), unusable outputs (empty, a folder,
// a file as parent, unwritable, over-long names, a FIFO, no space left), config files that are no
// config (syntax, nesting, size, folders, FIFOs), sweep structure, and command-line misuse. The
// case count by class is printed. A few valid inputs run first as controls: they exit 0 and write
// their output, which the same snapshot comparison must see.
#include "experiments/cli/commands.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/likelihood.hpp"
#include "experiments/run/readers.hpp"
#include "experiments/run/sampler_registry.hpp"
#include "experiments/run/sampling.hpp"
#include "experiments/sweep/plan.hpp"
#include "experiments/sweep/runner.hpp"
#include "tests/support/temp_folder.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <variant>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace diffode {
namespace {

#ifdef DIFFODE_BINARY

namespace fs = std::filesystem;

const fs::path kSource = DIFFODE_SOURCE_DIR;
constexpr double kTimeLimit = 120.0;  // seconds per child; a refusal takes milliseconds

// ---------------------------------------------------------------------------------------------
// Children

struct ChildResult {
  bool timed_out = false, signalled = false;
  int code = -1, signal = 0;
  std::string out, err;
};

// Runs argv in `cwd` with stdin from /dev/null and stdout, stderr into pipes; kills it after
// kTimeLimit. `no_space`: the child may write no byte to any file (RLIMIT_FSIZE 0, SIGXFSZ
// ignored, so a write fails with EFBIG as on a full device; the pipes are not files), set by a
// shell that then execs the binary. posix_spawn, not fork: copying the test's own address space
// (large under AddressSanitizer) for every case would cost more than the case.
ChildResult run_child(const std::vector<std::string>& given, const fs::path& cwd, bool no_space) {
  std::vector<std::string> args = given;
  if (no_space) args.insert(args.begin(), {"/bin/sh", "-c", "trap '' XFSZ; ulimit -f 0; exec \"$0\" \"$@\""});
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid = -1;
  const int spawned = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) throw std::runtime_error(fmt::format("cannot start {}: {}", argv[0], std::strerror(spawned)));
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ChildResult r;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kTimeLimit);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_pipes = 2;
  while (open_pipes > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      r.timed_out = true;
      break;
    }
    if (::poll(fds, 2, static_cast<int>(std::min<long long>(left, 1000))) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buffer[4096];
      const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
      if (n > 0) {
        if (sinks[i]->size() < (1 << 16)) sinks[i]->append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_pipes;
      }
    }
  }
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (r.timed_out || std::chrono::steady_clock::now() > deadline) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signalled = true, r.signal = WTERMSIG(status);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Snapshots: every entry under a folder with its type, size, modification time and content hash.

std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> entries;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    std::string text = fmt::format("mode {:o} size {} mtime {}.{:09d}", st.st_mode, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    if (S_ISREG(st.st_mode)) {
      std::ifstream in(it->path(), std::ios::binary);
      std::stringstream bytes;
      bytes << in.rdbuf();
      text += " hash " + content_id(bytes.str());
    }
    entries[fs::relative(it->path(), root).string()] = text;
  }
  return entries;
}

std::string snapshot_difference(const std::map<std::string, std::string>& before, const std::map<std::string, std::string>& after) {
  std::string diff;
  for (const auto& [name, what] : after) {
    auto it = before.find(name);
    if (it == before.end()) diff += fmt::format(" created '{}';", name);
    else if (it->second != what) diff += fmt::format(" changed '{}';", name);
  }
  for (const auto& [name, what] : before)
    if (!after.contains(name)) diff += fmt::format(" removed '{}';", name);
  return diff;
}

// ---------------------------------------------------------------------------------------------
// Cases

struct Case {
  std::string command;  // sample | sweep | likelihood | cli
  std::string cls;      // the class, for the count
  std::string what;     // what was done to the input, for messages
  std::vector<std::string> args;  // after the binary
  std::string config;             // the config's file name ("" when the case has none)
  std::string text;               // the config's text
  std::function<void(const fs::path&)> setup;  // anything else the case's folder holds
  // stderr must contain every string of at least one of these lists.
  std::vector<std::vector<std::string>> names;
  bool no_space = false;
};

// A path to a node of a parsed config: table keys and array indices.
using Step = std::variant<std::string, std::size_t>;
using NodePath = std::vector<Step>;

toml::node* find(toml::node* node, const NodePath& path) {
  for (const Step& s : path) {
    if (!node) return nullptr;
    if (const auto* key = std::get_if<std::string>(&s)) {
      auto* t = node->as_table();
      node = t ? t->get(*key) : nullptr;
    } else {
      auto* a = node->as_array();
      node = a ? a->get(std::get<std::size_t>(s)) : nullptr;
    }
  }
  return node;
}

int line_at(const std::string& text, const NodePath& path) {
  toml::table parsed = toml::parse(text);
  const toml::node* node = find(&parsed, path);
  return node ? static_cast<int>(node->source().begin.line) : 0;
}

std::string to_text(const toml::table& table) {
  std::ostringstream out;
  out << toml::toml_formatter(table) << "\n";
  return out.str();
}

// A value to put at a node.
struct Value {
  std::string label;
  std::function<void(toml::table&, const std::string&)> set_in_table;
  std::function<void(toml::array&, std::size_t)> set_in_array;
};

template <class T>
Value value_of(std::string label, T v) {
  return {std::move(label), [v](toml::table& t, const std::string& k) { t.insert_or_assign(k, v); },
          [v](toml::array& a, std::size_t i) { a.replace(a.cbegin() + static_cast<std::ptrdiff_t>(i), v); }};
}

void assign(toml::table& root, const NodePath& path, const Value& v) {
  NodePath parent(path.begin(), path.end() - 1);
  toml::node* p = parent.empty() ? &root : find(&root, parent);
  if (const auto* key = std::get_if<std::string>(&path.back())) v.set_in_table(*p->as_table(), *key);
  else v.set_in_array(*p->as_array(), std::get<std::size_t>(path.back()));
}

void erase(toml::table& root, const NodePath& path) {
  NodePath parent(path.begin(), path.end() - 1);
  toml::node* p = parent.empty() ? &root : find(&root, parent);
  if (const auto* key = std::get_if<std::string>(&path.back())) p->as_table()->erase(*key);
  else p->as_array()->erase(p->as_array()->cbegin() + static_cast<std::ptrdiff_t>(std::get<std::size_t>(path.back())));
}

void rename(toml::table& root, const NodePath& path, const std::string& to) {
  NodePath parent(path.begin(), path.end() - 1);
  toml::table& t = *(parent.empty() ? &root : find(&root, parent))->as_table();
  const std::string from = std::get<std::string>(path.back());
  t.get(from)->visit([&](const auto& v) { t.insert_or_assign(to, v); });
  t.erase(from);
}

// A key misspelt the way hands do: two letters swapped, else one dropped.
std::string misspell(const std::string& key) {
  for (std::size_t i = key.size() / 2; i + 1 < key.size(); ++i)
    if (key[i] != key[i + 1] && key[i] != '.' && key[i + 1] != '.') {
      std::string s = key;
      std::swap(s[i], s[i + 1]);
      return s;
    }
  return key.size() > 1 ? key.substr(0, key.size() - 1) : key + "x";
}

// What a config's node is: a table, a key's value, a sweep axis (the list) or one of its values.
enum class Kind { table, key, axis, element };

struct Target {
  NodePath path;
  Kind kind;
  std::string logical;  // the key as the run config sees it: "sampler.eta" also inside an axis
  std::string sampler;  // the sampler whose options hold the key
  NodePath axis;        // the sweep axis the node belongs to (empty: none)
};

std::string path_join(const std::string& a, std::string_view b) { return a.empty() ? std::string(b) : fmt::format("{}.{}", a, b); }

void collect_axes(const toml::table& table, const NodePath& base, const std::string& prefix, const std::string& base_sampler,
                  std::vector<Target>& out) {
  for (auto&& [k, v] : table) {
    NodePath path = base;
    path.emplace_back(std::string(k.str()));
    const std::string axis = path_join(prefix, k.str());
    if (const auto* t = v.as_table()) {
      collect_axes(*t, path, axis, base_sampler, out);
      continue;
    }
    out.push_back({path, Kind::axis, axis, base_sampler, path});
    const auto* array = v.as_array();
    if (!array) continue;
    // The first and the last value of each axis (the ones between are of the same kind).
    for (std::size_t i = 0; i < array->size(); ++i) {
      if (i != 0 && i + 1 != array->size()) continue;
      NodePath element = path;
      element.emplace_back(i);
      const auto* t = array->get(i)->as_table();
      std::string sampler = base_sampler;
      if (t && axis == "sampler")
        if (const auto* name = t->get_as<std::string>("name")) sampler = name->get();
      out.push_back({element, Kind::element, axis, sampler, path});
      if (!t) continue;
      for (auto&& [k3, v3] : *t) {
        NodePath key = element;
        key.emplace_back(std::string(k3.str()));
        out.push_back({key, Kind::key, path_join(axis, k3.str()), sampler, path});
      }
    }
  }
}

std::vector<Target> collect(const toml::table& root) {
  std::vector<Target> out;
  std::string base_sampler;
  if (const auto* name = root.at_path("sampler.name").as_string()) base_sampler = name->get();
  for (auto&& [k, v] : root) {
    const std::string key(k.str());
    const auto* t = v.as_table();
    out.push_back({{key}, t ? Kind::table : Kind::key, key, "", {}});
    if (!t) continue;
    for (auto&& [k2, v2] : *t) {
      const std::string sub(k2.str());
      if (key == "sweep" && (sub == "product" || sub == "zip")) {
        out.push_back({{key, sub}, v2.is_table() ? Kind::table : Kind::key, "sweep." + sub, "", {}});
        if (const auto* axes = v2.as_table()) collect_axes(*axes, {key, sub}, "", base_sampler, out);
        if (const auto* blocks = v2.as_array())
          for (std::size_t b = 0; b < blocks->size(); ++b)
            if (const auto* block = blocks->get(b)->as_table()) collect_axes(*block, {key, sub, b}, "", base_sampler, out);
        continue;
      }
      out.push_back({{key, sub}, v2.is_table() ? Kind::table : Kind::key, path_join(key, sub), key == "sampler" ? base_sampler : "", {}});
    }
  }
  return out;
}

// The schema's declaration of a run config's key ("grid.steps", "sampler.eta"); nullptr if none.
const KeySpec* spec_of(const std::string& logical, const std::string& sampler) {
  const auto dot = logical.find('.');
  if (dot == std::string::npos) return nullptr;
  const std::string table = logical.substr(0, dot), key = logical.substr(dot + 1);
  const std::map<std::string, const TableSchema*> tables{
      {"process", &process_schema()}, {"model", &model_schema()},     {"grid", &grid_schema()},
      {"run", &run_schema()},         {"metrics", &metrics_schema()}, {"sweep", &sweep_schema()},
      {"data", &data_schema()},       {"likelihood", &likelihood_schema()}, {"output", &likelihood_output_schema()}};
  if (table == "sampler") {
    if (key == "name") return sampler_table_schema().find(key);
    const SamplerEntry* entry = find_sampler(sampler);
    return entry ? entry->options.find(key) : nullptr;
  }
  auto it = tables.find(table);
  return it == tables.end() ? nullptr : it->second->find(key);
}

bool is_count(const std::string& logical) { return logical == "run.samples" || logical == "data.points"; }

// The values that the key's declaration refuses, by class.
std::vector<std::pair<std::string, Value>> refused_values(const KeySpec& spec, const std::string& logical) {
  std::vector<std::pair<std::string, Value>> out;
  const auto refused = [&](double v) { return !check_number(spec, v).empty(); };
  switch (spec.type) {
    case ValueType::number: {
      out.emplace_back("nan", value_of("nan", std::numeric_limits<double>::quiet_NaN()));
      for (double v : {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()})
        if (refused(v)) out.emplace_back("inf", value_of(v > 0 ? "inf" : "-inf", v));
      if (refused(1e300)) out.emplace_back("huge", value_of("1e300", 1e300));
      if (refused(-1.0)) out.emplace_back("negative", value_of("-1.0", -1.0));
      if (refused(0.0)) out.emplace_back("zero", value_of("0.0", 0.0));
      if (spec.max && std::isfinite(*spec.max) && refused(*spec.max + 1) && !refused(*spec.max - 1e-9))
        out.emplace_back("out of range", value_of(fmt::format("{}", *spec.max + 1), *spec.max + 1));
      break;
    }
    case ValueType::integer: {
      const std::int64_t huge = 1000000000000000;
      if (refused(static_cast<double>(huge)) || is_count(logical)) out.emplace_back("huge", value_of("1e15", huge));
      if (refused(-1)) out.emplace_back("negative", value_of("-1", std::int64_t{-1}));
      if (refused(0)) out.emplace_back("zero", value_of("0", std::int64_t{0}));
      if (spec.max && refused(*spec.max + 1) && *spec.max + 1 < 1e15)
        out.emplace_back("out of range", value_of(fmt::format("{}", *spec.max + 1), static_cast<std::int64_t>(*spec.max + 1)));
      break;
    }
    case ValueType::string:
      out.emplace_back("empty", value_of("\"\"", std::string()));
      if (!spec.allowed.empty()) out.emplace_back("unknown value", value_of("\"bogus\"", std::string("bogus")));
      if (logical == "sweep.name") out.emplace_back("huge", value_of("300 characters", std::string(300, 'n')));
      break;
    default:
      break;
  }
  return out;
}

// Values of another type than the declared one: a scalar and a compound where both can be given
// (every wrong type of a key meets the same check, so two of them cover it).
std::vector<Value> swapped_types(std::optional<ValueType> type) {
  const toml::table small_table{{"x", 1}};
  const toml::array one{1.0};
  const toml::array word{"x"};
  if (!type) return {value_of("1", std::int64_t{1}), value_of("\"x\"", std::string("x"))};
  switch (*type) {
    case ValueType::number: return {value_of("\"1\"", std::string("1")), value_of("[1.0]", one)};
    case ValueType::integer: return {value_of("1.5", 1.5), value_of("\"1\"", std::string("1"))};
    case ValueType::string: return {value_of("1", std::int64_t{1}), value_of("[\"x\"]", word)};
    case ValueType::boolean: return {value_of("\"true\"", std::string("true")), value_of("{x = 1}", small_table)};
    case ValueType::table: return {value_of("1", std::int64_t{1})};
    default: return {value_of("\"x\"", std::string("x"))};
  }
}

// In-process validation, for the generator only: whether a config is valid at all (a dropped key
// with a default leaves a valid config, which is no case), and a precondition that every base is.
std::optional<std::string> validate(const std::string& command, const std::string& text, const std::string& name) {
  try {
    const Config config = Config::from_string(text, name);
    ConfigTable root = config.root();
    if (command == "sample") {
      const SamplingSetup s = read_sampling_setup(root);
      root.finish();
      if (s.run.output.empty()) return "no [run] output";
    } else if (command == "sweep") {
      const SweepPlan plan = plan_sweep(config);
      for (const RunSpec& run : plan.runs) validate_run(run, name);
    } else {
      const auto process = read_process(root.table("process"));
      const GaussianMixture mixture = read_mixture(root.table("model"));
      read_likelihood_data(root.table("data"), *process, mixture);
      const LikelihoodSetup setup = read_likelihood_setup(root.table("likelihood"));
      check_likelihood_process(root.table("likelihood"), setup, *process);
      ConfigTable out = root.table("output", likelihood_output_schema());
      out.string("file");
      out.finish();
      root.finish();
    }
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

// A shipped config, made cheap: few samples, points and fine steps (a case that ran by mistake
// then costs little); [run] output where the command reads it.
struct Base {
  std::string command, name;
  toml::table table;
};

Base load_base(const std::string& command, const fs::path& file) {
  Base b{command, file.filename().string(), toml::parse_file(file.string())};
  auto shrink = [&](const char* table, const char* key, std::int64_t value) {
    if (auto* t = b.table[table].as_table(); t && t->contains(key)) t->insert_or_assign(key, value);
  };
  shrink("run", "samples", command == "sweep" ? 8 : 4);
  shrink("data", "points", 4);
  shrink("metrics", "strong_steps", 16);
  if (command == "sweep" && !b.table.contains("run")) b.table.insert("run", toml::table{{"samples", 8}});
  if (command == "sweep")
    if (auto* run = b.table["run"].as_table(); !run->contains("samples")) run->insert("samples", 8);
  return b;
}

// The output a base writes, relative to the case's folder ("" when none or absolute).
std::string output_of(const Base& b) {
  std::optional<std::string> out;
  if (b.command == "sample") out = b.table.at_path("run.output").value<std::string>();
  if (b.command == "likelihood") out = b.table.at_path("output.file").value<std::string>();
  if (b.command == "sweep") {
    out = b.table.at_path("sweep.output").value<std::string>();
    if (!out) out = b.table.at_path("run.output").value<std::string>();
    if (!out) out = fmt::format("results/{}.h5", b.table.at_path("sweep.name").value_or<std::string>(fs::path(b.name).stem().string()));
  }
  if (!out || out->empty() || fs::path(*out).is_absolute()) return "";
  return *out;
}

// Cuts every [sweep.product] axis but `keep` to its first value: a case then validates a few runs,
// not hundreds, and its error comes from the axis it changed.
void cut_axes(toml::table& root, const NodePath& keep) {
  std::vector<Target> targets = collect(root);
  for (const Target& t : targets) {
    if (t.kind != Kind::axis || t.path.size() < 2 || std::get<std::string>(t.path[1]) != "product" || t.path == keep) continue;
    if (auto* a = find(&root, t.path)->as_array(); a && a->size() > 1) a->erase(a->cbegin() + 1, a->cend());
  }
}

std::string line_key(const std::string& config, int line, const std::string& key) {
  return line > 0 ? fmt::format("{}:{}: {}", config, line, key) : fmt::format("{}: {}", config, key);
}

class Generator {
 public:
  Generator(std::vector<Case>& cases, const fs::path& fixtures) : cases_(cases), fixtures_(fixtures) {}

  // Adds a case for `mutated` (a base's table after one change), precondition: the base is valid.
  void add(const Base& base, const std::string& cls, const std::string& what, const std::string& text,
           std::vector<std::vector<std::string>> names, std::function<void(const fs::path&)> setup = {}, bool earlier_output = true) {
    Case c;
    c.command = base.command;
    c.cls = cls;
    c.what = fmt::format("{}: {}", base.name, what);
    c.config = base.name;
    c.text = text;
    c.args = {DIFFODE_BINARY, base.command, base.name, "--threads", "1"};
    c.names = std::move(names);
    // An earlier result at the config's output path must stay as it was.
    const std::string output = earlier_output ? output_of(base) : "";
    c.setup = [output, setup](const fs::path& dir) {
      if (!output.empty()) {
        fs::create_directories((dir / output).parent_path());
        std::ofstream(dir / output) << "an earlier result\n";
      }
      if (setup) setup(dir);
    };
    cases_.push_back(std::move(c));
  }

  // Every generated mutation of one base config.
  void mutate(const Base& base) {
    {
      const auto error = validate(base.command, to_text(base.table), base.name);
      EXPECT_FALSE(error) << base.name << " is not valid: " << *error;
    }
    {
      toml::table cut = base.table;
      cut_axes(cut, {});
      const auto error = validate(base.command, to_text(cut), base.name);
      EXPECT_FALSE(error) << base.name << " is not a valid base: " << *error;
      if (error) return;
    }
    for (const Target& t : collect(base.table)) {
      toml::table table = base.table;
      cut_axes(table, t.axis);
      const std::string& cfg = base.name;
      // Misspelt.
      if (t.kind != Kind::element) {
        const std::string from = std::get<std::string>(t.path.back()), to = misspell(from);
        toml::table m = table;
        rename(m, t.path, to);
        NodePath renamed = t.path;
        renamed.back() = to;
        const std::string text = to_text(m);
        std::string logical = t.logical.substr(0, t.logical.size() - from.size()) + to;
        int line = line_at(text, renamed);
        if (t.kind == Kind::axis)
          if (const auto* a = find(&m, renamed)->as_array(); a && !a->empty()) {
            NodePath first = renamed;
            first.emplace_back(std::size_t{0});
            line = line_at(text, first);
          }
        const std::string leaf = logical.substr(logical.rfind('.') + 1);
        // A dotted axis key misspelt in its table's part names that table ("likelihodo").
        std::string misspelt_part = logical;
        for (std::size_t i = 0; i < logical.size() && i < t.logical.size(); ++i)
          if (logical[i] != t.logical[i]) {
            const auto end = logical.find('.', i);
            misspelt_part = logical.substr(0, end);
            break;
          }
        add(base, "misspelt key", fmt::format("{} -> {}", t.logical, logical), text,
            {{line_key(cfg, line, logical)}, {line_key(cfg, line, misspelt_part + ": unknown key")}, {cfg, t.logical + ": missing", leaf}});
      }
      // Added: an undeclared key in every table.
      if (t.kind == Kind::table || (t.kind == Kind::element && find(&table, t.path)->is_table())) {
        toml::table m = table;
        find(&m, t.path)->as_table()->insert_or_assign("bogus_key", 1);
        NodePath added = t.path;
        added.emplace_back(std::string("bogus_key"));
        const std::string text = to_text(m);
        const bool in_axes = t.logical == "sweep.product" || t.logical == "sweep.zip";
        const std::string logical = in_axes ? "bogus_key" : path_join(t.logical, "bogus_key");
        add(base, "unknown key", fmt::format("{} in [{}]", "bogus_key", t.logical), text,
            {{line_key(cfg, line_at(text, added), in_axes ? t.logical : logical), "bogus_key"}});
      }
      // Dropped: a case only where the key is then missing. Most keys have defaults, and without
      // a table or a key that picks how others are read ([process], a solver's name) the config
      // is another one, whose error (if any) is about other keys.
      if (t.kind != Kind::element) {
        toml::table m = table;
        erase(m, t.path);
        const std::string text = to_text(m);
        const auto error = validate(base.command, text, cfg);
        if (error && error->find(t.logical) != std::string::npos && error->find("missing") != std::string::npos)
          add(base, "dropped key", fmt::format("{} dropped", t.logical), text, {{cfg, t.logical, "missing"}});
      }
      // Type swaps and refused values.
      const toml::node* node = find(&table, t.path);
      const KeySpec* spec = t.kind == Kind::key || (t.kind == Kind::element && !node->is_table()) ? spec_of(t.logical, t.sampler) : nullptr;
      std::optional<ValueType> type;
      if (spec) type = spec->type;
      else if (t.kind == Kind::table || (t.kind == Kind::element && node->is_table())) type = ValueType::table;
      else if (t.kind == Kind::key && node->is_floating_point()) type = ValueType::number;
      else if (t.kind == Kind::key && node->is_string()) type = ValueType::string;
      if (t.kind == Kind::axis) {
        // An axis that is no list, or an empty list.
        for (const Value& v : {value_of("5", std::int64_t{5}), value_of("[]", toml::array{})}) {
          toml::table m = table;
          assign(m, t.path, v);
          const std::string text = to_text(m);
          const std::string where = std::get<std::string>(t.path[1]);
          add(base, v.label == "[]" ? "sweep axis" : "type swap", fmt::format("axis {} = {}", t.logical, v.label), text,
              {{line_key(cfg, line_at(text, t.path), "sweep." + where), t.logical}});
        }
        continue;
      }
      if (t.kind == Kind::key && (t.logical == "sweep.product" || t.logical == "sweep.zip")) continue;
      const std::string expected_key = t.logical;
      for (const Value& v : swapped_types(type)) {
        if (type == ValueType::number && v.label == "1") continue;
        toml::table m = table;
        assign(m, t.path, v);
        const std::string text = to_text(m);
        add(base, "type swap", fmt::format("{} = {}", t.logical, v.label), text, {{line_key(cfg, line_at(text, t.path), expected_key)}});
      }
      if (!spec) continue;
      for (const auto& [cls, v] : refused_values(*spec, t.logical)) {
        toml::table m = table;
        assign(m, t.path, v);
        const std::string text = to_text(m);
        add(base, cls, fmt::format("{} = {}", t.logical, v.label), text, {{line_key(cfg, line_at(text, t.path), expected_key)}});
      }
    }
    // An undeclared key and an undeclared table at the root.
    for (const auto& [what, value] : {std::pair{"bogus_key", value_of("1", std::int64_t{1})}, std::pair{"bogus_table", value_of("{x = 1}", toml::table{{"x", 1}})}}) {
      toml::table m = base.table;
      cut_axes(m, {});
      assign(m, {std::string(what)}, value);
      const std::string text = to_text(m);
      add(base, "unknown key", fmt::format("{} at the root", what), text, {{line_key(base.name, line_at(text, {std::string(what)}), what)}});
    }
  }

  std::vector<Case>& cases_;
  fs::path fixtures_;
};

// ---------------------------------------------------------------------------------------------
// Data files

void write_raw(const fs::path& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string read_raw(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A dataset of any shape and type by the C API (what Hdf5File does not write: rank 3, zero rows,
// strings, an extent far beyond the file).
void write_dataset(const fs::path& file, const std::string& name, std::vector<hsize_t> dims, const std::vector<double>& values,
                   bool as_string = false) {
  const hid_t f = H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t type = as_string ? H5Tcopy(H5T_C_S1) : H5Tcopy(H5T_IEEE_F64LE);
  if (as_string) H5Tset_size(type, 8);
  const hid_t set = H5Dcreate2(f, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (as_string) {
    std::string text(8 * values.size(), 'x');
    H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, text.data());
  } else if (!values.empty()) {
    H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  }
  H5Dclose(set);
  H5Tclose(type);
  H5Sclose(space);
  H5Fclose(f);
}

void write_matrix_file(const fs::path& file, const std::string& name, Index rows, Index cols, double fill_nan_at = -1) {
  std::vector<double> v(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.25 * static_cast<double>(i % 7) - 0.5;
  if (fill_nan_at >= 0 && !v.empty()) v[static_cast<std::size_t>(fill_nan_at)] = std::numeric_limits<double>::quiet_NaN();
  write_dataset(file, name, {static_cast<hsize_t>(rows), static_cast<hsize_t>(cols)}, v);
}

// A broken file: its name and the reason, for one kind of data file whose valid version is `valid`.
struct BrokenFile {
  std::string name, what;
};

// The ways a file can fail to be a data file at all, made from its valid version.
std::vector<BrokenFile> broken_files(const fs::path& fixtures, const fs::path& valid) {
  const std::string stem = valid.stem().string(), bytes = read_raw(valid);
  std::vector<BrokenFile> out;
  const auto make = [&](const std::string& suffix, const std::string& what, const std::string& content) {
    const std::string name = fmt::format("{}_{}.h5", stem, suffix);
    write_raw(fixtures / name, content);
    out.push_back({name, what});
  };
  make("truncated", "truncated to half its bytes", bytes.substr(0, bytes.size() / 2));
  make("zeroed", "zeroed", std::string(bytes.size(), '\0'));
  make("foreign", "a text file", "x,y\n1,2\n3,4\n");
  make("empty", "empty", "");
  fs::create_directories(fixtures / (stem + "_folder.h5"));
  out.push_back({stem + "_folder.h5", "a folder"});
  ::mkfifo((fixtures / (stem + "_fifo.h5")).c_str(), 0644);
  out.push_back({stem + "_fifo.h5", "a FIFO"});
  out.push_back({stem + "_missing.h5", "missing"});
  return out;
}

// ---------------------------------------------------------------------------------------------
// The fixture: data files once per test, cases run in parallel, the count by class printed.

class BadInput : public testing::TempFolderTest {
 protected:
  void SetUp() override {
    TempFolderTest::SetUp();
    fixtures_ = dir_ / "fixtures";
    fs::create_directories(fixtures_);
    // x_T and likelihood data for the 2-D ring; a mixture file; replayed sigma lists.
    write_matrix_file(fixtures_ / "noise.h5", "initial", 4, 2);
    write_matrix_file(fixtures_ / "data.h5", "y", 4, 2);
    {
      Hdf5File m(fixtures_ / "mixture.h5", Hdf5File::Mode::create);
      m.write_vector("weights", {0.5, 0.5});
      Batch means(2, 2), variances(2, 2);
      means << 1, 0, -1, 0;
      variances << 0.1, 0.1, 0.1, 0.1;
      m.write_matrix("means", means);
      m.write_matrix("variances", variances);
    }
    write_dataset(fixtures_ / "sigmas.h5", "sigma", {5}, {80, 10, 1, 0.1, 0});
    std::ofstream(fixtures_ / "times.txt") << "1\n0.5\n0.1\n0.01\n";
    std::ofstream(fixtures_ / "blocker") << "a file where a folder is expected\n";
  }

  fs::path fixture(const std::string& name) const { return fixtures_ / name; }

  // Runs every case; failures are collected and reported together.
  // Under the sanitizers (the CI's second tree, several times slower per child process) every
  // kSanitizerStride-th case of each class runs: every class is still exercised, every check still
  // applies, and the Release tree runs them all. DIFFODE_BAD_INPUT_ALL=1 runs all cases anyway.
  static std::vector<Case> sanitizer_subset(const std::vector<Case>& all) {
#if defined(__SANITIZE_ADDRESS__)
    constexpr int kSanitizerStride = 4;
    if (std::getenv("DIFFODE_BAD_INPUT_ALL") != nullptr) return all;
    std::map<std::string, int> seen;
    std::vector<Case> kept;
    for (const Case& c : all)
      if (seen[c.cls]++ % kSanitizerStride == 0) kept.push_back(c);
    return kept;
#else
    return all;
#endif
  }

  void run_cases(const std::vector<Case>& all_cases) {
    const std::vector<Case> cases = sanitizer_subset(all_cases);
    const auto fixtures_before = snapshot(fixtures_);
    std::vector<std::string> failures(cases.size());
    const auto start = std::chrono::steady_clock::now();
    std::atomic<std::size_t> next{0};
    const unsigned workers = std::max(2u, std::min(4u, std::thread::hardware_concurrency()));
    auto work = [&] {
      for (std::size_t i = next++; i < cases.size(); i = next++) failures[i] = run_case(cases[i], i);
    };
    std::vector<std::thread> pool;
    for (unsigned w = 0; w < workers; ++w) pool.emplace_back(work);
    for (auto& t : pool) t.join();

    const std::size_t shown = std::getenv("DIFFODE_BAD_INPUT_ALL") ? cases.size() : 60;  // every failure on demand
    std::map<std::string, std::pair<int, int>> by_class;  // cases, failures
    std::size_t failed = 0;
    std::string report;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      auto& [count, bad] = by_class[cases[i].cls];
      ++count;
      if (failures[i].empty()) continue;
      ++bad;
      if (++failed <= shown) report += fmt::format("\n[{}] {}: {}\n    {}", cases[i].cls, cases[i].command, cases[i].what, failures[i]);
    }
    std::string table = fmt::format("{} cases of bad input, by class ({:.1f} s on {} workers):\n", cases.size(),
                                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), workers);
    for (const auto& [cls, counts] : by_class)
      table += fmt::format("  {:<16} {:>5}{}\n", cls, counts.first, counts.second ? fmt::format("  ({} FAILED)", counts.second) : "");
    std::cout << table;
    EXPECT_EQ(failed, 0u) << failed << " cases failed (the first " << shown << "; DIFFODE_BAD_INPUT_ALL=1 shows all):" << report;
    EXPECT_EQ(snapshot_difference(fixtures_before, snapshot(fixtures_)), "") << "the shared data files changed";
  }

  // One case in a fresh folder; "" when it behaved.
  std::string run_case(const Case& c, std::size_t index) const {
    const fs::path folder = dir_ / "cases" / fmt::format("{:04d}", index);
    fs::create_directories(folder);
    if (!c.config.empty() && !c.text.empty()) std::ofstream(folder / c.config, std::ios::binary) << c.text;
    if (c.setup) c.setup(folder);
    const auto before = snapshot(folder);
    const ChildResult r = run_child(c.args, folder, c.no_space);
    const auto after = snapshot(folder);
    std::string failure;
    if (r.timed_out) failure += fmt::format("hung (killed after {} s); ", kTimeLimit);
    else if (r.signalled) failure += fmt::format("killed by signal {} ({}); ", r.signal, ::strsignal(r.signal));
    else if (r.code != 2) failure += fmt::format("exit code {}, expected 2; ", r.code);
    for (const char* sanitizer : {"AddressSanitizer", "LeakSanitizer", "runtime error:"})
      if (r.err.find(sanitizer) != std::string::npos) failure += fmt::format("{} report; ", sanitizer);
    bool named = c.names.empty();
    for (const auto& all : c.names) {
      bool every = true;
      for (const auto& s : all) every = every && r.err.find(s) != std::string::npos;
      named = named || every;
    }
    if (!named) {
      std::string wanted;
      for (const auto& all : c.names) wanted += fmt::format("{}[{}]", wanted.empty() ? "" : " or ", fmt::join(all, " + "));
      failure += fmt::format("stderr does not name {}; ", wanted);
    }
    if (const std::string diff = snapshot_difference(before, after); !diff.empty()) failure += "files:" + diff + " ";
    if (!failure.empty()) {
      std::string err = r.err.substr(0, 600);
      std::replace(err.begin(), err.end(), '\n', ' ');
      failure += fmt::format("stderr: {}", err);
    }
    std::error_code ec;
    fs::remove_all(folder, ec);
    return failure;
  }

  // A valid input must run, exit 0 and write its output: the snapshot sees files a case creates.
  void expect_control_writes(const std::string& command, const std::string& name, const std::string& text, const std::string& output) {
    const fs::path folder = dir_ / "control" / command;
    fs::create_directories(folder);
    std::ofstream(folder / name) << text;
    const auto before = snapshot(folder);
    const ChildResult r = run_child({DIFFODE_BINARY, command, name, "--threads", "1"}, folder, false);
    EXPECT_EQ(r.code, 0) << command << " control: " << r.err;
    const std::string diff = snapshot_difference(before, snapshot(folder));
    EXPECT_NE(diff.find(fmt::format("created '{}'", output)), std::string::npos) << command << " control wrote: " << diff;
  }

  fs::path fixtures_;
};

// The shipped configs of a command, as bases.
std::vector<Base> shipped(const std::string& command) {
  std::vector<Base> bases;
  std::vector<fs::path> files;
  for (const fs::path& folder : {kSource / "experiments", kSource / "tests/data/pinned"})
    for (const auto& e : fs::directory_iterator(folder))
      if (e.path().extension() == ".toml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  // A base must be valid in a fresh case folder: a config that reads files the checkout holds
  // (the tuned grids and the trained networks under results/) is left out; its keys are exercised
  // through the others.
  std::erase_if(files, [](const fs::path& f) {
    std::ifstream in(f);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("\"results/networks/") != std::string::npos ||
           (text.find("\"results/") != std::string::npos && text.find("\"grid.file\"") != std::string::npos);
  });
  for (const auto& f : files) {
    const toml::table t = toml::parse_file(f.string());
    const bool sweep = t.contains("sweep"), likelihood = t.contains("data") || t.contains("output");
    const std::string kind = t.contains("train") ? "train" : sweep ? "sweep" : likelihood ? "likelihood" : "sample";
    if (kind == command) bases.push_back(load_base(command, f));
  }
  return bases;
}

// ---------------------------------------------------------------------------------------------
// Explicit cases: data files, outputs, config files, cross-key conflicts, command lines.

// `base` with `edit` applied to its table.
Base edited(const Base& base, const std::function<void(toml::table&)>& edit) {
  Base b = base;
  cut_axes(b.table, {});
  edit(b.table);
  return b;
}

// A data file's cases: `table`.`file_key` (and `dataset_key`, "" when the file has no dataset key)
// of `base` pointing at each variant {file name in fixtures, dataset, what}. The message must name
// the config, the key with its line, and the data file.
struct DataVariant {
  std::string file, dataset, what;
};

void data_file_cases(Generator& g, const Base& base, const std::string& cls, const std::string& table, const std::string& file_key,
                     const std::string& dataset_key, const DataVariant& valid, const std::vector<DataVariant>& variants,
                     const fs::path& fixtures) {
  const auto with_file = [&](const DataVariant& v) {
    Base b = base;
    auto* t = b.table[table].as_table();
    t->insert_or_assign(file_key, v.file.starts_with("/") ? v.file : (fixtures / v.file).string());
    if (!dataset_key.empty()) t->insert_or_assign(dataset_key, v.dataset);
    return to_text(b.table);
  };
  const auto error = validate(base.command, with_file(valid), base.name);
  EXPECT_FALSE(error) << base.name << " " << cls << ": the valid data file is refused: " << *error;
  for (const auto& v : variants) {
    const std::string text = with_file(v);
    std::vector<std::vector<std::string>> names{{line_key(base.name, line_at(text, {table, file_key}), table + "." + file_key), v.file}};
    if (!dataset_key.empty())
      names.push_back({line_key(base.name, line_at(text, {table, dataset_key}), table + "." + dataset_key), v.file});
    g.add(base, cls, fmt::format("{}.{} {}", table, file_key, v.what), text, names);
  }
}

// Broken versions of a matrix file (N x 2 for the 2-D ring) with dataset `dataset`: the ways a
// file can fail to be one, wrong shapes and values, a missing or empty dataset name.
std::vector<DataVariant> matrix_variants(const fs::path& fixtures, const std::string& stem, const std::string& dataset) {
  std::vector<DataVariant> out;
  for (const auto& b : broken_files(fixtures, fixtures / (stem + ".h5"))) out.push_back({b.name, dataset, b.what});
  const auto make = [&](const std::string& suffix, const std::string& what, auto&& write) {
    const std::string name = fmt::format("{}_{}.h5", stem, suffix);
    write(fixtures / name);
    out.push_back({name, dataset, what});
  };
  make("cols3", "4 x 3 (the model has 2 dimensions)", [&](const fs::path& f) { write_matrix_file(f, dataset, 4, 3); });
  make("vector", "a vector of 4", [&](const fs::path& f) { write_dataset(f, dataset, {4}, {1, 2, 3, 4}); });
  make("rank3", "rank 3", [&](const fs::path& f) { write_dataset(f, dataset, {2, 2, 2}, std::vector<double>(8, 0.5)); });
  make("rows0", "zero rows", [&](const fs::path& f) { write_dataset(f, dataset, {0, 2}, {}); });
  make("nan", "NaN in a row", [&](const fs::path& f) { write_matrix_file(f, dataset, 4, 2, 5); });
  make("inf", "inf in a row", [&](const fs::path& f) {
    write_dataset(f, dataset, {2, 2}, {0, 1, std::numeric_limits<double>::infinity(), 0});
  });
  make("strings", "strings", [&](const fs::path& f) { write_dataset(f, dataset, {4, 2}, std::vector<double>(8), true); });
  make("group", "a group where the dataset should be", [&](const fs::path& f) {
    Hdf5File h5(f, Hdf5File::Mode::create);
    h5.create_group(dataset);
  });
  make("huge", "10^12 x 2 declared, nothing stored", [&](const fs::path& f) { write_dataset(f, dataset, {1000000000000ull, 2}, {}); });
  out.push_back({stem + ".h5", "nope", "without the dataset named"});
  out.push_back({stem + ".h5", "", "with an empty dataset name"});
  out.push_back({stem + ".h5", "/", "with the root group as dataset"});
  return out;
}

// Replayed sigma lists that are no grid.
std::vector<DataVariant> sigma_variants(const fs::path& fixtures) {
  std::vector<DataVariant> out;
  for (const auto& b : broken_files(fixtures, fixtures / "sigmas.h5")) out.push_back({b.name, "sigma", b.what});
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<std::tuple<std::string, std::string, std::vector<double>>> lists{
      {"empty", "empty", {}},
      {"one", "one entry", {1.0}},
      {"increasing", "increasing", {0.1, 1, 10, 80}},
      {"unordered", "not monotone", {80, 1, 10, 0}},
      {"zeros", "starting at zero", {0, 0}},
      {"negative", "a negative entry", {10, -1, 0}},
      {"nan", "NaN", {80, nan, 0}},
      {"inf", "starting at inf", {inf, 1, 0}},
      {"nozero", "to_zero without a final 0", {80, 10, 1}},
      {"repeat", "a repeated entry", {80, 10, 10, 0}}};
  for (const auto& [suffix, what, values] : lists) {
    const std::string name = fmt::format("sigmas_{}.h5", suffix);
    write_dataset(fixtures / name, "sigma", {values.size()}, values);
    out.push_back({name, "sigma", what});
  }
  write_matrix_file(fixtures / "sigmas_matrix.h5", "sigma", 3, 2);
  out.push_back({"sigmas_matrix.h5", "sigma", "a 3 x 2 matrix"});
  write_dataset(fixtures / "sigmas_huge.h5", "sigma", {1000000000000ull}, {});
  out.push_back({"sigmas_huge.h5", "sigma", "10^12 entries declared, nothing stored"});
  out.push_back({"sigmas.h5", "nope", "without the dataset named"});
  out.push_back({"sigmas.h5", "", "with an empty dataset name"});
  return out;
}

// Text lists of times that are no grid (schedule = "file").
std::vector<DataVariant> time_list_variants(const fs::path& fixtures) {
  std::vector<DataVariant> out;
  const std::vector<std::tuple<std::string, std::string, std::string>> lists{
      {"empty", "empty", ""},
      {"word", "a word", "1\nabc\n0.1\n"},
      {"two", "two numbers on a line", "1\n0.5 0.4\n0.1\n"},
      {"one", "one time", "0.5\n"},
      {"unordered", "not monotone", "1\n0.1\n0.5\n0.01\n"},
      {"nan", "nan", "1\nnan\n0.1\n"},
      {"range", "a time past T", "5\n1\n0.5\n0.1\n"},
      {"negative", "a negative time", "1\n0.5\n-0.5\n"},
      {"repeat", "a repeated time", "1\n0.5\n0.5\n0.1\n"}};
  for (const auto& [suffix, what, text] : lists) {
    const std::string name = fmt::format("times_{}.txt", suffix);
    write_raw(fixtures / name, text);
    out.push_back({name, "", what});
  }
  write_raw(fixtures / "times_binary.txt", read_raw(fixtures / "noise.h5"));
  out.push_back({"times_binary.txt", "", "an HDF5 file"});
  fs::create_directories(fixtures / "times_folder.txt");
  out.push_back({"times_folder.txt", "", "a folder"});
  ::mkfifo((fixtures / "times_fifo.txt").c_str(), 0644);
  out.push_back({"times_fifo.txt", "", "a FIFO"});
  out.push_back({"times_missing.txt", "", "missing"});
  // A device: /dev/null, not an endless one, so that a regression blocks or fails here instead of
  // filling the memory of the machine running the test.
  out.push_back({"/dev/null", "", "a device"});
  return out;
}

// Mixture files that are no mixture.
std::vector<DataVariant> mixture_variants(const fs::path& fixtures) {
  std::vector<DataVariant> out;
  for (const auto& b : broken_files(fixtures, fixtures / "mixture.h5")) out.push_back({b.name, "", b.what});
  const auto make = [&](const std::string& suffix, const std::string& what, std::vector<double> weights, Index k, Index d_means,
                        Index d_vars, double variance, double mean_nan, bool with_variances = true) {
    const std::string name = fmt::format("mixture_{}.h5", suffix);
    Hdf5File h5(fixtures / name, Hdf5File::Mode::create);
    h5.write_vector("weights", weights);
    Batch means = Batch::Constant(k, d_means, 0.5), variances = Batch::Constant(k, d_vars, variance);
    if (mean_nan >= 0 && means.size() > 0) means(0, 0) = std::numeric_limits<double>::quiet_NaN();
    h5.write_matrix("means", means);
    if (with_variances) h5.write_matrix("variances", variances);
    out.push_back({name, "", what});
  };
  make("novariances", "without variances", {0.5, 0.5}, 2, 2, 2, 0.1, -1, false);
  make("negvar", "a negative variance", {0.5, 0.5}, 2, 2, 2, -0.1, -1);
  make("zerovar", "a zero variance", {0.5, 0.5}, 2, 2, 2, 0.0, -1);
  make("nanmean", "a NaN mean", {0.5, 0.5}, 2, 2, 2, 0.1, 0);
  make("negweight", "a negative weight", {1.5, -0.5}, 2, 2, 2, 0.1, -1);
  make("zeroweights", "zero weights", {0.0, 0.0}, 2, 2, 2, 0.1, -1);
  make("k", "3 weights for 2 components", {0.3, 0.3, 0.4}, 2, 2, 2, 0.1, -1);
  make("d", "means 2-D, variances 3-D", {0.5, 0.5}, 2, 2, 3, 0.1, -1);
  make("none", "no components", {}, 0, 2, 2, 0.1, -1);
  return out;
}

// Outputs that cannot be written: `table`.`key` of `base` set to each.
void output_cases(Generator& g, const Base& base, const std::string& table, const std::string& key) {
  const std::string long_name(300, 'o');
  std::string deep;
  for (int i = 0; i < 2100; ++i) deep += "d/";
  const std::vector<std::tuple<std::string, std::string, std::function<void(const fs::path&)>, bool>> outputs{
      {"", "empty", {}, false},
      {"folder.h5", "an existing folder", [](const fs::path& d) { fs::create_directories(d / "folder.h5"); }, false},
      {"blocker/out.h5", "a file as its folder", [](const fs::path& d) { std::ofstream(d / "blocker") << "x\n"; }, false},
      {"blocker/sub/out.h5", "a file above its folder", [](const fs::path& d) { std::ofstream(d / "blocker") << "x\n"; }, false},
      {"/proc/diffode_bad_input/out.h5", "a folder that cannot be made", {}, false},
      {"/proc/diffode_bad_input.h5", "an unwritable folder", {}, false},
      {long_name + ".h5", "a 303-byte name", {}, false},
      {"new/" + long_name + ".h5", "a 303-byte name in a new folder", {}, false},
      {std::string(250, 'o') + ".h5", "a 253-byte name (no room for the temporary name)", {}, false},
      {deep + "out.h5", "a 4206-byte path", {}, false},
      {"pipe.h5", "a FIFO", [](const fs::path& d) { ::mkfifo((d / "pipe.h5").c_str(), 0644); }, false},
      {"out.h5", "a device with no space left", {}, true}};
  for (const auto& [path, what, setup, no_space] : outputs) {
    Base b = edited(base, [&](toml::table& t) {
      if (!t.contains(table)) t.insert(table, toml::table{});
      t[table].as_table()->insert_or_assign(key, path);
    });
    const std::string text = to_text(b.table);
    if (!path.empty()) {
      EXPECT_FALSE(validate(b.command, text, b.name)) << "the output case's config is not valid otherwise";
    }
    g.add(b, "output", fmt::format("{}.{} {}", table, key, what), text, {{line_key(b.name, line_at(text, {table, key}), table + "." + key)}},
          setup, false);
    g.cases_.back().no_space = no_space;
  }
}

// Config files that are no config, and syntax errors appended to a valid one.
void config_file_cases(Generator& g, const Base& base) {
  const std::string valid = to_text(edited(base, [](toml::table&) {}).table);
  const int lines = static_cast<int>(std::count(valid.begin(), valid.end(), '\n'));
  const auto file_case = [&](const std::string& name, const std::string& what, std::function<void(const fs::path&)> setup,
                             std::vector<std::vector<std::string>> names) {
    Case c;
    c.command = base.command;
    c.cls = "config file";
    c.what = what;
    c.args = {DIFFODE_BINARY, base.command, name};
    c.setup = std::move(setup);
    c.names = std::move(names);
    g.cases_.push_back(std::move(c));
  };
  file_case("absent.toml", "a config that does not exist", {}, {{"absent.toml"}});
  file_case("folder.toml", "a config that is a folder", [](const fs::path& d) { fs::create_directories(d / "folder.toml"); },
            {{"folder.toml", "not a file"}});
  file_case("fifo.toml", "a config that is a FIFO", [](const fs::path& d) { ::mkfifo((d / "fifo.toml").c_str(), 0644); },
            {{"fifo.toml", "not a file"}});
  file_case("/dev/null", "/dev/null as config", {}, {{"/dev/null"}});
  file_case("", "an empty config path", {}, {{"config"}});
  const auto appended = [&](const std::string& what, const std::string& tail, int line, const std::string& name_too = "") {
    std::vector<std::string> names{fmt::format("{}:{}:", base.name, line)};
    if (!name_too.empty()) names.push_back(name_too);
    g.add(base, "config file", what, valid + tail, {names});
  };
  appended("an unterminated string", "[extra]\nkey = \"never closed\n", lines + 2);
  appended("invalid UTF-8", "[extra]\nkey = \"\xff\xfe\"\n", lines + 2);
  appended("a NUL byte", std::string("[extra]\nkey = 1\0\n", 17), lines + 2);
  appended("an integer too large", "[extra]\nkey = 99999999999999999999\n", lines + 2);
  appended("a table given twice", fmt::format("[{}]\n", base.table.cbegin()->first.str()), lines + 1);
  appended("a 100,000-deep table header", "[" + [] { std::string s = "a"; for (int i = 0; i < 100000; ++i) s += ".a"; return s; }() + "]\n", lines + 1, "nested");
  appended("100,000 brackets", std::string(100000, '[') + "\n", lines + 1, "nested");
  appended("100,000-deep arrays", "key = " + std::string(100000, '[') + "\n", lines + 1, "nested");
  appended("100,000-deep inline tables", "key = " + [] { std::string s; for (int i = 0; i < 100000; ++i) s += "{a = "; return s; }() + "\n", lines + 1,
           "nested");
  {
    // A header 60 tables deep parses (the bound is 64) and is an unknown table like any other.
    std::string header = "a";
    for (int i = 0; i < 59; ++i) header += ".a";
    g.add(base, "config file", "a 60-deep table header", valid + "[" + header + "]\nkey = 1\n", {{fmt::format("{}:", base.name), "a"}});
  }
  g.add(base, "config file", "5 MB of comments", valid + "# " + std::string(5 << 20, 'x') + "\n", {{base.name, "bytes"}});
  g.add(base, "config file", "an HDF5 file as config", read_raw(g.fixtures_ / "noise.h5"), {{fmt::format("{}:1:", base.name)}});
  g.add(base, "config file", "an empty config", std::string(1, '\n'), {{base.name, ": missing"}});
  g.add(base, "config file", "a config of comments only", "# nothing here\n", {{base.name, ": missing"}});
}

// Command-line misuse of `command` with a valid config beside it.
void command_line_cases(Generator& g, const Base& base) {
  const std::string valid = to_text(edited(base, [](toml::table&) {}).table);
  const std::string& cfg = base.name;
  std::vector<std::pair<std::vector<std::string>, std::string>> lines{
      {{}, "config"},
      {{cfg, "extra.toml"}, "extra.toml"},
      {{"--bogus", cfg}, "--bogus"},
      {{cfg, "--threads", "0"}, "--threads"},
      {{cfg, "--threads", "-1"}, "--threads"},
      {{cfg, "--threads", "x"}, "--threads"},
      {{cfg, "--threads", ""}, "--threads"},
      {{cfg, "--threads", "1.5"}, "--threads"},
      {{cfg, "--threads", "99999999999"}, "--threads"},
      {{cfg, "--threads", "100000"}, "--threads"},
      {{cfg, "--threads"}, "--threads"}};
  if (base.command == "sweep") {
    lines.push_back({{cfg, "--max-runs", "x"}, "--max-runs"});
    lines.push_back({{cfg, "--max-runs", "-5"}, "--max-runs"});
    lines.push_back({{cfg, "--output", ""}, "--output"});
    lines.push_back({{cfg, "--output", "folder.h5"}, "--output"});
    lines.push_back({{cfg, "--output", "blocker/out.h5"}, "--output"});
    lines.push_back({{cfg, "--output", "/proc/diffode_bad_input/out.h5"}, "--output"});
    lines.push_back({{cfg, "--output", std::string(300, 'o') + ".h5"}, "--output"});
    lines.push_back({{cfg, "--output", "pipe.h5"}, "--output"});
    lines.push_back({{cfg, "--fresh=maybe"}, "--fresh"});
  }
  for (const auto& [args, name] : lines) {
    Case c;
    c.command = base.command;
    c.cls = "command line";
    c.what = fmt::format("diffode {} {}", base.command, fmt::join(args, " "));
    c.config = cfg;
    c.text = valid;
    c.args = {DIFFODE_BINARY, base.command};
    c.args.insert(c.args.end(), args.begin(), args.end());
    c.names = {{name}};
    c.setup = [](const fs::path& d) {
      fs::create_directories(d / "folder.h5");
      std::ofstream(d / "blocker") << "x\n";
      ::mkfifo((d / "pipe.h5").c_str(), 0644);
    };
    g.cases_.push_back(std::move(c));
  }
}

// `base` with one change: the case expects `key` named at its line (or `alternatives`).
void cross_case(Generator& g, const Base& base, const std::string& what, const std::function<void(toml::table&)>& edit, const std::string& key,
                std::string cls = "cross-key") {
  const Base b = edited(base, edit);
  const std::string text = to_text(b.table);
  const auto dot = key.find('.');
  NodePath path{key.substr(0, dot)};
  if (dot != std::string::npos) path.emplace_back(key.substr(dot + 1));
  // A key that is missing is named where its table is (or without a line).
  const int line = line_at(text, path);
  g.add(b, cls, what, text, {line > 0 ? std::vector<std::string>{line_key(b.name, line, key)} : std::vector<std::string>{b.name + ":", key, "missing"}});
}

// Every registered sampler's options at refused values, in [sampler] (sample) or as a sweep's
// sampler axis value (sweep): checked when the config is read, not when the sampler runs.
void sampler_option_cases(Generator& g, const Base& base, bool as_axis) {
  for (const SamplerEntry& entry : sampler_registry()) {
    const auto with = [&](const std::function<void(toml::table&)>& options) {
      return edited(base, [&](toml::table& t) {
        toml::table sampler{{"name", entry.name}};
        options(sampler);
        if (as_axis) {
          t["sweep"].as_table()->get("product")->as_table()->insert_or_assign("sampler", toml::array{sampler});
        } else {
          t.insert_or_assign("sampler", sampler);
        }
      });
    };
    const Base plain = with([](toml::table&) {});
    if (const auto error = validate(plain.command, to_text(plain.table), plain.name)) {
      ADD_FAILURE() << "sampler " << entry.name << " on " << base.name << ": " << *error;
      continue;
    }
    for (const KeySpec& spec : entry.options.keys) {
      std::vector<std::pair<std::string, Value>> values = refused_values(spec, "sampler." + spec.key);
      // As an axis value the options go through the same reader: NaN and the first refused value.
      if (as_axis && values.size() > 1) values.erase(values.begin() + 1, values.end());
      const std::vector<Value> swaps = swapped_types(spec.type);
      values.emplace_back("type swap", swaps.front());
      for (const auto& [cls, v] : values) {
        Base b = with([&](toml::table& s) { v.set_in_table(s, spec.key); });
        const std::string text = to_text(b.table);
        const NodePath path = as_axis ? NodePath{std::string("sweep"), std::string("product"), std::string("sampler"), std::size_t{0}, spec.key}
                                      : NodePath{std::string("sampler"), spec.key};
        g.add(b, "sampler option", fmt::format("{} {} = {} ({})", entry.name, spec.key, v.label, cls), text,
              {{line_key(b.name, line_at(text, path), "sampler." + spec.key)}});
      }
    }
  }
}

// Every parameter of every process at refused values.
void process_cases(Generator& g, const Base& base) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> processes{
      {"vp", {"beta_min", "beta_max", "t_min", "t_max"}}, {"subvp", {"beta_min", "beta_max", "t_min", "t_max"}},
      {"vp_cosine", {"t_min", "t_max"}},                  {"ve", {"sigma_min", "sigma_max", "t_min", "t_max"}},
      {"edm", {"sigma_min", "sigma_max", "t_min", "t_max"}}, {"flow", {"t_min", "t_max"}}};
  for (const auto& [process, keys] : processes)
    for (const auto& key : keys)
      for (const auto& [cls, v] : refused_values(*process_schema().find(key), "process." + key))
        cross_case(g, base, fmt::format("{} {} = {}", process, key, v.label),
                   [&](toml::table& t) {
                     toml::table p{{"name", process}};
                     v.set_in_table(p, key);
                     if (process == "flow" && key != "t_max") p.insert("t_max", 0.99);
                     t.insert_or_assign("process", p);
                   },
                   "process." + key, cls);
}

const Base& named(const std::vector<Base>& bases, const std::string& name) {
  for (const Base& b : bases)
    if (b.name == name) return b;
  throw std::runtime_error("no shipped config " + name);
}

NodePath key_path(const std::string& table, const std::string& key) { return {table, key}; }

TEST_F(BadInput, SampleRefusesEveryMalformedInput) {
  std::vector<Case> cases;
  Generator g(cases, fixtures_);
  const std::vector<Base> bases = shipped("sample");
  ASSERT_GE(bases.size(), 10u);
  for (const Base& b : bases) g.mutate(b);
  const Base& ring = named(bases, "euler_edm_ring.toml");
  const Base& vp = named(bases, "dpmpp_2m_vp_ring.toml");
  sampler_option_cases(g, ring, false);
  process_cases(g, ring);

  data_file_cases(g, edited(ring, [](toml::table& t) { t["run"].as_table()->erase("samples"); }), "data file", "run", "initial_file",
                  "initial_dataset", {"noise.h5", "initial", "valid"}, matrix_variants(fixtures_, "noise", "initial"), fixtures_);
  data_file_cases(g, edited(ring, [](toml::table& t) { t.insert_or_assign("grid", toml::table{{"schedule", "hdf5"}, {"variable", "sigma"}}); }),
                  "sigma list", "grid", "file", "dataset", {"sigmas.h5", "sigma", "valid"}, sigma_variants(fixtures_), fixtures_);
  data_file_cases(g, edited(vp, [](toml::table& t) { t.insert_or_assign("grid", toml::table{{"schedule", "file"}}); }), "time list", "grid",
                  "file", "", {"times.txt", "", "valid"}, time_list_variants(fixtures_), fixtures_);
  data_file_cases(g, edited(ring, [](toml::table& t) { t.insert_or_assign("model", toml::table{}); }), "mixture file", "model", "file", "",
                  {"mixture.h5", "", "valid"}, mixture_variants(fixtures_), fixtures_);
  output_cases(g, ring, "run", "output");
  config_file_cases(g, ring);
  command_line_cases(g, ring);

  const auto process = [](toml::table p) { return [p](toml::table& t) { t.insert_or_assign("process", p); }; };
  cross_case(g, ring, "vp t_min above t_max", process(toml::table{{"name", "vp"}, {"t_min", 0.5}, {"t_max", 0.4}}), "process.t_min");
  cross_case(g, ring, "ve sigma_min above its sigma_max", process(toml::table{{"name", "ve"}, {"sigma_min", 60.0}}), "process.sigma_min");
  cross_case(g, ring, "vp beta_min above its beta_max", process(toml::table{{"name", "vp"}, {"beta_min", 30.0}}), "process.beta_min");
  cross_case(g, ring, "vp beta_max so large that alpha(T) = 0", process(toml::table{{"name", "vp"}, {"beta_max", 1e5}}), "process.beta_max");
  cross_case(g, ring, "vp t_max so large that alpha(T) = 0", process(toml::table{{"name", "vp"}, {"t_max", 1000.0}}), "process.t_max");
  cross_case(g, ring, "subvp t_max so large that alpha(T) = 0", process(toml::table{{"name", "subvp"}, {"t_max", 1000.0}}), "process.t_max");
  cross_case(g, ring, "vp_cosine t_max = 1", process(toml::table{{"name", "vp_cosine"}, {"t_max", 1.0}}), "process.t_max");
  cross_case(g, ring, "flow t_max above 1", process(toml::table{{"name", "flow"}, {"t_max", 1.5}}), "process.t_max");
  cross_case(g, ring, "edm t_min and sigma_min both", process(toml::table{{"name", "edm"}, {"t_min", 0.01}, {"sigma_min", 0.02}}), "process.sigma_min");
  cross_case(g, ring, "edm t_max and sigma_max both", process(toml::table{{"name", "edm"}, {"t_max", 50.0}, {"sigma_max", 60.0}}), "process.sigma_max");
  cross_case(g, ring, "sigma_min on vp", process(toml::table{{"name", "vp"}, {"sigma_min", 0.1}}), "process.sigma_min");
  cross_case(g, ring, "beta_max on ve", process(toml::table{{"name", "ve"}, {"beta_max", 10.0}}), "process.beta_max");
  cross_case(g, ring, "t_max on edm under its sigma_min", process(toml::table{{"name", "edm"}, {"t_max", 0.001}}), "process.t_max");
  for (const char* schedule : {"uniform_t", "uniform_lambda", "quadratic", "exponential", "polyexponential", "karras"})
    cross_case(g, ring, fmt::format("flow to T = 1 on a {} grid", schedule),
               [&](toml::table& t) {
                 t.insert_or_assign("process", toml::table{{"name", "flow"}});
                 t["grid"].as_table()->insert_or_assign("schedule", schedule);
                 t["grid"].as_table()->erase("rho");
               },
               "grid.schedule");
  const auto grid = [](toml::table& t, const char* key, auto value) { t["grid"].as_table()->insert_or_assign(key, value); };
  cross_case(g, ring, "rho on a uniform_t grid", [&](toml::table& t) { grid(t, "schedule", "uniform_t"); grid(t, "rho", 7.0); }, "grid.rho");
  cross_case(g, ring, "spacing on a karras grid", [&](toml::table& t) { grid(t, "spacing", "leading"); }, "grid.spacing");
  cross_case(g, ring, "a file on a karras grid", [&](toml::table& t) { grid(t, "file", (fixtures_ / "times.txt").string()); }, "grid.file");
  cross_case(g, vp, "steps on a file grid", [&](toml::table& t) { grid(t, "schedule", "file"); grid(t, "file", (fixtures_ / "times.txt").string()); },
             "grid.steps");
  cross_case(g, vp, "a dataset on a file grid",
             [&](toml::table& t) {
               t.insert_or_assign("grid", toml::table{{"schedule", "file"}, {"file", (fixtures_ / "times.txt").string()}, {"dataset", "t"}});
             },
             "grid.dataset");
  cross_case(g, ring, "a file grid without a file", [&](toml::table& t) { t.insert_or_assign("grid", toml::table{{"schedule", "file"}}); }, "grid.file");
  const auto run = [](toml::table& t, const char* key, auto value) { t["run"].as_table()->insert_or_assign(key, value); };
  cross_case(g, ring, "initial_dataset without initial_file", [&](toml::table& t) { run(t, "initial_dataset", "initial"); }, "run.initial_dataset");
  cross_case(g, ring, "samples beside initial_file", [&](toml::table& t) { run(t, "initial_file", (fixtures_ / "noise.h5").string()); }, "run.samples");
  cross_case(g, ring, "task likelihood in sample", [&](toml::table& t) { run(t, "task", "likelihood"); }, "run.task");
  cross_case(g, ring, "save_trajectory of 10^5 samples over 10^6 steps",
             [&](toml::table& t) { run(t, "save_trajectory", true); run(t, "samples", 100000); grid(t, "steps", 1000000); }, "run.samples");
  cross_case(g, ring, "save_samples in sample", [&](toml::table& t) { run(t, "save_samples", false); }, "run.save_samples");
  for (const SamplerEntry& e : sampler_registry()) {
    const Config c = Config::from_string(fmt::format("name = \"{}\"", e.name));
    if (!read_sampler(c.root()).adaptive) continue;
    cross_case(g, ring, fmt::format("save_trajectory with the adaptive {}", e.name),
               [&](toml::table& t) { t.insert_or_assign("sampler", toml::table{{"name", e.name}}); run(t, "save_trajectory", true); },
               "run.save_trajectory");
    break;
  }
  const auto mixture = [](toml::array w, toml::array m, toml::array v) {
    return [=](toml::table& t) { t.insert_or_assign("model", toml::table{{"weights", w}, {"means", m}, {"variances", v}}); };
  };
  const toml::array w{0.5, 0.5}, m{toml::array{1.0, 0.0}, toml::array{-1.0, 0.0}}, v{toml::array{0.1, 0.1}, toml::array{0.1, 0.1}};
  cross_case(g, ring, "an inline mixture with a negative variance", mixture(w, m, toml::array{toml::array{0.1, 0.1}, toml::array{-0.1, 0.1}}),
             "model.variances");
  cross_case(g, ring, "an inline mixture with a NaN mean", mixture(w, toml::array{toml::array{1.0, std::nan("")}, toml::array{-1.0, 0.0}}, v),
             "model.means");
  cross_case(g, ring, "an inline mixture with a negative weight", mixture(toml::array{1.5, -0.5}, m, v), "model.weights");
  cross_case(g, ring, "an inline mixture with zero weights", mixture(toml::array{0.0, 0.0}, m, v), "model.weights");
  cross_case(g, ring, "an inline mixture with 3 weights for 2 means", mixture(toml::array{0.3, 0.3, 0.4}, m, v), "model.means");
  cross_case(g, ring, "an inline mixture with ragged means", mixture(w, toml::array{toml::array{1.0, 0.0}, toml::array{-1.0}}, v), "model.means");
  cross_case(g, ring, "an inline mixture with no components", mixture(toml::array{}, toml::array{}, toml::array{}), "model.weights");
  cross_case(g, ring, "an inline mixture beside a preset",
             [&](toml::table& t) { mixture(w, m, v)(t); t["model"].as_table()->insert("preset", "ring2d"); }, "model.preset");
  cross_case(g, ring, "a mixture file beside a preset",
             [&](toml::table& t) { t["model"].as_table()->insert_or_assign("file", (fixtures_ / "mixture.h5").string()); }, "model.preset");

  expect_control_writes("sample", ring.name, to_text(ring.table), "euler_edm_ring.h5");
  run_cases(cases);
}

TEST_F(BadInput, SweepRefusesEveryMalformedInput) {
  std::vector<Case> cases;
  Generator g(cases, fixtures_);
  const std::vector<Base> bases = shipped("sweep");
  ASSERT_GE(bases.size(), 6u);
  for (const Base& b : bases) g.mutate(b);
  const Base& small = named(bases, "sweep_small.toml");
  sampler_option_cases(g, small, true);
  // One process, not an axis over them, for the process's own keys and the data files.
  const Base one = edited(small, [](toml::table& t) { t["sweep"]["product"].as_table()->erase("process.name"); });
  process_cases(g, one);
  data_file_cases(g, edited(one, [](toml::table& t) { t["run"].as_table()->erase("samples"); }), "data file", "run", "initial_file",
                  "initial_dataset", {"noise.h5", "initial", "valid"}, matrix_variants(fixtures_, "noise", "initial"), fixtures_);
  data_file_cases(g, edited(one, [](toml::table& t) {
                    t["sweep"]["product"].as_table()->erase("grid.steps");
                    t.insert_or_assign("grid", toml::table{{"schedule", "hdf5"}, {"variable", "sigma"}});
                  }),
                  "sigma list", "grid", "file", "dataset", {"sigmas.h5", "sigma", "valid"}, sigma_variants(fixtures_), fixtures_);
  data_file_cases(g, edited(one, [](toml::table& t) { t.insert_or_assign("model", toml::table{}); }), "mixture file", "model", "file", "",
                  {"mixture.h5", "", "valid"}, mixture_variants(fixtures_), fixtures_);
  output_cases(g, small, "sweep", "output");
  output_cases(g, edited(small, [](toml::table& t) { t["sweep"].as_table()->erase("output"); }), "run", "output");
  {
    // An output that exists and is no sweep file: refused, not resumed from nor replaced.
    const Base b = edited(small, [](toml::table&) {});
    const std::string text = to_text(b.table);
    g.add(b, "output", "sweep.output an existing file that is no sweep", text,
          {{line_key(b.name, line_at(text, key_path("sweep", "output")), "sweep.output")}});
    g.add(b, "output", "sweep.output with a file where its parts folder goes", text,
          {{line_key(b.name, line_at(text, key_path("sweep", "output")), "sweep.output"), ".parts"}},
          [](const fs::path& d) { std::ofstream(d / "pinned_sweep.h5.parts") << "x\n"; }, false);
  }
  config_file_cases(g, small);
  command_line_cases(g, small);

  // The sweep's own structure.
  const auto axes = [](toml::table& t) -> toml::table& { return *t["sweep"]["product"].as_table(); };
  const auto structure = [&](const std::string& what, const std::function<void(toml::table&)>& edit, std::vector<std::vector<std::string>> names) {
    const Base b = edited(small, edit);
    g.add(b, "sweep structure", what, to_text(b.table), std::move(names));
  };
  const auto line_of = [&](const std::function<void(toml::table&)>& edit, const NodePath& path) {
    return line_at(to_text(edited(small, edit).table), path);
  };
  const std::string& cfg = small.name;
  {
    const auto edit = [](toml::table& t) { t["sweep"].as_table()->insert_or_assign("product", toml::array{1, 2}); };
    structure("[sweep] product = [1, 2]", edit, {{line_key(cfg, line_of(edit, key_path("sweep", "product")), "sweep.product")}});
  }
  {
    const auto edit = [](toml::table& t) { t["sweep"].as_table()->insert("zip", toml::table{{"run.seed", toml::array{1, 2}}, {"metrics.law_seed", toml::array{5}}}); };
    structure("zipped axes of unequal lengths", edit,
              {{line_key(cfg, line_of(edit, {"sweep", "zip", "run.seed"}), "sweep.zip"), "run.seed"},
               {line_key(cfg, line_of(edit, {"sweep", "zip", "metrics.law_seed"}), "sweep.zip"), "metrics.law_seed"}});
  }
  {
    const auto edit = [&](toml::table& t) {
      axes(t).insert("run.seed", toml::array{1, 2});
      t["sweep"].as_table()->insert("zip", toml::table{{"run.seed", toml::array{3, 4}}});
    };
    structure("an axis in both product and zip", edit,
              {{line_key(cfg, line_of(edit, {"sweep", "product", "run.seed"}), "sweep.product"), "run.seed"},
               {line_key(cfg, line_of(edit, {"sweep", "zip", "run.seed"}), "sweep.zip"), "run.seed"}});
  }
  {
    const auto edit = [&](toml::table& t) { axes(t).insert("sweep.name", toml::array{"a", "b"}); };
    structure("an axis over [sweep] itself", edit, {{line_key(cfg, line_of(edit, {"sweep", "product", "sweep.name"}), "sweep.product"), "sweep.name"}});
  }
  {
    const auto edit = [&](toml::table& t) { axes(t).insert("run.samples.x", toml::array{1, 2}); };
    structure("an axis into a value", edit, {{line_key(cfg, line_of(edit, {"sweep", "product", "run.samples.x"}), "sweep axis"), "run.samples.x"}});
  }
  {
    const auto edit = [&](toml::table& t) {
      toml::array seeds, more;
      for (int i = 0; i < 1001; ++i) seeds.push_back(i), more.push_back(i + 5000);
      axes(t).insert("run.seed", seeds);
      axes(t).insert("model.seed", more);
    };
    structure("10^6 runs", edit,
              {{line_key(cfg, line_of(edit, {"sweep", "product", "run.seed"}), "sweep.product"), "run.seed", "10^6"},
               {line_key(cfg, line_of(edit, {"sweep", "product", "model.seed"}), "sweep.product"), "model.seed", "10^6"}});
  }
  {
    const auto edit = [&](toml::table& t) { axes(t).insert("run.seed", toml::array{1, 1}); };
    structure("an axis value given twice", edit, {{line_key(cfg, line_of(edit, {"sweep", "product", "run.seed"}), "sweep.product"), "run.seed"}});
  }
  {
    const auto edit = [&](toml::table& t) { axes(t).insert_or_assign("sampler", toml::array{"heun"}); };
    structure("a sampler axis of strings", edit, {{line_key(cfg, line_of(edit, {"sweep", "product", "sampler", std::size_t{0}}), "sampler")}});
  }
  {
    const auto edit = [&](toml::table& t) { axes(t).insert_or_assign("sampler", toml::array{toml::table{}}); };
    structure("a sampler axis value without a name", edit, {{cfg, "sampler.name"}});
  }
  {
    const auto edit = [&](toml::table& t) { t["sweep"].as_table()->insert_or_assign("product", toml::array{toml::table{{"grid.steps", toml::array{}}}}); };
    structure("an empty axis in a [[sweep.product]] block", edit,
              {{line_key(cfg, line_of(edit, {"sweep", "product", std::size_t{0}, "grid.steps"}), "sweep.product"), "grid.steps"}});
  }
  {
    const auto edit = [&](toml::table& t) { axes(t).insert("run", toml::array{toml::table{{"samples", -1}}}); };
    structure("a table axis value with a refused value", edit,
              {{line_key(cfg, line_of(edit, {"sweep", "product", "run", std::size_t{0}, "samples"}), "run.samples")}});
  }
  cross_case(g, small, "save_trajectory in a sweep", [](toml::table& t) { t["run"].as_table()->insert_or_assign("save_trajectory", true); },
             "run.save_trajectory");
  cross_case(g, small, "law_seed equal to the seed", [](toml::table& t) { t["metrics"].as_table()->insert_or_assign("law_seed", 3); },
             "metrics.law_seed");
  cross_case(g, small, "the law metrics of one sample", [](toml::table& t) { t["run"].as_table()->insert_or_assign("samples", 1); }, "run.samples");
  cross_case(g, small, "law = true with one sample",
             [](toml::table& t) { t["run"].as_table()->insert_or_assign("samples", 1); t["metrics"].as_table()->insert("law", true); }, "metrics.law");
  cross_case(g, small, "sigma_min where the axis makes the process vp",
             [](toml::table& t) { t["sweep"]["product"].as_table()->insert_or_assign("process.name", toml::array{"vp"});
                                  t.insert("process", toml::table{{"sigma_min", 0.1}}); },
             "process.sigma_min");

  expect_control_writes("sweep", small.name, to_text(edited(small, [](toml::table&) {}).table), "pinned_sweep.h5");
  run_cases(cases);
}

TEST_F(BadInput, LikelihoodRefusesEveryMalformedInput) {
  std::vector<Case> cases;
  Generator g(cases, fixtures_);
  const std::vector<Base> bases = shipped("likelihood");
  ASSERT_GE(bases.size(), 3u);
  for (const Base& b : bases) g.mutate(b);
  const Base& small = named(bases, "likelihood_small.toml");
  const Base& rk4 = named(bases, "likelihood_rk4.toml");
  process_cases(g, small);
  data_file_cases(g, edited(small, [](toml::table& t) { t.insert_or_assign("data", toml::table{{"source", "hdf5"}}); }), "data file", "data",
                  "file", "dataset", {"data.h5", "y", "valid"}, matrix_variants(fixtures_, "data", "y"), fixtures_);
  data_file_cases(g, edited(small, [](toml::table& t) { t.insert_or_assign("model", toml::table{}); }), "mixture file", "model", "file", "",
                  {"mixture.h5", "", "valid"}, mixture_variants(fixtures_), fixtures_);
  output_cases(g, small, "output", "file");
  config_file_cases(g, small);
  command_line_cases(g, small);
  const auto lik = [](toml::table& t, const char* key, auto value) { t["likelihood"].as_table()->insert_or_assign(key, value); };
  cross_case(g, small, "flow in log sigma", [&](toml::table& t) { t.insert_or_assign("process", toml::table{{"name", "flow"}}); lik(t, "time", "log_sigma"); },
             "likelihood.time");
  cross_case(g, rk4, "rtol for rk4", [&](toml::table& t) { lik(t, "rtol", 1e-3); }, "likelihood.rtol");
  cross_case(g, rk4, "error_norm for rk4", [&](toml::table& t) { lik(t, "error_norm", "batch"); }, "likelihood.error_norm");
  cross_case(g, small, "steps for dopri5", [&](toml::table& t) { lik(t, "steps", 10); }, "likelihood.steps");
  cross_case(g, small, "probes with the exact divergence", [&](toml::table& t) { lik(t, "divergence", "exact"); }, "likelihood.probes");
  cross_case(g, small, "probes with basis probes", [&](toml::table& t) { lik(t, "probe", "basis"); }, "likelihood.probes");
  {
    Base b = edited(rk4, [](toml::table& t) { t["likelihood"].as_table()->erase("steps"); });
    const std::string text = to_text(b.table);
    g.add(b, "cross-key", "rk4 without steps", text, {{b.name, "likelihood.steps"}});
  }
  cross_case(g, small, "a data file with mixture draws", [&](toml::table& t) { t["data"].as_table()->insert("file", (fixtures_ / "data.h5").string()); },
             "data.file");
  cross_case(g, small, "points of an HDF5 data set",
             [&](toml::table& t) {
               t.insert_or_assign("data", toml::table{{"source", "hdf5"}, {"file", (fixtures_ / "data.h5").string()}, {"dataset", "y"}, {"points", 4}});
             },
             "data.points");

  expect_control_writes("likelihood", small.name, to_text(small.table), "likelihood_small.h5");
  run_cases(cases);
}

TEST_F(BadInput, CommandLineMisuseExitsTwo) {
  std::vector<Case> cases;
  const std::vector<std::pair<std::vector<std::string>, std::string>> lines{
      {{}, "subcommand"},
      {{"bogus"}, "bogus"},
      {{"--bogus"}, "--bogus"},
      {{"samplers", "extra"}, "extra"},
      {{"config-reference", "--bogus"}, "--bogus"},
      {{"orders", "--paths", "0"}, "--paths"},
      {{"orders", "--paths", "x"}, "--paths"},
      {{"orders", "--seed", "-1"}, "--seed"},
      {{"orders", "--out", ""}, "--out"},
      {{"orders", "--out", "blocker/results"}, "--out"},
      {{"orders", "--out", "/proc/diffode_bad_input"}, "--out"},
      {{"orders", "--out", std::string(300, 'o')}, "--out"}};
  for (const auto& [args, name] : lines) {
    Case c;
    c.command = "cli";
    c.cls = "command line";
    c.what = fmt::format("diffode {}", fmt::join(args, " "));
    c.args = {DIFFODE_BINARY};
    c.args.insert(c.args.end(), args.begin(), args.end());
    c.names = {{name}};
    c.setup = [](const fs::path& d) { std::ofstream(d / "blocker") << "x\n"; };
    cases.push_back(std::move(c));
  }
  run_cases(cases);
}

#endif

}  // namespace
}  // namespace diffode
