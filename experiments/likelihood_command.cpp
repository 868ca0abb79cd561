#include "experiments/likelihood_command.hpp"

#include "experiments/hdf5_file.hpp"
#include "experiments/parallel.hpp"
#include "experiments/provenance.hpp"
#include "experiments/readers.hpp"
#include "solvers/ode/euler.hpp"
#include "solvers/ode/heun.hpp"
#include "solvers/ode/midpoint.hpp"
#include "solvers/ode/rk4.hpp"

#include <Random123/philox.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

namespace diffode {

LikelihoodSetup read_likelihood_setup(ConfigTable t) {
  LikelihoodSetup s;
  s.solver = t.string("solver", "dopri5", {"dopri5", "euler", "heun", "midpoint", "rk4"});
  const bool adaptive = s.solver == "dopri5";
  if (adaptive) {
    if (t.has("steps")) t.fail("steps", "only for the fixed-step solvers (dopri5 chooses its own steps from rtol and atol)");
    for (const char* key : {"rtol", "atol"}) {
      const double value = t.number(key, 1e-5);
      if (!(value > 0) || !std::isfinite(value)) t.fail(key, fmt::format("must be a finite number > 0, got {}", value));
      (std::string_view(key) == "rtol" ? s.options.adaptive.rtol : s.options.adaptive.atol) = value;
    }
    // per_point: each point its own steps (its value then does not depend on its batch); batch:
    // the largest error ratio of the block sets one step for all its points, as a solver that
    // sees the batch as one ODE would (the literature's scipy RK45 setting, up to its RMS norm).
    s.options.adaptive.norm =
        t.string("error_norm", "per_point", {"per_point", "batch"}) == "per_point" ? ErrorNorm::per_sample : ErrorNorm::batch;
  } else {
    for (const char* key : {"rtol", "atol", "error_norm"})
      if (t.has(key)) t.fail(key, fmt::format("only for solver = \"dopri5\" (the fixed-step solver '{}' takes steps)", s.solver));
    if (!t.has("steps"))
      t.fail("steps", fmt::format("required for the fixed-step solver '{}' (the number of uniform steps in the time variable)", s.solver));
    const auto steps = t.integer("steps");
    if (steps < 1 || steps > 1000000) t.fail("steps", fmt::format("must lie in 1..1000000, got {}", steps));
    s.steps = static_cast<int>(steps);
  }
  s.options.time = t.string("time", "process", {"process", "log_sigma"}) == "process" ? LikelihoodTime::process : LikelihoodTime::log_sigma;

  const bool hutchinson = t.string("divergence", "exact", {"exact", "hutchinson"}) == "hutchinson";
  s.options.divergence = hutchinson ? DivergenceMethod::hutchinson : DivergenceMethod::exact;
  if (!hutchinson) {
    for (const char* key : {"probes", "probe", "probe_seed"})
      if (t.has(key)) t.fail(key, "only with divergence = \"hutchinson\"");
  } else {
    const std::string law = t.string("probe", "rademacher", {"rademacher", "gaussian", "basis"});
    s.options.hutchinson.law = law == "rademacher" ? ProbeLaw::rademacher : law == "gaussian" ? ProbeLaw::gaussian : ProbeLaw::basis;
    if (s.options.hutchinson.law == ProbeLaw::basis) {
      if (t.has("probes")) t.fail("probes", "the basis probes are the D scaled unit vectors: give no count");
    } else {
      const auto probes = t.integer("probes", 1);
      if (probes < 1 || probes > 4096) t.fail("probes", fmt::format("must lie in 1..4096, got {}", probes));
      s.options.hutchinson.probes = static_cast<Index>(probes);
    }
    const auto seed = t.integer("probe_seed", 0);
    if (seed < 0) t.fail("probe_seed", fmt::format("must be >= 0, got {}", seed));
    s.options.hutchinson.seed = static_cast<std::uint64_t>(seed);
  }
  s.prior = t.string("prior", "exact", {"exact", "gaussian"}) == "exact" ? LikelihoodPrior::exact : LikelihoodPrior::gaussian;
  const auto block_rows = t.integer("block_rows", 256);
  if (block_rows < 1) t.fail("block_rows", fmt::format("must be >= 1, got {}", block_rows));
  s.block_rows = static_cast<Index>(block_rows);
  t.finish();
  return s;
}

namespace {

// The fixed-step solvers' grid: n uniform steps in the solve's own variable, with its ends computed
// by the same expressions as AugmentedProbabilityFlow::start()/end() so that they match bit for bit.
std::vector<double> uniform_grid(const Process& process, LikelihoodTime time, int steps) {
  const auto variable = [&](double t) { return time == LikelihoodTime::process ? t : -process.lambda(t); };
  const double start = variable(process.t_min()), end = variable(process.t_max());
  std::vector<double> grid(static_cast<std::size_t>(steps) + 1);
  for (int i = 0; i <= steps; ++i) grid[i] = start + (end - start) * (static_cast<double>(i) / steps);
  grid.front() = start;
  grid.back() = end;
  return grid;
}

LikelihoodResult solve_block(const LikelihoodSetup& setup, const Process& process, const GaussianMixture& mixture,
                             const Batch& x, Index first_point) {
  const MixtureDivergence source(mixture);
  LikelihoodOptions options = setup.options;
  options.first_point += first_point;
  LikelihoodResult r;
  if (setup.solver == "dopri5") {
    r = log_likelihood(process, source, x, options);
  } else {
    const std::vector<double> grid = uniform_grid(process, options.time, setup.steps);
    auto solve = [&](auto stepper) { return log_likelihood_on_grid(stepper, process, source, x, grid, options); };
    if (setup.solver == "euler") r = solve(Euler<Batch>{});
    else if (setup.solver == "heun") r = solve(Heun<Batch>{});
    else if (setup.solver == "midpoint") r = solve(Midpoint<Batch>{});
    else if (setup.solver == "rk4") r = solve(Rk4<Batch>{});
    else throw std::invalid_argument(fmt::format("likelihood: unknown solver '{}'", setup.solver));
  }
  if (setup.prior == LikelihoodPrior::exact) {
    const Index n = x.rows();
    const double t = process.t_max();
    r.prior_log_p = mixture.log_prob(r.x_T, PerSample::Constant(n, process.alpha(t)), PerSample::Constant(n, process.sigma(t)));
    r.log_p = r.with_prior(r.prior_log_p);
  }
  return r;
}

double mean_of(const std::vector<Index>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

// The standard error of the mean of v over its entries (sample standard deviation / sqrt(n)).
double standard_error_of_mean(const PerSample& v) {
  const Index n = v.size();
  if (n < 2) return 0.0;
  return std::sqrt((v - v.mean()).square().sum() / static_cast<double>(n - 1) / static_cast<double>(n));
}

// Uniform dequantization noise u ~ U[0, 1)^D, row i from Philox4x32-10 (Salmon et al. 2011) keyed
// by the seed with counter (column block, global row): the same whatever the batch or thread count.
// The key's high word is mixed with a constant of this file so these draws stay apart from the
// mixtures' and probes' streams under the same seed.
Batch dequantization_noise(Index n, Index dims, std::uint64_t seed) {
  using Philox = r123::Philox4x32;
  constexpr std::uint32_t kDequantizationKey = 0x64657175;  // "dequ"
  const Philox::key_type key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32) ^ kDequantizationKey}};
  Batch u(n, dims);
  for (Index i = 0; i < n; ++i) {
    const auto row = static_cast<std::uint64_t>(i);
    for (Index d = 0, block = 0; d < dims; ++block) {
      const Philox::ctr_type ctr = {{static_cast<std::uint32_t>(block), 0u, static_cast<std::uint32_t>(row), static_cast<std::uint32_t>(row >> 32)}};
      const Philox::ctr_type r = Philox{}(ctr, key);
      // Two 53-bit uniforms per 128 random bits.
      for (int pair = 0; pair < 2 && d < dims; ++pair, ++d) {
        const std::uint64_t bits = (std::uint64_t{r[2 * pair]} << 32) | r[2 * pair + 1];
        u(i, d) = static_cast<double>(bits >> 11) * 0x1.0p-53;
      }
    }
  }
  return u;
}

}  // namespace

