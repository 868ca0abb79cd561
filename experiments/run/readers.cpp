#include "experiments/run/readers.hpp"

#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/sampler_registry.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace diffode {
namespace {

const std::vector<std::string> kProcesses{"edm", "vp", "vp_cosine", "subvp", "ve", "flow"};

// Which of the optional [process] keys each process takes.
bool process_takes(const std::string& process, std::string_view key) {
  if (key == "t_min" || key == "t_max") return true;
  if (key == "beta_min" || key == "beta_max") return process == "vp" || process == "subvp";
  if (key == "sigma_min" || key == "sigma_max") return process == "ve" || process == "edm";
  return false;
}

}  // namespace

const TableSchema& process_schema() {
  static const TableSchema s{
      "process",
      "the forward process x_t = alpha(t) x0 + sigma(t) eps",
      {string_key("name", "the process").fallback_str("edm").one_of(kProcesses),
       number_key("beta_min", "linear beta schedule's start (vp, subvp)").fallback(0.1).above(0).in_unit("1 / time"),
       number_key("beta_max", "linear beta schedule's end (vp, subvp)").fallback(20.0).above(0).in_unit("1 / time"),
       number_key("sigma_min", "smallest noise level (ve 0.01; edm 0.002, its t_min)").optional("the process's own").above(0).in_unit("data"),
       number_key("sigma_max", "largest noise level (ve 50; edm 80, its T)").optional("the process's own").above(0).in_unit("data"),
       number_key("t_min", "where sampling stops (vp, subvp, vp_cosine, flow 1e-3; ve 1e-5; edm sigma_min)").optional("the process's own").above(0).in_unit("time"),
       number_key("t_max", "where sampling starts, T (1; vp_cosine 0.9946; edm sigma_max)").optional("the process's own").above(0).in_unit("time")}};
  return s;
}

void reject_undeclared_keys(const ConfigTable& root, const std::vector<const TableSchema*>& tables) {
  std::vector<std::string> names;
  for (const TableSchema* t : tables) names.push_back(t->name);
  auto found = root.undeclared(names);
  for (const TableSchema* schema : tables) {
    const auto table = root.peek(schema->name);
    if (!table) continue;
    std::vector<std::string> declared = schema->key_names();
    if (schema == &sampler_table_schema()) {
      // A sampler's options are known once its name is; an unknown name is read_sampler's to report.
      const toml::node* name = table->raw().get("name");
      const SamplerEntry* entry = name && name->is_string() ? find_sampler(*name->value<std::string>()) : nullptr;
      if (!entry) continue;
      for (const auto& k : entry->options.keys) declared.push_back(k.key);
    }
    for (auto& f : table->undeclared(declared)) found.push_back(std::move(f));
  }
  if (found.empty()) return;
  std::stable_sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  throw ConfigError(found.front().second);
}

namespace {

void set_param(ProcessParams& p, std::string_view k, double v) {
  (k == "beta_min" ? p.beta_min : k == "beta_max" ? p.beta_max : k == "sigma_min" ? p.sigma_min : k == "sigma_max" ? p.sigma_max
                                                                               : k == "t_min"   ? p.t_min
                                                                                                : p.t_max) = v;
}

}  // namespace

std::unique_ptr<Process> read_process(ConfigTable t) {
  t = t.bind(process_schema());
  const std::string name = t.string("name");
  ProcessParams p;
  std::vector<std::pair<std::string, double>> given;  // in the order of the process's parameters
  for (const char* key : {"t_min", "t_max", "sigma_min", "sigma_max", "beta_min", "beta_max"}) {
    if (!t.has(key)) continue;
    if (!process_takes(name, key)) t.fail(key, fmt::format("the process '{}' does not take {}", name, key));
    given.emplace_back(key, t.number(key));
    set_param(p, key, given.back().second);
  }
  t.finish();
  // EDM's time is its noise level: t_min is sigma_min and t_max is sigma_max, so each pair takes one.
  if (name == "edm")
    for (const auto& [a, b] : {std::pair{"t_min", "sigma_min"}, std::pair{"t_max", "sigma_max"}})
      if (t.has(a) && t.has(b)) t.fail(b, fmt::format("on edm, {} is {}: give one of them", a, b));
  try {
    return make_process(name, p);
  } catch (const std::exception& e) {
    // Blame a key the config gives: one that the process refuses on its own (with the others at
    // their defaults), else the first of a pair that is refused together, naming the other.
    for (const auto& [key, value] : given) {
      ProcessParams alone;
      set_param(alone, key, value);
      try {
        make_process(name, alone);
      } catch (const std::exception& single) {
        t.fail(key, single.what());
      }
    }
    for (std::size_t i = 0; i < given.size(); ++i)
      for (std::size_t j = i + 1; j < given.size(); ++j) {
        ProcessParams pair;
        set_param(pair, given[i].first, given[i].second);
        set_param(pair, given[j].first, given[j].second);
        try {
          make_process(name, pair);
        } catch (const std::exception& both) {
          t.fail(given[i].first, fmt::format("{} (with {} = {})", both.what(), given[j].first, given[j].second));
        }
      }
    t.fail(given.empty() ? "name" : given.front().first, e.what());
  }
}

