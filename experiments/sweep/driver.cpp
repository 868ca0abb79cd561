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
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
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
// Every wait polls and sleeps: a blocking MPI call spins a core, which a rank still running its last
// runs on the same node (or rank 0's own runs, beside its dispatcher) would lose.
class Ranks {
 public:
  Ranks() {
    for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
      if (std::getenv(variable)) active_ = true;
    if (!active_) return;
    int initialised = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&initialised);
    if (!initialised) {
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    } else {
      MPI_Query_thread(&provided);
    }
    funneled_ = provided >= MPI_THREAD_FUNNELED;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~Ranks() {
    if (active_) MPI_Finalize();
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Whether threads may run beside the one that calls MPI (rank 0 then runs runs too).
  bool funneled() const { return funneled_; }
  void barrier() const {
    if (!active_) return;
    MPI_Request request;
    MPI_Ibarrier(MPI_COMM_WORLD, &request);
    wait(request);
  }
  int max(int value) const {
    int out = value;
    if (!active_) return out;
    MPI_Request request;
    MPI_Iallreduce(&value, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &request);
    wait(request);
    return out;
  }
  static void wait(MPI_Request& request) {
    for (int done = 0;;) {
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (done) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  // Polls for a message with `tag` from `source` (MPI_ANY_SOURCE: any); nullopt when none waits.
  static std::optional<MPI_Status> probe(int source, int tag) {
    int flag = 0;
    MPI_Status status;
    MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, &status);
    return flag ? std::optional(status) : std::nullopt;
  }

 private:
  bool active_ = false, funneled_ = false;
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

// A bar with ETA on a terminal (a single process); otherwise one line per finished run (logs, CI,
// and every rank under MPI): "[rank R ][k/n] <problem> <variant> steps=S: ...", where k is the run's
// place in the order the runs were handed out and n the runs this invocation had to run.
class Progress {
 public:
  Progress(std::size_t total, bool bar, std::string prefix) : total_(total), bar_(bar), prefix_(std::move(prefix)) {}
  void finished(const RunSpec& run, const RunOutcome& outcome, std::size_t position) {
    ++done_;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double eta = done_ < total_ ? elapsed / static_cast<double>(done_) * static_cast<double>(total_ - done_) : 0.0;
    if (!outcome.ok) std::cerr << fmt::format("diffode sweep: {}run {} failed: {}\n", prefix_, run.index, outcome.failure);
    if (!bar_) {
      std::cout << fmt::format("{}[{:>{}}/{}] {} ({:.2f} s)\n", prefix_, position, fmt::formatted_size("{}", total_), total_,
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

// The runs left to run, in groups: runs that may share a cached solve (run_sharing's key) form one
// group, handed out whole to one rank so that no two ranks solve the same reference; a run sharing
// nothing is a group of its own. Within a group the runs keep the plan's order, so the run that
// fills a cache is the one that fills it in a single process. Groups go largest first (by the rough
// cost estimate), so that the long ones start early and the short ones fill the gaps at the end.
struct Group {
  std::vector<std::size_t> runs;  // positions in plan.runs
  double cost = 0;
};

std::vector<Group> make_groups(const SweepPlan& plan, const std::vector<std::size_t>& left) {
  std::vector<Group> groups;
  std::map<std::string, std::size_t> by_key;
  for (const std::size_t i : left) {
    const RunSharing sharing = run_sharing(plan.runs[i], plan.file);
    std::size_t g = groups.size();
    if (!sharing.key.empty()) {
      const auto [it, added] = by_key.emplace(sharing.key, groups.size());
      g = it->second;
      if (added) groups.push_back({{}, sharing.shared_cost});
    } else {
      groups.push_back({});
    }
    groups[g].runs.push_back(i);
    groups[g].cost += sharing.cost;
  }
  std::stable_sort(groups.begin(), groups.end(), [](const Group& a, const Group& b) { return a.cost > b.cost; });
  return groups;
}

// The groups, handed out one at a time to whichever worker asks (thread-safe: rank 0 runs runs in a
// thread beside its dispatcher). `max_runs` (>= 0) bounds the runs handed out in all.
class WorkQueue {
 public:
  struct Work {
    std::vector<std::size_t> runs;
    std::size_t first = 0;  // the place of runs[0] in the order handed out (1-based)
  };
  WorkQueue(std::vector<Group> groups, int max_runs) : groups_(std::move(groups)) {
    if (max_runs >= 0) budget_ = static_cast<std::size_t>(max_runs);
  }
  // The next group; empty once every group is handed out, the budget spent or the queue stopped.
  Work next() {
    std::lock_guard lock(mutex_);
    Work work;
    if (stopped_ || next_ == groups_.size() || handed_ >= budget_) return work;
    work.runs = groups_[next_++].runs;
    if (work.runs.size() > budget_ - handed_) work.runs.resize(budget_ - handed_);
    work.first = handed_ + 1;
    handed_ += work.runs.size();
    return work;
  }
  void stop() {
    std::lock_guard lock(mutex_);
    stopped_ = true;
  }

 private:
  std::mutex mutex_;
  std::vector<Group> groups_;
  std::size_t next_ = 0, handed_ = 0, budget_ = std::numeric_limits<std::size_t>::max();
  bool stopped_ = false;
};

// MPI tags of the dispatch: a worker's request (an int: kWant, kLeaving or kInterrupted), and rank
// 0's answer, the next group as int64s [first, run positions...], or nothing when there is no more.
constexpr int kRequestTag = 1, kWorkTag = 2;
constexpr int kWant = 0, kLeaving = 1, kInterrupted = 2;

struct WorkerTally {
  std::size_t runs = 0, groups = 0;
  int failed = 0;      // runs that failed (recorded in their parts)
  bool error = false;  // something other than a run failed (a part could not be written)
  double busy = 0;     // seconds spent in runs
};

// One process's share of the sweep: runs the groups `next` hands out, one run after another,
// storing each as it finishes, until `next` has no more, an interrupt, or an error (then it stops).
template <class Next>
WorkerTally work(const SweepPlan& plan, const SweepStore& store, const Ranks& ranks, const SweepRunOptions& options, const Provenance& provenance,
                 std::size_t total, Next&& next) {
  Progress progress(total, ranks.size() == 1 && ::isatty(STDERR_FILENO), ranks.size() > 1 ? fmt::format("rank {} ", ranks.rank()) : "");
  RunExecutor executor;
  WorkerTally tally;
  auto last_assembly = std::chrono::steady_clock::now();
  try {
    while (!interrupted) {
      const WorkQueue::Work group = next();
      if (group.runs.empty()) break;
      ++tally.groups;
      for (std::size_t k = 0; k < group.runs.size() && !interrupted; ++k) {
        const RunSpec& run = plan.runs[group.runs[k]];
        const auto start = std::chrono::steady_clock::now();
        const RunOutcome outcome = executor.execute(run, plan.file, options.threads);
        store.save(run, outcome);
        tally.busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        ++tally.runs;
        tally.failed += outcome.ok ? 0 : 1;
        progress.finished(run, outcome, group.first + k);
        // A single process keeps the sweep's file current as it goes (parts alone are already safe).
        if (ranks.size() == 1 && std::chrono::steady_clock::now() - last_assembly > std::chrono::seconds(10)) {
          store.assemble(plan, provenance, false);
          last_assembly = std::chrono::steady_clock::now();
        }
      }
      executor.forget_shared();  // no later group shares this one's solves
    }
  } catch (const std::exception& e) {
    std::cerr << fmt::format("diffode sweep: {}{}\n", ranks.size() > 1 ? fmt::format("rank {}: ", ranks.rank()) : "", e.what());
    tally.error = true;
  }
  progress.close();
  return tally;
}

// A rank other than 0: asks rank 0 for a group whenever it has none, until told there is no more.
WorkQueue::Work ask_rank0(int request) {
  MPI_Send(&request, 1, MPI_INT, 0, kRequestTag, MPI_COMM_WORLD);
  std::optional<MPI_Status> status;
  while (!(status = Ranks::probe(0, kWorkTag))) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  int count = 0;
  MPI_Get_count(&*status, MPI_INT64_T, &count);
  std::vector<std::int64_t> message(static_cast<std::size_t>(count));
  MPI_Recv(message.data(), count, MPI_INT64_T, 0, kWorkTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  WorkQueue::Work work;
  if (message.empty()) return work;
  work.first = static_cast<std::size_t>(message[0]);
  for (std::size_t i = 1; i < message.size(); ++i) work.runs.push_back(static_cast<std::size_t>(message[i]));
  return work;
}

// Rank 0's dispatcher, on the thread that calls MPI: answers every request with the next group
// until each other rank has been told there is no more. An interrupt (here or reported by a rank)
// stops the handing out everywhere. Sleeps between polls, so it costs its rank's runs nothing.
void dispatch(WorkQueue& queue, const Ranks& ranks) {
  for (int active = ranks.size() - 1; active > 0;) {
    if (interrupted) queue.stop();
    const auto status = Ranks::probe(MPI_ANY_SOURCE, kRequestTag);
    if (!status) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    int request = kWant;
    MPI_Recv(&request, 1, MPI_INT, status->MPI_SOURCE, kRequestTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (request == kInterrupted) queue.stop();
    std::vector<std::int64_t> message;
    if (request == kWant) {
      const WorkQueue::Work work = queue.next();
      if (!work.runs.empty()) {
        message.push_back(static_cast<std::int64_t>(work.first));
        for (const std::size_t i : work.runs) message.push_back(static_cast<std::int64_t>(i));
      }
    }
    MPI_Send(message.data(), static_cast<int>(message.size()), MPI_INT64_T, status->MPI_SOURCE, kWorkTag, MPI_COMM_WORLD);
    if (message.empty()) --active;
  }
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
  WorkerTally tally;
  bool error = false;
  interrupted = false;
  auto previous_handler = std::signal(SIGINT, on_interrupt);
  const auto start = std::chrono::steady_clock::now();
  const auto report = [&](const std::exception& e) {
    std::cerr << fmt::format("diffode sweep: {}{}\n", ranks.size() > 1 ? fmt::format("rank {}: ", ranks.rank()) : "", e.what());
    error = true;
  };
  // Rank 0 alone reads what is finished and groups the rest; the others learn their runs by asking.
  // What fails on rank 0 leaves it nothing to hand out, but it still takes part in every collective
  // call and answers every request, so that no rank waits forever.
  std::vector<Group> groups;
  std::size_t total = 0;
  if (lead) {
    try {
      if (options.fresh) {
        std::filesystem::remove(plan.output);
        store.remove_parts();
      }
      const auto finished = store.finished(!options.retry_failed);
      std::vector<std::size_t> left;
      for (std::size_t i = 0; i < plan.runs.size(); ++i)
        if (!finished.contains(plan.runs[i].id)) left.push_back(i);
      std::cout << fmt::format("diffode sweep {}: {} runs, {} already done, {} to run{} -> {}\n", plan.name, plan.runs.size(),
                               plan.runs.size() - left.size(), left.size(),
                               ranks.size() > 1 ? fmt::format(" on {} ranks", ranks.size()) : "", plan.output)
                << std::flush;
      groups = make_groups(plan, left);
      total = options.max_runs >= 0 ? std::min(left.size(), static_cast<std::size_t>(options.max_runs)) : left.size();
    } catch (const std::exception& e) {
      report(e);
      groups.clear();
      total = 0;
    }
  }
  if (ranks.size() > 1) {
    std::int64_t shared_total = static_cast<std::int64_t>(total);
    MPI_Request request;
    MPI_Ibcast(&shared_total, 1, MPI_INT64_T, 0, MPI_COMM_WORLD, &request);
    Ranks::wait(request);
    total = static_cast<std::size_t>(shared_total);
  }
  if (lead) {
    WorkQueue queue(std::move(groups), options.max_runs);
    const auto local = [&] { return queue.next(); };
    if (ranks.size() == 1) {
      tally = work(plan, store, ranks, options, provenance, total, local);
    } else if (ranks.funneled()) {
      // Rank 0 runs runs too, on a thread beside the dispatcher (which alone calls MPI).
      std::thread runner([&] { tally = work(plan, store, ranks, options, provenance, total, local); });
      dispatch(queue, ranks);
      runner.join();
    } else {
      dispatch(queue, ranks);  // an MPI without thread support: rank 0 only hands out
    }
  } else {
    bool told_no_more = false;
    tally = work(plan, store, ranks, options, provenance, total, [&] {
      WorkQueue::Work w = ask_rank0(interrupted ? kInterrupted : kWant);
      told_no_more = w.runs.empty();
      return w;
    });
    // Stopped by an interrupt or an error while rank 0 still had work: say so, once.
    if (!told_no_more) ask_rank0(interrupted ? kInterrupted : kLeaving);
  }
  std::signal(SIGINT, previous_handler);
  if (ranks.size() > 1)
    std::cout << fmt::format("rank {}: {} runs in {} groups, busy {:.1f} s of {:.1f} s\n", ranks.rank(), tally.runs, tally.groups, tally.busy,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count())
              << std::flush;
  const bool stopped = ranks.max(interrupted ? 1 : 0) > 0;
  ranks.barrier();
  int status = error || tally.error ? 1 : 0;
  if (lead && !assemble(plan, store, provenance)) status = 1;
  const int any_failed = ranks.max(tally.failed != 0 || tally.error || error ? 1 : 0);
  if (stopped) return 130;
  return std::max(status, any_failed);
}

}  // namespace diffode