LikelihoodResult evaluate_log_likelihood(const LikelihoodSetup& setup, const Process& process, const GaussianMixture& mixture,
                                         const Batch& points, int threads) {
  const Index n = points.rows(), dims = points.cols();
  if (dims != mixture.dims())
    throw std::invalid_argument(fmt::format("evaluate_log_likelihood: points have {} columns, the model {} dims", dims, mixture.dims()));
  const std::vector<BlockRange> blocks = make_blocks(n, setup.block_rows);
  std::vector<LikelihoodResult> parts(blocks.size());
  for_each_block(blocks, threads, [&](const BlockRange& b) {
    parts[b.index] = solve_block(setup, process, mixture, points.middleRows(b.begin, b.rows()), b.begin);
  });

  LikelihoodResult r;
  const Index integrals = parts.empty() ? 1 : parts.front().probe_integrals.cols();
  r.x_T.resize(n, dims);
  r.probe_integrals.resize(n, integrals);
  for (PerSample* v : {&r.delta_log_p, &r.prior_log_p, &r.log_p, &r.std_error}) v->resize(n);
  r.nfe.reserve(n), r.accepted.reserve(n), r.rejected.reserve(n);
  // Blocks in row order: the merged record is the same whichever thread solved which block.
  for (const BlockRange& b : blocks) {
    const LikelihoodResult& p = parts[b.index];
    r.x_T.middleRows(b.begin, b.rows()) = p.x_T;
    r.probe_integrals.middleRows(b.begin, b.rows()) = p.probe_integrals;
    r.delta_log_p.segment(b.begin, b.rows()) = p.delta_log_p;
    r.prior_log_p.segment(b.begin, b.rows()) = p.prior_log_p;
    r.log_p.segment(b.begin, b.rows()) = p.log_p;
    r.std_error.segment(b.begin, b.rows()) = p.std_error;
    r.nfe.insert(r.nfe.end(), p.nfe.begin(), p.nfe.end());
    r.accepted.insert(r.accepted.end(), p.accepted.begin(), p.accepted.end());
    r.rejected.insert(r.rejected.end(), p.rejected.begin(), p.rejected.end());
    r.stats.steps = std::max(r.stats.steps, p.stats.steps);
    r.stats.rejected += p.stats.rejected;
    r.stats.nfe += p.stats.nfe;
    if (p.stats.failed && !r.stats.failed) {
      r.stats.failed = true;
      r.stats.failure = fmt::format("block of rows {}..{}: {}", b.begin, b.end - 1, p.stats.failure);
      r.stats.failed_step = p.stats.failed_step;
      r.stats.failed_time = p.stats.failed_time;
    }
  }
  return r;
}