const TableSchema& model_schema() {
  static const TableSchema s{
      "model",
      "where predictions come from: an exact Gaussian mixture (a preset, inline components, or an HDF5 file), a network checkpoint "
      "(diffode train) or a TorchScript module",
      {string_key("kind", "the model").fallback_str("mixture").one_of({"mixture", "network", "torchscript"}),
       string_key("preset", "a shipped mixture: the 2-D ring (8 components), 16-D isotropic (10), 64-D diagonal (4)")
           .fallback_str("ring2d")
           .one_of({"ring2d", "iso16", "diag64"}),
       integer_key("seed", "seed of the random presets (iso16, diag64)").fallback_int(0).at_least(0),
       numbers_key("weights", "component weights (K; with means and variances)").optional("none"),
       rows_key("means", "component means (K x D)").optional("none"),
       rows_key("variances", "diagonal component variances (K x D)").optional("none"),
       string_key("file", "mixture: HDF5 file with datasets weights (K), means (K x D), variances (K x D); network: a diffode checkpoint; "
                          "torchscript: a module saved by torch.jit.save")
           .optional("none (required for network and torchscript)"),
       numbers_key("classes", "class of each component (K integers 0..C-1, each class owning one or more): p(x | c) is the class's "
                              "components renormalised; needed by [guidance]")
           .optional("none (one class)"),
       string_key("device", "network, torchscript: where it runs, \"cpu\", \"cuda\" or \"cuda:N\" (with state = \"host\" the samples stay "
                            "in host memory: each evaluation copies the batch there and back)")
           .fallback_str("cpu"),
       string_key("state", "network, torchscript, sampling only: where the sampler's state lives: host memory, or the network's device "
                           "(x_T copied there once, the sampler run on LibTorch tensors, the result copied back once; the deterministic "
                           "fixed-grid samplers euler, heun (s_churn = 0), ddim (eta = 0), dpmpp_2m, dpmpp_3m, dpm_solver, unipc, ipndm, lms; "
                           "unguided; no save_trajectory; the whole batch in one solve, so block_rows and --threads do not apply)")
           .fallback_str("host")
           .one_of({"host", "device"}),
       string_key("dtype", "network, torchscript: the network's arithmetic").fallback_str("float64").one_of({"float32", "float64"}),
       integer_key("batch_size", "network, torchscript: rows per network call (0: a block's rows in one call); results do not depend on it")
           .fallback_int(0)
           .at_least(0),
       integer_key("dims", "torchscript: the data's dimension (checked by a dry run at load)").optional("none (required for torchscript)").at_least(1),
       string_key("prediction", "torchscript: what the module outputs (flow: a velocity of [process], read as x0)")
           .optional("none (required for torchscript)")
           .one_of({"eps", "x0", "v", "score", "flow"}),
       string_key("signature", "torchscript: its arguments, (x, t), (x, sigma) or (x, t, class)").fallback_str("x_t").one_of({"x_t", "x_sigma", "x_t_class"}),
       string_key("time_input", "torchscript: its time argument: [process] t, 1000 t (DDPM), sigma~ = sigma / alpha, or log(sigma~) / 4 (EDM)")
           .fallback_str("t")
           .one_of({"t", "t1000", "sigma", "log_sigma_quarter"}),
       boolean_key("scale_free_input", "torchscript: it takes x / alpha (EDM, k-diffusion) rather than the process's x (DDPM, score SDE)")
           .fallback_bool(false),
       integer_key("num_classes", "torchscript with signature x_t_class: the number of classes; class `num_classes` is the null class sampled with")
           .optional("none")
           .at_least(1),
       table_key("ground_truth", "network, torchscript: the mixture it was trained on (the mixture keys), for the exact metrics and initial = "
                                 "\"exact\"")
           .optional("none: metrics against the exact law are refused")}};
  return s;
}

