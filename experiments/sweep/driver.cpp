#include "experiments/sweep/driver.hpp"

#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/output.hpp"

#include "experiments/sweep/runner.hpp"
#include "experiments/sweep/store.hpp"

#include <algorithm>
#include <fmt/format.h>
// The C API only: OpenMPI's deprecated C++ bindings would need libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <unistd.h>

namespace diffode {
namespace {

std::atomic<bool> interrupted{false};

extern "C" void on_interrupt(int) {
  interrupted = true;
  std::signal(SIGINT, SIG_DFL);  // a second ^C ends the process at once (the files stay whole)
}

// MPI when a launcher started us, a single process otherwise: OpenMPI's singleton start would try
// to spawn its runtime, which plain runs (tests, CI without mpirun) neither need nor always allow.
class Ranks {
 public:
  Ranks() {
    for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
      if (std::getenv(variable)) active_ = true;
    if (!active_) return;
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) MPI_Init(nullptr, nullptr);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~Ranks() {
    if (active_) MPI_Finalize();
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  void barrier() const {
    if (active_) MPI_Barrier(MPI_COMM_WORLD);
  }
  int max(int value) const {
    int out = value;
    if (active_) MPI_Allreduce(&value, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return out;
  }

 private:
  bool active_ = false;
  int rank_ = 0, size_ = 1;
};

std::string clock(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60) : fmt::format("{}:{:02d}", s / 60, s % 60);
}

std::string describe(const RunSpec& run, const RunOutcome& outcome) {
  std::string text = fmt::format("{} {} steps={}: ", run.problem, run.variant, outcome.steps);
  if (!outcome.ok) return text + "FAILED (" + outcome.failure + ")";
  text += fmt::format("ok nfe={:.4g}", outcome.metric("nfe"));
  for (const char* m : {"error_rms", "strong_error", "ll_error", "energy"})
    if (std::isfinite(outcome.metric(m))) text += fmt::format(" {}={:.3g}", m, outcome.metric(m));
  return text;
}

// A bar with ETA on a terminal; one line per finished run otherwise (logs, CI).
class Progress {
 public:
  Progress(std::size_t total, bool bar, std::string prefix) : total_(total), bar_(bar), prefix_(std::move(prefix)) {}
  void finished(const RunSpec& run, const RunOutcome& outcome) {
    ++done_;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double eta = done_ < total_ ? elapsed / static_cast<double>(done_) * static_cast<double>(total_ - done_) : 0.0;
    if (!outcome.ok) std::cerr << fmt::format("diffode sweep: {}run {} failed: {}\n", prefix_, run.index, outcome.failure);
    if (!bar_) {
      std::cout << fmt::format("{}[{:>{}}/{}] {} ({:.2f} s)\n", prefix_, done_, fmt::formatted_size("{}", total_), total_,
                               describe(run, outcome), outcome.metric("wall_time"))
                << std::flush;
      return;
    }
    constexpr int width = 30;
    const int filled = total_ ? static_cast<int>(width * done_ / total_) : width;
    std::string line = fmt::format("\r[{}{}] {}/{}  elapsed {}  ETA {}  {}", std::string(filled, '#'), std::string(width - filled, '.'),
                                   done_, total_, clock(elapsed), clock(eta), describe(run, outcome));
    if (line.size() > 150) line.resize(150);
    std::cerr << line << "\033[K" << std::flush;
    if (!outcome.ok) std::cerr << "\n";  // keep failures on screen
  }
  void close() {
    if (bar_ && done_ > 0) std::cerr << "\n";
  }