LikelihoodMetrics likelihood_metrics(const LikelihoodResult& result, const PerSample& exact_log_p, Index dims) {
  LikelihoodMetrics m;
  const Index n = result.log_p.size();
  if (n == 0) return m;
  if (exact_log_p.size() != n) throw std::invalid_argument("likelihood_metrics: exact_log_p has another length than the result");
  const double d = static_cast<double>(dims);
  const PerSample error = (result.log_p - exact_log_p) / d;
  m.ll_error = error.abs().mean();
  m.ll_bias = error.mean();
  m.ll_std_error = result.std_error.mean() / d;
  m.nfe_mean = mean_of(result.nfe);
  m.nfe_max = result.nfe.empty() ? 0.0 : static_cast<double>(*std::max_element(result.nfe.begin(), result.nfe.end()));
  m.mean_log_p = result.log_p.mean();
  m.mean_exact_log_p = exact_log_p.mean();
  return m;
}

int run_likelihood_command(const std::filesystem::path& config_path, const Provenance& provenance, int threads) {
  // Everything is read and checked, the data included, before any work: a bad config writes nothing.
  std::unique_ptr<Process> process;
  std::unique_ptr<GaussianMixture> mixture;
  LikelihoodSetup setup;
  DataTransform transform;
  Batch x;  // model space, at t_min
  std::string config_text, output, data_description;
  try {
    const Config config(config_path);
    config_text = config.text();
    ConfigTable root = config.root();
    process = read_process(root.table("process"));
    mixture = std::make_unique<GaussianMixture>(read_mixture(root.table("model")));
    const Index dims = mixture->dims();

    ConfigTable data = root.table("data");
    const std::string source = data.string("source", "mixture", {"mixture", "hdf5"});
    const auto seed = data.integer("seed", 0);
    if (seed < 0) data.fail("seed", fmt::format("must be >= 0, got {}", seed));
    if (source == "mixture") {
      for (const char* key : {"file", "dataset", "scale", "offset", "bin_width"})
        if (data.has(key)) data.fail(key, "only with source = \"hdf5\" (the mixture's draws are already in model space)");
      const auto points = data.integer("points", 256);
      if (points < 1) data.fail("points", fmt::format("must be >= 1, got {}", points));
      const double t = process->t_min();
      x = mixture->sample_marginal(process->alpha(t), process->sigma(t), points, static_cast<std::uint64_t>(seed));
      data_description = fmt::format("{} draws of the model's p_t_min (seed {})", points, seed);
    } else {
      if (data.has("points")) data.fail("points", "only with source = \"mixture\" (an HDF5 data set is used whole)");
      const std::string file = data.string("file"), dataset = data.string("dataset");
      transform.scale = data.number("scale", 1.0);
      transform.offset = data.number("offset", 0.0);
      transform.bin_width = data.number("bin_width", 0.0);
      if (!(transform.scale > 0) || !std::isfinite(transform.scale)) data.fail("scale", fmt::format("must be a finite number > 0, got {}", transform.scale));
      if (!std::isfinite(transform.offset)) data.fail("offset", "must be finite");
      if (!(transform.bin_width >= 0) || !std::isfinite(transform.bin_width))
        data.fail("bin_width", fmt::format("must be a finite number >= 0 (0: continuous data), got {}", transform.bin_width));
      if (!std::filesystem::exists(file)) data.fail("file", fmt::format("no such file: {}", file));
      Batch y;
      try {
        const Hdf5File h5(file, Hdf5File::Mode::read);
        if (!h5.has(dataset)) data.fail("dataset", fmt::format("{}: no dataset '{}'", file, dataset));
        y = h5.read_matrix(dataset);
      } catch (const ConfigError&) {
        throw;
      } catch (const std::exception& e) {
        data.fail("file", e.what());
      }
      if (y.cols() != dims)
        data.fail("dataset", fmt::format("{}:{} is {} x {}; the model has {} dimensions", file, dataset, y.rows(), y.cols(), dims));
      if (y.rows() < 1) data.fail("dataset", fmt::format("{}:{} has no rows", file, dataset));
      if (!y.isFinite().all()) data.fail("dataset", fmt::format("{}:{} holds non-finite values", file, dataset));
      // Uniform dequantization (DataTransform's comment): y + bin_width u, u ~ U[0,1)^D.
      if (transform.bin_width > 0) y += transform.bin_width * dequantization_noise(y.rows(), dims, static_cast<std::uint64_t>(seed));
      x = transform.to_model(y);
      data_description = fmt::format("{} points of {}:{}", y.rows(), file, dataset);
    }
    data.finish();

    setup = read_likelihood_setup(root.table("likelihood"));
    ConfigTable out = root.table("output");
    output = out.string("file");
    if (output.empty()) out.fail("file", "must name a file");
    out.finish();
    root.finish();
  } catch (const ConfigError& e) {
    std::cerr << "diffode likelihood: " << e.what() << "\n";
    return 2;
  }

  const Index n = x.rows(), dims = x.cols();
  const double t_min = process->t_min();
  LikelihoodResult r;
  try {
    r = evaluate_log_likelihood(setup, *process, *mixture, x, std::max(1, threads));
  } catch (const std::exception& e) {
    r = {};
    r.stats.failed = true;
    r.stats.failure = std::string("exception: ") + e.what();
  }

  // The model is the exact mixture: its log p_{t_min} is known, and the difference is the error of
  // the solve (and, with prior = "gaussian", of the prior).
  const PerSample exact_model = mixture->log_prob(x, PerSample::Constant(n, process->alpha(t_min)), PerSample::Constant(n, process->sigma(t_min)));
  const bool solved = r.log_p.size() == n;

  // An output that cannot be written (a folder without permission, a full disk) is reported, not thrown.
  try {
    Hdf5File h5(output, Hdf5File::Mode::create);
    write_provenance(h5, provenance);
    h5.write_attribute("/", "config", config_text);
    h5.write_attribute("/", "status", r.stats.failed ? "failed" : "ok");
    h5.write_attribute("/", "failure", r.stats.failure);
    h5.write_attribute("/", "data", data_description);
    const auto column = [](const PerSample& v) { return std::vector<double>(v.data(), v.data() + v.size()); };
    const auto counts = [](const std::vector<Index>& v) { return std::vector<double>(v.begin(), v.end()); };
    const PerSample exact_data = transform.data_log_p(exact_model, dims);
    h5.write_vector("exact_log_p", column(exact_data));
    if (!solved) {
      std::cerr << fmt::format("diffode likelihood: FAILED: {} ({} written without results)\n", r.stats.failure, output);
      return 1;
    }
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
    h5.write_vector("error", column(log_p_data - exact_data));
    h5.write_matrix("x_T", r.x_T);

    const LikelihoodMetrics m = likelihood_metrics(r, exact_model, dims);
    const double mean_log_p = log_p_data.mean(), log_p_se = standard_error_of_mean(log_p_data);
    const double mean_bits = bits.mean(), bits_se = standard_error_of_mean(bits);
    // The summary: each figure an attribute of /summary, and all of them also as one vector
    // /summary/values named by its attribute `names`, for readers that prefer a dataset.
    const std::vector<std::pair<std::string, double>> summary = {
        {"points", static_cast<double>(n)},
        {"dims", static_cast<double>(dims)},
        {"mean_log_p", mean_log_p},
        {"mean_log_p_std_error", log_p_se},
        {"mean_bits_per_dim", mean_bits},
        {"mean_bits_per_dim_std_error", bits_se},
        {"mean_exact_log_p", exact_data.mean()},
        {"ll_error", m.ll_error},
        {"ll_bias", m.ll_bias},
        {"ll_std_error", m.ll_std_error},
        {"max_abs_error_per_dim", (log_p_data - exact_data).abs().maxCoeff() / static_cast<double>(dims)},
        {"nfe_mean", m.nfe_mean},
        {"nfe_max", m.nfe_max},
        {"batched_nfe", static_cast<double>(r.stats.nfe)},
        {"rejected", static_cast<double>(r.stats.rejected)}};
    std::vector<double> values;
    std::string names;
    for (const auto& [name, value] : summary) {
      values.push_back(value);
      names += (names.empty() ? "" : ",") + name;
    }
    h5.write_vector("summary/values", values);
    h5.write_attribute("/summary/values", "names", names);
    for (const auto& [name, value] : summary) h5.write_attribute("/summary", name, value);
    h5.write_attribute("/summary", "solver", setup.solver);

    std::cout << fmt::format(
        "likelihood of {} under {} on the {}-D mixture, {} ({}, {} divergence, prior {}): mean log p {:.6g} +- {:.3g} nats "
        "({:.6g} +- {:.3g} bits/dim); exact {:.6g}; error {:.3e} nats/dim mean |.|, bias {:.3e}, Hutchinson se {:.3e} "
        "nats/dim; NFE per point mean {:.1f}, max {:.0f}; {} -> {}\n",
        data_description, process->name(), dims,
        setup.solver == "dopri5" ? fmt::format("dopri5 rtol {:g} atol {:g}", setup.options.adaptive.rtol, setup.options.adaptive.atol)
                                 : fmt::format("{} with {} steps", setup.solver, setup.steps),
        setup.options.time == LikelihoodTime::process ? "in t" : "in log sigma",
        setup.options.divergence == DivergenceMethod::exact ? "exact" : "Hutchinson",
        setup.prior == LikelihoodPrior::exact ? "exact p_T" : "Gaussian", mean_log_p, log_p_se, mean_bits, bits_se,
        exact_data.mean(), m.ll_error, m.ll_bias, m.ll_std_error, m.nfe_mean, m.nfe_max,
        r.stats.failed ? "FAILED: " + r.stats.failure : "ok", output);
    return r.stats.failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("diffode likelihood: cannot write the results: {}\n", e.what());
    return 1;
  }
}