namespace {

GaussianMixture inline_mixture(ConfigTable& t) {
  for (const char* key : {"preset", "seed"})
    if (t.has(key)) t.fail(key, "only without weights, means and variances (a preset or inline components, not both)");
  const auto w = t.numbers("weights");
  const auto means = t.number_rows("means");
  const auto vars = t.number_rows("variances");
  t.finish();
  // Each array checked on its own, so the message names the key that is wrong.
  if (w.empty()) t.fail("weights", "needs at least one component");
  for (std::size_t i = 0; i < w.size(); ++i)
    if (!(w[i] > 0) || !std::isfinite(w[i])) t.fail("weights", fmt::format("weights[{}] = {}: weights must be positive and finite", i, w[i]));
  if (means.size() != w.size()) t.fail("means", fmt::format("{} means for {} weights: one per component", means.size(), w.size()));
  if (vars.size() != w.size()) t.fail("variances", fmt::format("{} variances for {} weights: one per component", vars.size(), w.size()));
  const Index k = static_cast<Index>(w.size()), d = static_cast<Index>(means[0].size());
  if (d == 0) t.fail("means", "a mean needs at least one dimension");
  Batch m(k, d), v(k, d);
  for (Index i = 0; i < k; ++i) {
    if (static_cast<Index>(means[i].size()) != d) t.fail("means", fmt::format("means[{}] has {} entries, means[0] {}", i, means[i].size(), d));
    if (static_cast<Index>(vars[i].size()) != d) t.fail("variances", fmt::format("variances[{}] has {} entries, the means {}", i, vars[i].size(), d));
    for (Index j = 0; j < d; ++j) {
      if (!std::isfinite(means[i][j])) t.fail("means", fmt::format("means[{}][{}] = {}: must be finite", i, j, means[i][j]));
      if (!(vars[i][j] > 0) || !std::isfinite(vars[i][j]))
        t.fail("variances", fmt::format("variances[{}][{}] = {}: must be positive and finite", i, j, vars[i][j]));
      m(i, j) = means[i][j], v(i, j) = vars[i][j];
    }
  }
  try {
    return GaussianMixture(Eigen::Map<const Eigen::ArrayXd>(w.data(), k), m, v);
  } catch (const std::exception& e) {
    t.fail("weights", e.what());
  }
}

}  // namespace

GaussianMixture read_mixture(ConfigTable t) {
  t = t.bind(model_schema());
  if (const std::string kind = t.string("kind"); kind != "mixture")
    t.fail("kind", fmt::format("'{}': an exact Gaussian mixture is needed here (kind = \"mixture\")", kind));
  t.node("classes");  // read and checked by read_guidance, which needs the components
  if (t.has("file")) {
    for (const char* key : {"preset", "seed", "weights", "means", "variances"})
      if (t.has(key)) t.fail(key, "only without file (the mixture comes from the file)");
    const std::string file = t.string("file");
    t.finish();
    try {
      Hdf5File h5(file, Hdf5File::Mode::read);
      const auto w = h5.read_vector("weights");
      return GaussianMixture(Eigen::Map<const Eigen::ArrayXd>(w.data(), w.size()), h5.read_matrix("means"), h5.read_matrix("variances"));
    } catch (const std::exception& e) {
      // Hdf5File's errors name the file; the mixture's own checks do not.
      const std::string what = e.what();
      t.fail("file", what.starts_with(file) ? what : fmt::format("{}: {}", file, what));
    }
  }
  if (t.has("weights")) return inline_mixture(t);
  const std::string preset = t.string("preset");
  const auto seed = static_cast<std::uint64_t>(t.integer("seed"));
  t.finish();
  if (preset == "ring2d") return GaussianMixture::ring();
  if (preset == "iso16") return GaussianMixture::random_isotropic(16, 10, seed);
  return GaussianMixture::random_diagonal(64, 4, seed);
}