 private:
  std::size_t total_, done_ = 0;
  bool bar_;
  std::string prefix_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace

bool is_lead_rank() {
  for (const char* variable : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
    if (const char* rank = std::getenv(variable)) return std::string_view(rank) == "0";
  return true;
}

namespace {

// The sweep's output, checked before any run: where it came from ([sweep] output, --output, [run]
// output, or results/<name>.h5) is what a message names. Unless `fresh`, an existing file there must
// be a sweep's (it is resumed) and its parts folder a folder.
void check_sweep_output(const Config& config, const SweepPlan& plan, const std::optional<std::string>& option, bool fresh, double bytes) {
  namespace fs = std::filesystem;
  ConfigTable root = config.root();
  const ConfigTable sweep = root.table("sweep"), run = root.table("run");  // both checked tables by now, or absent
  const bool from_run = !option && !sweep.has("output") && run.has("output");
  const auto refuse = [&](const std::string& problem) {
    if (option) throw ConfigError(fmt::format("--output {}: {}", *option, problem));
    (from_run ? run : sweep).fail(from_run || sweep.has("output") ? "output" : "name", problem);
  };
  std::error_code ec;
  const fs::path output = plan.output, parts = plan.output + ".parts";
  if (!fresh && fs::exists(fs::symlink_status(parts, ec)) && !fs::is_directory(parts, ec))
    refuse(fmt::format("{} exists and is not a folder (the sweep keeps its finished runs there): remove it, or run with --fresh", parts.string()));
  if (!fresh && fs::is_regular_file(output, ec)) {
    bool sweep_file = false;
    try {
      const Hdf5File previous(output, Hdf5File::Mode::read);
      sweep_file = previous.has_attribute("/", "schema") && previous.read_string_attribute("/", "schema").starts_with("diffode-sweep");
    } catch (const std::exception&) {
    }
    if (!sweep_file)
      refuse(fmt::format("{} exists and is not a diffode sweep's results file (which would be resumed): give another output, or run with "
                         "--fresh to replace it",
                         output.string()));
  }
  if (option) {
    check_output_option("--output", output, bytes);
  } else {
    check_output_path(from_run ? run : sweep, from_run || sweep.has("output") ? "output" : "name", output, bytes);
  }
}

}  // namespace

// Reads the plan and checks every run before any runs: a bad value anywhere writes nothing. One
// message per distinct error, with how many runs it hits (an axis value is in many runs).
SweepPlan plan_and_validate(const std::filesystem::path& config_path, const std::optional<std::string>& output, bool fresh) {
  const Config config(config_path);
  SweepPlan plan = plan_sweep(config);
  if (output) plan.output = *output;
  std::vector<std::pair<std::string, std::vector<Index>>> errors;
  double bytes = 0;
  for (const RunSpec& run : plan.runs) {
    try {
      bytes += validate_run(run, plan.file);
    } catch (const ConfigError& e) {
      auto it = std::find_if(errors.begin(), errors.end(), [&](const auto& x) { return x.first == e.what(); });
      if (it == errors.end()) it = errors.insert(errors.end(), {e.what(), {}});
      it->second.push_back(run.index);
    }
  }
  if (errors.empty()) {
    // The parts and the assembled file hold each run once, both at once before the parts go.
    check_sweep_output(config, plan, output, fresh, 2.0 * bytes);
    return plan;
  }
  std::string message;
  for (const auto& [text, runs] : errors)
    message += fmt::format("{}{} (in {} run{}, the first run {})", message.empty() ? "" : "\ndiffode sweep: ", text, runs.size(),
                           runs.size() > 1 ? "s" : "", runs.front());
  throw ConfigError(message);
}

namespace {

// This rank's share of the runs not finished yet (round-robin over ranks); counts the finished.
std::vector<const RunSpec*> my_runs(const SweepPlan& plan, const SweepStore& store, const Ranks& ranks, bool retry_failed, std::size_t& already) {
  const auto finished = store.finished(!retry_failed);
  std::vector<const RunSpec*> mine;
  std::size_t position = 0;
  for (const RunSpec& run : plan.runs) {
    if (finished.contains(run.id)) {
      ++already;
      continue;
    }
    if (position++ % static_cast<std::size_t>(ranks.size()) == static_cast<std::size_t>(ranks.rank())) mine.push_back(&run);
  }
  return mine;
}

// Runs `mine` one after another, storing each as it finishes; returns how many failed.
int run_mine(const SweepPlan& plan, const SweepStore& store, const Ranks& ranks, const std::vector<const RunSpec*>& mine,
             const SweepRunOptions& options, const Provenance& provenance) {
  interrupted = false;
  auto previous_handler = std::signal(SIGINT, on_interrupt);
  Progress progress(mine.size(), ranks.size() == 1 && ::isatty(STDERR_FILENO), ranks.size() > 1 ? fmt::format("rank {} ", ranks.rank()) : "");
  RunExecutor executor;
  auto last_assembly = std::chrono::steady_clock::now();
  int count = 0, failed = 0;
  for (const RunSpec* run : mine) {
    if (interrupted || (options.max_runs >= 0 && count >= options.max_runs)) break;
    const RunOutcome outcome = executor.execute(*run, plan.file, options.threads);
    store.save(*run, outcome);
    ++count;
    failed += outcome.ok ? 0 : 1;
    progress.finished(*run, outcome);
    // A single process keeps the sweep's file current as it goes (parts alone are already safe).
    if (ranks.size() == 1 && std::chrono::steady_clock::now() - last_assembly > std::chrono::seconds(10)) {
      store.assemble(plan, provenance, false);
      last_assembly = std::chrono::steady_clock::now();
    }
  }
  progress.close();
  std::signal(SIGINT, previous_handler);
  return failed;
}

// Rank 0 assembles the one file from the parts; returns false when that failed.
bool assemble(const SweepPlan& plan, const SweepStore& store, const Provenance& provenance) {
  try {
    const auto finished = store.finished();
    std::size_t done = 0;
    for (const RunSpec& run : plan.runs) done += finished.contains(run.id) ? 1 : 0;
    const bool complete = done == plan.runs.size();
    store.assemble(plan, provenance, complete);
    if (complete) store.remove_parts();
    std::cout << fmt::format("wrote {}: {} of {} runs done{}\n", plan.output, done, plan.runs.size(),
                             complete ? "" : " (run the same command again to resume)");
    return true;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("diffode sweep: {}\n", e.what());
    return false;
  }
}

}  // namespace

int run_sweep(const SweepPlan& plan, const Provenance& provenance, const SweepRunOptions& options) {
  const Ranks ranks;
  const bool lead = ranks.rank() == 0;
  const SweepStore store(plan.output);
  int failed = 0;
  try {
    if (lead && options.fresh) {
      std::filesystem::remove(plan.output);
      store.remove_parts();
    }
    ranks.barrier();
    std::size_t already = 0;
    const auto mine = my_runs(plan, store, ranks, options.retry_failed, already);
    if (lead)
      std::cout << fmt::format("diffode sweep {}: {} runs, {} already done, {} to run{} -> {}\n", plan.name, plan.runs.size(), already,
                               plan.runs.size() - already, ranks.size() > 1 ? fmt::format(" on {} ranks", ranks.size()) : "", plan.output)
                << std::flush;
    failed = run_mine(plan, store, ranks, mine, options, provenance);
  } catch (const std::exception& e) {
    std::cerr << fmt::format("diffode sweep: {}\n", e.what());
    failed = -1;
  }
  const bool stopped = ranks.max(interrupted ? 1 : 0) > 0;
  ranks.barrier();
  int status = failed < 0 ? 1 : 0;
  if (lead && !assemble(plan, store, provenance)) status = 1;
  const int any_failed = ranks.max(failed != 0 ? 1 : 0);
  if (stopped) return 130;
  return std::max(status, any_failed);
}

}  // namespace diffode
