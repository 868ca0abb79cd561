// `diffode likelihood CONFIG.toml`: read [process], [model], [data], [likelihood], [output]; solve;
// write per-point results and a summary (layout in likelihood_config_help()).
#include "experiments/cli/commands.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/likelihood.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/readers.hpp"

#include <fmt/format.h>

#include <iostream>

namespace diffode {
namespace {

const TableSchema& output_schema() {
  static const TableSchema s{"output", "where the results go", {string_key("file", "the results file (HDF5)")}};
  return s;
}

struct LikelihoodRun {
  std::unique_ptr<Process> process;
  ModelSource model;
  // The exact mixture: the model itself, or a network's ground truth; null for a network without one
  // (then nothing exact is written).
  const GaussianMixture* mixture = nullptr;
  LikelihoodSetup setup;
  LikelihoodData data;
  std::string config_text, output;
  std::string output_key;  // "file:line: output.file", for an error writing the results
};

// Everything is read and checked, the data included, before any work: a bad config writes nothing.
LikelihoodRun read_likelihood_run(const std::filesystem::path& config_path) {
  LikelihoodRun run;
  const Config config(config_path);
  run.config_text = config.text();
  ConfigTable root = config.root();
  reject_undeclared_keys(root, {&process_schema(), &model_schema(), &data_schema(), &likelihood_schema(), &output_schema()});
  run.process = read_process(root.table("process"));
  run.model = read_model(root.table("model"), root.table("process"));
  run.mixture = run.model.mixture.get();
  const Index dims = run.model.network ? run.model.network->dims() : run.mixture->dims();
  run.data = read_likelihood_data(root.table("data"), *run.process, run.mixture, dims);
  run.setup = read_likelihood_setup(root.table("likelihood"), dims, &run.model);
  check_likelihood_process(root.table("likelihood"), run.setup, *run.process);
  ConfigTable out = root.table("output", output_schema());
  run.output = out.string("file");
  out.finish();
  root.finish();
  // Per point: the data, x_T and a dozen result columns.
  check_output_path(out, "file", run.output,
                    8.0 * static_cast<double>(run.data.x.rows()) * (2.0 * static_cast<double>(run.data.x.cols()) + 12.0) + (1 << 16));
  run.output_key = out.where("file");
  return run;
}

// The exact mixture's log p_{t_min} at the data (model space), or empty without a mixture.
PerSample exact_model_log_p(const LikelihoodRun& run) {
  if (run.mixture == nullptr) return {};
  const Index n = run.data.x.rows();
  const double t_min = run.process->t_min();
  return run.mixture->log_prob(run.data.x, PerSample::Constant(n, run.process->alpha(t_min)), PerSample::Constant(n, run.process->sigma(t_min)));
}

// "the 2-D mixture" or the network's description.
std::string model_text(const LikelihoodRun& run, Index dims) {
  if (!run.model.network) return fmt::format("the {}-D mixture", dims);
  return fmt::format("{}{}", run.model.network->description(), run.mixture ? fmt::format(" (ground truth: a {}-D mixture)", dims) : "");
}

void write_summary(Hdf5File& h5, const LikelihoodRun& run, const LikelihoodResult& r, const PerSample& log_p_data, const PerSample& exact_data,
                   const PerSample& bits) {
  const Index n = run.data.x.rows(), dims = run.data.x.cols();
  const PerSample exact_model = exact_model_log_p(run);
  // Without an exact mixture the figures against it are left out; the rest stay.
  const LikelihoodMetrics m = likelihood_metrics(r, exact_model.size() == n ? exact_model : r.log_p, dims);
  // The summary: each figure an attribute of /summary, and all of them also as one vector
  // /summary/values named by its attribute `names`, for readers that prefer a dataset.
  std::vector<std::pair<std::string, double>> summary = {
      {"points", static_cast<double>(n)},
      {"dims", static_cast<double>(dims)},
      {"mean_log_p", log_p_data.mean()},
      {"mean_log_p_std_error", standard_error_of_mean(log_p_data)},
      {"mean_bits_per_dim", bits.mean()},
      {"mean_bits_per_dim_std_error", standard_error_of_mean(bits)}};
  if (run.mixture != nullptr) {
    summary.insert(summary.end(), {{"mean_exact_log_p", exact_data.mean()},
                                   {"ll_error", m.ll_error},
                                   {"ll_bias", m.ll_bias}});
  }
  summary.emplace_back("ll_std_error", m.ll_std_error);
  if (run.mixture != nullptr) summary.emplace_back("max_abs_error_per_dim", (log_p_data - exact_data).abs().maxCoeff() / static_cast<double>(dims));
  summary.insert(summary.end(), {{"nfe_mean", m.nfe_mean},
                                 {"nfe_max", m.nfe_max},
                                 {"batched_nfe", static_cast<double>(r.stats.nfe)},
                                 {"rejected", static_cast<double>(r.stats.rejected)}});
  std::vector<double> values;
  std::string names;
  for (const auto& [name, value] : summary) {
    values.push_back(value);
    names += (names.empty() ? "" : ",") + name;
  }
  h5.write_vector("summary/values", values);
  h5.write_attribute("/summary/values", "names", names);
  for (const auto& [name, value] : summary) h5.write_attribute("/summary", name, value);
  h5.write_attribute("/summary", "solver", run.setup.solver);
}

void write_likelihood_file(Hdf5File& h5, const LikelihoodRun& run, const LikelihoodResult& r, const Provenance& provenance) {
  const Index n = run.data.x.rows(), dims = run.data.x.cols();
  const DataTransform& transform = run.data.transform;
  write_provenance(h5, provenance);
  h5.write_attribute("/", "config", run.config_text);
  h5.write_attribute("/", "status", r.stats.failed ? "failed" : "ok");
  h5.write_attribute("/", "failure", r.stats.failure);
  h5.write_attribute("/", "data", run.data.description);
  h5.write_attribute("/", "model", model_text(run, dims));
  const auto column = [](const PerSample& v) { return std::vector<double>(v.data(), v.data() + v.size()); };
  const auto counts = [](const std::vector<Index>& v) { return std::vector<double>(v.begin(), v.end()); };
  // The exact mixture's log p_{t_min}, when there is one: the model's own (the difference is the
  // error of the solve and, with prior = "gaussian", of the prior), or a network's ground truth
  // (the difference adds the network's own error).
  const PerSample exact_model = exact_model_log_p(run);
  const PerSample exact_data = run.mixture ? transform.data_log_p(exact_model, dims) : PerSample();
  if (run.mixture) h5.write_vector("exact_log_p", column(exact_data));
  if (r.log_p.size() != n) return;  // the solve failed before any result: the file records why
  const PerSample log_p_data = transform.data_log_p(r.log_p, dims);
  const PerSample bits = transform.bits_per_dim(r.log_p, dims);
  h5.write_vector("log_p", column(log_p_data));
  h5.write_vector("std_error", column(r.std_error));
  h5.write_vector("nfe", counts(r.nfe));
  h5.write_vector("accepted", counts(r.accepted));
  h5.write_vector("rejected", counts(r.rejected));
  h5.write_vector("bits_per_dim", column(bits));
  h5.write_vector("prior_log_p", column(r.prior_log_p));
  h5.write_vector("delta_log_p", column(r.delta_log_p));
  if (run.mixture) h5.write_vector("error", column(log_p_data - exact_data));
  h5.write_matrix("x_T", r.x_T);
  write_summary(h5, run, r, log_p_data, exact_data, bits);
}

void print_result(const LikelihoodRun& run, const LikelihoodResult& r) {
  const Index dims = run.data.x.cols();
  const LikelihoodSetup& setup = run.setup;
  const PerSample exact_model = exact_model_log_p(run);
  const PerSample log_p_data = run.data.transform.data_log_p(r.log_p, dims);
  const PerSample bits = run.data.transform.bits_per_dim(r.log_p, dims);
  const LikelihoodMetrics m = likelihood_metrics(r, run.mixture ? exact_model : r.log_p, dims);
  std::string exact = "no exact mixture";
  if (run.mixture) {
    const PerSample exact_data = run.data.transform.data_log_p(exact_model, dims);
    const PerSample exact_bits = run.data.transform.bits_per_dim(exact_model, dims);
    exact = fmt::format("exact {:.6g} ({:.6g} bits/dim); error {:.3e} nats/dim mean |.|, bias {:.3e}", exact_data.mean(), exact_bits.mean(),
                        m.ll_error, m.ll_bias);
  }
  std::cout << fmt::format(
      "likelihood of {} under {} on {}, {} ({}, {} divergence, prior {}): mean log p {:.6g} +- {:.3g} nats "
      "({:.6g} +- {:.3g} bits/dim); {}; Hutchinson se {:.3e} nats/dim; NFE per point mean {:.1f}, max {:.0f}; {} -> {}\n",
      run.data.description, run.process->name(), model_text(run, dims),
      setup.adaptive() ? fmt::format("{} rtol {:g} atol {:g}", setup.solver, setup.options.adaptive.rtol, setup.options.adaptive.atol)
                               : fmt::format("{} with {} steps", setup.solver, setup.steps),
      setup.options.time == LikelihoodTime::process     ? std::string("in t")
      : setup.options.time == LikelihoodTime::log_sigma ? std::string("in log sigma")
                                                        : fmt::format("in sigma^(1/{:g})", setup.options.rho),
      setup.options.divergence == DivergenceMethod::exact       ? "exact"
      : setup.options.divergence == DivergenceMethod::hutchpp ? "Hutch++"
                                                              : "Hutchinson",
      setup.prior == LikelihoodPrior::exact ? "exact p_T" : "Gaussian", log_p_data.mean(), standard_error_of_mean(log_p_data), bits.mean(),
      standard_error_of_mean(bits), exact, m.ll_std_error, m.nfe_mean, m.nfe_max, r.stats.failed ? "FAILED: " + r.stats.failure : "ok",
      run.output);
}

}  // namespace

int run_likelihood_command(const std::filesystem::path& config_path, const ProvenanceSource& provenance_source, int threads) {
  LikelihoodRun run;
  try {
    run = read_likelihood_run(config_path);
  } catch (const ConfigError& e) {
    std::cerr << "diffode likelihood: " << e.what() << "\n";
    return 2;
  }
  const Provenance provenance = provenance_source();
  LikelihoodResult r;
  try {
    r = evaluate_log_likelihood(run.setup, *run.process, run.model, run.data.x, std::max(1, threads));
  } catch (const std::exception& e) {
    r = {};
    r.stats.failed = true;
    r.stats.failure = std::string("exception: ") + e.what();
  }
  try {
    write_atomically(run.output, [&](Hdf5File& h5) { write_likelihood_file(h5, run, r, provenance); });
  } catch (const std::exception& e) {
    // The output checked writable but could not take the file: still the output's fault, and
    // nothing is left behind.
    std::cerr << fmt::format("diffode likelihood: {}: cannot write the results: {}\n", run.output_key, e.what());
    return 2;
  }
  if (r.log_p.size() != run.data.x.rows()) {
    std::cerr << fmt::format("diffode likelihood: FAILED: {} ({} written without results)\n", r.stats.failure, run.output);
    return 1;
  }
  print_result(run, r);
  if (r.stats.failed) std::cerr << fmt::format("diffode likelihood: the solve failed: {}\n", r.stats.failure);
  return r.stats.failed ? 1 : 0;
}

std::string likelihood_config_help() {
  return "Config keys (unknown keys, wrong types and impossible values are errors naming file, line and key; exit 2,\n"
         "nothing written). Every key: docs/config.md.\n" +
         schema_help({&process_schema(), &model_schema(), &data_schema(), &likelihood_schema(), &output_schema()}) +
         "Output HDF5, per point: log_p (data space, nats), std_error, nfe, accepted, rejected, bits_per_dim, prior_log_p,\n"
         "delta_log_p, exact_log_p, error (log_p - exact_log_p), x_T; /summary attributes mean_log_p, mean_log_p_std_error,\n"
         "mean_bits_per_dim, mean_bits_per_dim_std_error, mean_exact_log_p, ll_error, ll_bias, ll_std_error (nats/dim),\n"
         "max_abs_error_per_dim, nfe_mean, nfe_max; root attributes config, status, failure, data, model and the provenance.\n"
         "A network ([model] kind = \"network\" or \"torchscript\") takes its divergence by autograd; the exact figures\n"
         "(exact_log_p, error, ll_error, ...) are those of its [model.ground_truth], and are left out without one.\n"
         "Exit: 0 done, 1 the solve failed for some point (recorded in the file), 2 bad input (nothing written; an earlier\n"
         "file at the output is left as it was).";
}

const TableSchema& likelihood_output_schema() { return output_schema(); }

}  // namespace diffode