const TableSchema& guidance_schema() {
  static const TableSchema s{
      "guidance",
      "guided sampling of a class-conditional model: a mixture with [model] classes, or a network trained with classes (kind = \"network\", "
      "or \"torchscript\" with signature x_t_class; cfg only); absent: the model samples p(x)",
      {integer_key("class", "the requested class c, or \"all\": every class in turn, samples / C each (the same x_T for each class, that of a "
                            "run of samples / C), the results file's `labels` the class of each row")
           .at_least(0),
       string_key("kind", "classifier-free guidance, or the exact classifier's gradient added to the conditional score (mixtures only)")
           .fallback_str("cfg")
           .one_of({"cfg", "classifier"}),
       number_key("scale", "w: cfg (1 + w) D(x|c) - w D(x|n); classifier score(x|c) + w grad log p(c|x_t); 0 = the conditional model")
           .fallback(0.0)
           .at_least(0),
       number_key("rescale", "phi of CFG-rescale (Lin et al. 2024) on the x0 prediction; 0 = plain CFG (cfg only)").fallback(0.0).at_least(0).at_most(1),
       numbers_key("interval", "[lo, hi]: guide only where sigma / alpha lies in it (Kynkaanniemi et al. 2024)").optional("always"),
       integer_key("negative_class", "the class n in place of the null class (cfg only)").optional("the null class: the unconditional model").at_least(0)}};
  return s;
}

namespace {

// [guidance] of a model with `classes` classes (the caller checked that it has some). `network`:
// classifier guidance is refused.
GuidanceSetup read_guidance_table(ConfigTable t, Index classes, bool network) {
  GuidanceSetup g;
  g.classes = classes;
  GuidanceSettings& s = g.settings;
  const toml::node* cls = t.has("class") ? t.node("class") : nullptr;
  if (cls && cls->is_string()) {
    if (cls->value<std::string>().value_or("") != "all")
      t.fail("class", fmt::format("'{}': expected a class 0..{} or \"all\"", cls->value<std::string>().value_or(""), classes - 1));
    g.all_classes = true;
    s.target_class = 0;
  } else {
    s.target_class = t.integer("class");
    if (s.target_class >= classes)
      t.fail("class", fmt::format("class {} of a model with {} classes (0..{})", s.target_class, classes, classes - 1));
  }
  s.kind = t.string("kind") == "cfg" ? GuidanceSettings::Kind::cfg : GuidanceSettings::Kind::classifier;
  if (network && s.kind == GuidanceSettings::Kind::classifier)
    t.fail("kind", "classifier guidance needs a classifier of noisy inputs, which a network does not come with: use kind = \"cfg\"");
  s.scale = t.number("scale");
  s.rescale = t.number("rescale");
  if (t.has("interval")) {
    const auto interval = t.numbers("interval");
    if (interval.size() != 2 || !(interval[0] >= 0) || !(interval[1] >= interval[0]) || std::isnan(interval[1]))
      t.fail("interval", "expected [lo, hi] with 0 <= lo <= hi (sigma / alpha)");
    s.sigma_lo = interval[0], s.sigma_hi = interval[1];
  }
  if (t.has("negative_class")) {
    s.negative_class = t.integer("negative_class");
    if (*s.negative_class >= classes)
      t.fail("negative_class", fmt::format("class {} of a model with {} classes (0..{})", *s.negative_class, classes, classes - 1));
  }
  if (s.kind == GuidanceSettings::Kind::classifier)
    for (const char* key : {"rescale", "negative_class"})
      if (t.has(key)) t.fail(key, "only with kind = \"cfg\" (classifier-free guidance)");
  t.finish();
  return g;
}

}  // namespace

std::optional<GuidanceSetup> read_guidance(ConfigTable& root, const GaussianMixture& mixture) {
  ConfigTable model = root.table("model").bind(model_schema());
  std::vector<Index> classes(mixture.components(), 0);
  if (model.has("classes")) {
    const auto given = model.numbers("classes");
    if (static_cast<Index>(given.size()) != mixture.components())
      model.fail("classes", fmt::format("{} classes for {} components: one per component", given.size(), mixture.components()));
    for (std::size_t k = 0; k < given.size(); ++k) {
      if (!(given[k] >= 0) || given[k] != std::floor(given[k]) || given[k] > 1e9)
        model.fail("classes", fmt::format("classes[{}] = {}: classes are integers 0..C-1", k, given[k]));
      classes[k] = static_cast<Index>(given[k]);
    }
  }
  std::shared_ptr<const ClassConditionalMixture> conditional;
  try {
    conditional = std::make_shared<const ClassConditionalMixture>(mixture, classes);
  } catch (const std::exception& e) {
    model.fail("classes", e.what());
  }
  if (!root.peek("guidance")) return std::nullopt;
  ConfigTable t = root.table("guidance").bind(guidance_schema());
  if (!model.has("classes")) t.fail("class", "guided sampling needs [model] classes (the class of each component)");
  GuidanceSetup g = read_guidance_table(t, conditional->classes(), false);
  g.model = conditional;
  return g;
}

