// The command-line commands as functions (the tests call them as the binary does): each reads its
// config, runs, writes, and returns the exit code (docs/config.md lists every key).
//   0    success
//   1    a run failed numerically (recorded in the results file; the reason also on stderr)
//   2    bad input: config, data file, output path or command line (nothing written; an earlier
//        output is left as it was), found before any work, or an output that could not take the
//        results after all (the device filled meanwhile)
//   130  interrupted (sweep: finished runs are kept)
#pragma once

#include "experiments/run/provenance.hpp"

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace diffode {

// The provenance of a run, collected only once the input has been accepted (it runs git: a refused
// input costs nothing), so its start time is the run's. A Provenance given as it is works too.
using ProvenanceSource = std::function<Provenance()>;

// `diffode sample CONFIG.toml`: one sampler on one problem into one HDF5 file. Output: /samples
// (N x D, x at the end), /initial (x_T), /grid/t, /grid/sigma, /trajectory/step_XXXX with
// [run] save_trajectory; root attributes config, sampler, status, failure, nfe, seed and the provenance.
int run_sample_command(const std::filesystem::path& config, const ProvenanceSource& provenance, int threads = 1);
inline int run_sample_command(const std::filesystem::path& config, const Provenance& provenance, int threads = 1) {
  return run_sample_command(config, ProvenanceSource([provenance] { return provenance; }), threads);
}
std::string sample_config_help();

// `diffode likelihood CONFIG.toml`: log-likelihoods by the probability-flow ODE (run/likelihood.hpp).
int run_likelihood_command(const std::filesystem::path& config, const ProvenanceSource& provenance, int threads = 1);
inline int run_likelihood_command(const std::filesystem::path& config, const Provenance& provenance, int threads = 1) {
  return run_likelihood_command(config, ProvenanceSource([provenance] { return provenance; }), threads);
}
std::string likelihood_config_help();

struct SweepOptions {
  int threads = 1;                    // threads per run (results do not depend on it)
  std::optional<std::string> output;  // overrides [sweep] output
  bool fresh = false;                 // discard earlier results of this output instead of resuming
  bool retry_failed = false;          // run again the runs stored as failed (e.g. after a fix)
  bool dry_run = false;               // validate and list the runs, run nothing
  int max_runs = -1;                  // stop after this many runs of this invocation (testing resume)
};
// `diffode sweep CONFIG.toml` (sweep/driver.hpp): 0 every run of this invocation ok, 1 one failed
// (recorded; the sweep went on), 2 bad config (nothing written), 130 interrupted.
int run_sweep_command(const std::filesystem::path& config, const ProvenanceSource& provenance, const SweepOptions& options);
inline int run_sweep_command(const std::filesystem::path& config, const Provenance& provenance, const SweepOptions& options) {
  return run_sweep_command(config, ProvenanceSource([provenance] { return provenance; }), options);
}
std::string sweep_config_help();

// `diffode tune-grid CONFIG.toml` (run/tune_grid.hpp): the sigma grid that minimises a sampler's error
// at an NFE budget, tuned on training noises, scored on held-out ones, written to HDF5.
int run_tune_grid_command(const std::filesystem::path& config, const Provenance& provenance, int threads = 1);
std::string tune_grid_config_help();

// `diffode train CONFIG.toml` (run/training.hpp): denoising score matching of a network through the
// LibTorch backend; the checkpoint and an HDF5 history. 0 done, 1 failed, 2 bad input, 130 interrupted.
struct TrainOptions {
  int threads = 1;      // LibTorch's intra-op threads (part of what a bitwise resume needs unchanged)
  bool resume = false;  // continue from [output] file
};
int run_train_command(const std::filesystem::path& config, const ProvenanceSource& provenance, const TrainOptions& options);
std::string train_config_help();

// `diffode orders`: the orders tables into out_dir (orders.md, orders.csv).
struct OrdersOptions;
int run_orders_command(const OrdersOptions& options, const std::filesystem::path& out_dir, const std::string& command);

// `diffode fd A.h5 [B.h5]`: the Frechet distance between the rows of two files (run/frechet.hpp),
// each a sample file's dataset or cached statistics; --save-stats writes each input's statistics.
struct FdOptions {
  std::vector<std::string> inputs;
  std::string dataset = "samples";
  bool dataset_given = false;           // --dataset was given (refused for a statistics file)
  std::vector<std::string> save_stats;  // one path per input
  long long block_rows = 4096;
  int threads = 1;
  // --features: raw (pixels), classifier:FILE or torchscript:FILE (run/features.hpp).
  std::string features = "raw";
  bool features_given = false;
  std::string input_shape;           // --input-shape C,H,W ("" : the network's own, or the rows as stored)
  std::string input_scale;           // --input-scale a,b: the network is handed a x + b ("": 1,0)
  std::string feature_dtype = "float32";
};
int run_fd_command(const FdOptions& options);
std::string fd_help();

// `diffode classify SAMPLES.h5 --classifier FILE`: the fraction of each requested class (the
// integer dataset `labels`) that the classifier assigns to it, or, without labels, the share of
// rows it assigns to each class; optionally written to HDF5.
struct ClassifyOptions {
  std::string input;  // a sample file or fashion_mnist:test / fashion_mnist:train
  std::string classifier;
  std::string dataset = "samples";
  std::string labels = "labels";
  std::string output;  // "" : print only
  int threads = 1;
};
int run_classify_command(const ClassifyOptions& options);
std::string classify_help();

// `diffode grid SAMPLES.h5 OUT.png`: a PNG grid of the rows as images (run/png.hpp).
struct GridOptions {
  std::string input, output;
  std::string dataset = "samples";
  std::string labels = "labels";
  bool rows_by_label = false;  // one row of the grid per class, from the labels
  long long columns = 10;
  long long count = 100;       // images without --rows-by-label (the first rows)
  std::string image;           // C,H,W; "" : 1,28,28 (or the data's own)
  long long padding = 2;
};
int run_grid_command(const GridOptions& options);
std::string grid_help();

// [output] of diffode likelihood.
struct TableSchema;
const TableSchema& likelihood_output_schema();

// docs/config.md: every table of every command and every sampler's options, from the schemas.
std::string config_reference_markdown();

}  // namespace diffode