std::string likelihood_config_help() {
  return R"(Config keys (unknown keys, wrong types and impossible values are errors naming file, line and key; exit 2, nothing written):
  [process]     name = "edm" | "vp" | "vp_cosine" | "subvp" | "ve" | "flow"
                beta_min, beta_max, sigma_min, sigma_max, t_min, t_max: override the process's defaults
  [model]       kind = "mixture"; preset = "ring2d" | "iso16" | "diag64", seed = 0
                or weights = [...], means = [[...]], variances = [[...]]
                or file = "mixture.h5" (datasets weights K, means K x D, variances K x D)
  [data]        source = "mixture" | "hdf5"; seed = 0
                mixture: points = 256 draws of the model's exact p_t_min (alpha(t_min) x0 + sigma(t_min) eps)
                hdf5: file, dataset (required; N x D data y); scale = 1, offset = 0, bin_width = 0:
                  x = (y + bin_width u - offset) / scale, u ~ U[0,1)^D from seed when bin_width > 0;
                  log p(y) = log p_model(x) - D log scale + D log bin_width (the dequantization bound)
  [likelihood]  solver = "dopri5" (adaptive, per-point error control) | "euler" | "heun" | "midpoint" | "rk4"
                rtol = 1e-5, atol = 1e-5 (dopri5 only); steps (fixed-step solvers only, required: uniform in time's variable)
                error_norm = "per_point" (each point its own steps) | "batch" (one step for a block: dopri5 only)
                time = "process" (t from t_min to T) | "log_sigma" (u = log sigma~; better for fixed grids)
                divergence = "exact" | "hutchinson"; with hutchinson: probes = 1 (K; std_error needs K >= 2),
                  probe = "rademacher" | "gaussian" | "basis" (D unit probes, no count), probe_seed = 0
                prior = "exact" (the mixture's own p_T: the error is the solver's) | "gaussian" (N(0, prior_std^2 I))
                block_rows = 256 (points per block; threads take blocks; results do not depend on the thread count)
  [output]      file (required)
Output HDF5, per point: log_p (data space, nats), std_error, nfe, accepted, rejected, bits_per_dim, prior_log_p,
delta_log_p, exact_log_p, error (log_p - exact_log_p), x_T; /summary attributes mean_log_p, mean_log_p_std_error,
mean_bits_per_dim, mean_bits_per_dim_std_error, mean_exact_log_p, ll_error, ll_bias, ll_std_error (nats/dim),
max_abs_error_per_dim, nfe_mean, nfe_max; root attributes config, status, failure, data and the provenance.)";
}

}  // namespace diffode