std::optional<GuidanceSetup> read_network_guidance(ConfigTable& root, const NetworkModel& network) {
  if (!root.peek("guidance")) return std::nullopt;
  ConfigTable t = root.table("guidance").bind(guidance_schema());
  if (network.classes() < 1) {
    const ConfigTable model = root.table("model").bind(model_schema());
    t.fail("class", fmt::format("guided sampling needs a class-conditional network, and [model] {} has no classes (a checkpoint trained "
                                "with classes, or a torchscript module with signature x_t_class and num_classes)",
                                model.has("file") ? model.where("file") : std::string("file")));
  }
  return read_guidance_table(t, network.classes(), true);
}

namespace {

const std::vector<std::string> kMixtureKeys{"preset", "seed", "weights", "means", "variances", "classes"};
const std::vector<std::string> kNetworkKeys{"device", "dtype", "batch_size", "state", "ground_truth"};
const std::vector<std::string> kTorchScriptKeys{"dims", "prediction", "signature", "time_input", "scale_free_input", "num_classes"};

Parameterization parameterization_named(const std::string& name) {
  for (const Parameterization p : {Parameterization::eps, Parameterization::x0, Parameterization::v, Parameterization::score, Parameterization::flow})
    if (to_string(p) == name) return p;
  throw std::logic_error("unknown parameterization " + name);  // the schema allows only the five
}

// The key a loading error is about: the backend's messages start with what they refuse.
std::string_view key_of_load_error(const std::string& what) {
  for (const char* key : {"device", "dtype", "batch_size", "dims", "signature", "time_input", "num_classes"})
    if (what.starts_with(std::string(key) + " ")) return key;
  return "file";
}

}  // namespace

ModelSource read_model(ConfigTable t, const ConfigTable& process_table, bool device_state_allowed) {
  t = t.bind(model_schema());
  ModelSource m;
  m.kind = t.string("kind");
  if (m.kind == "mixture") {
    for (const auto* keys : {&kNetworkKeys, &kTorchScriptKeys})
      for (const std::string& key : *keys)
        if (t.has(key)) t.fail(key, "only with kind = \"network\" or \"torchscript\"");
    m.mixture = std::make_shared<const GaussianMixture>(read_mixture(t));
    return m;
  }
  for (const std::string& key : kMixtureKeys)
    if (t.has(key))
      t.fail(key, fmt::format("a mixture's key: with kind = \"{}\", give the mixture the network was trained on as [model.ground_truth]", m.kind));
  const bool torchscript = m.kind == "torchscript";
  if (!torchscript)
    for (const std::string& key : kTorchScriptKeys)
      if (t.has(key)) t.fail(key, "only with kind = \"torchscript\" (a checkpoint records its own)");
  if (!t.has("file")) t.fail("kind", fmt::format("kind = \"{}\" needs file, the {}", m.kind, torchscript ? "TorchScript module" : "checkpoint"));
  const std::string file = t.string("file");
  NetworkRuntime runtime;
  runtime.device = t.string("device");
  if (runtime.device != "cpu" && runtime.device != "cuda" &&
      !(runtime.device.starts_with("cuda:") && runtime.device.size() > 5 &&
        std::all_of(runtime.device.begin() + 5, runtime.device.end(), [](char c) { return c >= '0' && c <= '9'; })))
    t.fail("device", fmt::format("'{}': expected \"cpu\", \"cuda\" or \"cuda:N\"", runtime.device));
  runtime.dtype = t.string("dtype");
  runtime.batch_size = t.integer("batch_size");
  runtime.state = t.string("state");
  if (runtime.state == "device" && !device_state_allowed)
    t.fail("state", "\"device\" is for sampling runs (diffode sample, sweeps); this command runs on the host state");
  m.state = runtime.state;
  TorchScriptSpec spec;
  if (torchscript) {
    for (const char* key : {"dims", "prediction"})
      if (!t.has(key)) t.fail("kind", fmt::format("kind = \"torchscript\" needs {}", key));
    spec.file = file;
    spec.dims = t.integer("dims");
    spec.prediction = parameterization_named(t.string("prediction"));
    spec.signature = t.string("signature");
    spec.time_input = t.string("time_input");
    spec.scale_free_input = t.boolean("scale_free_input");
    if (spec.signature == "x_t_class" && !t.has("num_classes")) t.fail("signature", "x_t_class needs num_classes, the number of classes");
    if (t.has("num_classes")) {
      if (spec.signature != "x_t_class") t.fail("num_classes", "only with signature = \"x_t_class\"");
      spec.classes = t.integer("num_classes");
    }
    // The module is handed its own process's t and x: the config's [process], kept alive by the model.
    const std::shared_ptr<const Process> trained = read_process(process_table);
    spec.t_of_scaled_sigma = [trained](double s) { return trained->t_of_scaled_sigma(s); };
    spec.alpha = [trained](double t) { return trained->alpha(t); };
    spec.sigma = [trained](double t) { return trained->sigma(t); };
    spec.d_alpha = [trained](double t) { return trained->d_alpha(t); };
    spec.d_sigma = [trained](double t) { return trained->d_sigma(t); };
  }
  if (t.has("ground_truth")) {
    ConfigTable truth = t.table("ground_truth");
    if (truth.has("ground_truth")) truth.fail("ground_truth", "a ground truth is a mixture");
    m.mixture = std::make_shared<const GaussianMixture>(read_mixture(truth));
  }
  t.finish();
  std::error_code error;
  if (!std::filesystem::is_regular_file(file, error)) t.fail("file", fmt::format("{}: no such file", file));
  const NetworkBackend* backend = nullptr;
  try {
    backend = &network_backend();
  } catch (const std::exception& e) {
    t.fail("kind", e.what());
  }
  try {
    m.network = torchscript ? backend->load_torchscript(spec, runtime) : backend->load_checkpoint(file, runtime);
  } catch (const std::exception& e) {
    t.fail(key_of_load_error(e.what()), e.what());
  }
  if (m.mixture && m.mixture->dims() != m.network->dims())
    t.fail("ground_truth", fmt::format("a {}-D mixture for a network of {} dimensions", m.mixture->dims(), m.network->dims()));
  return m;
}

const TableSchema& run_schema() {
  static const TableSchema s{
      "run",
      "one run: how many samples, their noise, and where the results go",
      {string_key("task", "a sweep's run: sampling, or the likelihood solver ([likelihood])").fallback_str("sample").one_of({"sample", "likelihood"}),
       integer_key("samples", "samples (sweep task likelihood: data points); refused when they would not fit in memory").fallback_int(1024).at_least(1),
       integer_key("seed", "seed of x_T and of every noise the run draws").fallback_int(0).at_least(0),
       string_key("initial", "x_T: the prior N(0, prior_std^2 I), or the mixture's exact p_T").fallback_str("prior").one_of({"prior", "exact"}),
       string_key("initial_file", "x_T from an HDF5 file instead (N x D)").optional("none"),
       string_key("initial_dataset", "the dataset of initial_file").fallback_str("initial"),
       string_key("output", "diffode sample: the results file (required); a sweep: the default of [sweep] output").optional("none"),
       boolean_key("save_trajectory", "also store the state at every grid point").fallback_bool(false),
       boolean_key("save_samples", "a sweep: store each run's samples and x_T (diffode sample always writes them)").fallback_bool(false),
       integer_key("block_rows", "rows per block; threads take whole blocks, so results depend on this, not on --threads")
           .fallback_int(256)
           .at_least(1)}};
  return s;
}

RunSettings read_run_settings(ConfigTable t) {
  t = t.bind(run_schema());
  RunSettings r;
  r.task = t.string("task");
  r.samples = t.integer("samples");
  r.seed = static_cast<std::uint64_t>(t.integer("seed"));
  r.initial = t.string("initial");
  if (t.has("initial_file")) {
    r.initial_file = t.string("initial_file");
    r.initial_dataset = t.string("initial_dataset");
    if (!std::filesystem::exists(r.initial_file)) t.fail("initial_file", fmt::format("no such file: {}", r.initial_file));
  } else if (t.has("initial_dataset")) {
    t.fail("initial_dataset", "only with initial_file");
  }
  if (t.has("output")) {
    r.output = t.string("output");
    if (r.output.empty()) t.fail("output", "must name a file");
  }
  r.save_trajectory = t.boolean("save_trajectory");
  r.save_samples = t.boolean("save_samples");
  r.block_rows = t.integer("block_rows");
  t.finish();
  return r;
}

}  // namespace diffode
