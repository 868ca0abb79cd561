// [data] of a likelihood run: its schema and reader.
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/likelihood.hpp"
#include "experiments/run/output.hpp"

#include <fmt/format.h>

namespace diffode {
namespace {

Batch read_data_file(ConfigTable& data, const std::string& file, const std::string& dataset, Index dims) {
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
  if (y.cols() != dims) data.fail("dataset", fmt::format("{}:{} is {} x {}; the model has {} dimensions", file, dataset, y.rows(), y.cols(), dims));
  if (y.rows() < 1) data.fail("dataset", fmt::format("{}:{} has no rows", file, dataset));
  if (!y.isFinite().all()) data.fail("dataset", fmt::format("{}:{} holds non-finite values", file, dataset));
  return y;
}

}  // namespace

const TableSchema& data_schema() {
  static const TableSchema s{
      "data",
      "the points whose log-likelihood is measured",
      {string_key("source", "draws of the model's exact p_t_min (a network: its [model.ground_truth]'s), or an HDF5 dataset").fallback_str("mixture").one_of({"mixture", "hdf5"}),
       integer_key("seed", "seed of the draws (mixture) or of the dequantization noise (hdf5)").fallback_int(0).at_least(0),
       integer_key("points", "how many draws (mixture); refused when they would not fit in memory").fallback_int(256).at_least(1),
       string_key("file", "the HDF5 file (hdf5)").optional("required for hdf5"),
       string_key("dataset", "the N x D dataset y (hdf5)").optional("required for hdf5"),
       number_key("scale", "x = (y + bin_width u - offset) / scale (hdf5)").fallback(1.0).above(0),
       number_key("offset", "see scale (hdf5)").fallback(0.0),
       number_key("bin_width", "uniform dequantization u ~ U[0,1)^D of that width, 0: continuous data; log p(y) gains D log bin_width (hdf5)")
           .fallback(0.0)
           .at_least(0)}};
  return s;
}

LikelihoodData read_likelihood_data(ConfigTable data, const Process& process, const GaussianMixture& mixture) {
  return read_likelihood_data(std::move(data), process, &mixture, mixture.dims());
}

LikelihoodData read_likelihood_data(ConfigTable data, const Process& process, const GaussianMixture* truth, Index dims) {
  data = data.bind(data_schema());
  LikelihoodData d;
  const std::string source = data.string("source");
  const auto seed = static_cast<std::uint64_t>(data.integer("seed"));
  if (source == "mixture") {
    for (const char* key : {"file", "dataset", "scale", "offset", "bin_width"})
      if (data.has(key)) data.fail(key, "only with source = \"hdf5\" (the mixture's draws are already in model space)");
    if (truth == nullptr)
      data.fail("source", "draws of the exact p_t_min need the mixture the network was trained on ([model.ground_truth]); or give source = \"hdf5\"");
    const GaussianMixture& mixture = *truth;
    const auto points = data.integer("points");
    // The solve holds the points, the augmented state and Dopri5's seven stages of it.
    check_memory(data, "points", 8.0 * static_cast<double>(points) * static_cast<double>(mixture.dims() + 2) * 12.0);
    const double t = process.t_min();
    d.x = mixture.sample_marginal(process.alpha(t), process.sigma(t), points, seed);
    d.description = fmt::format("{} draws of the model's p_t_min (seed {})", points, seed);
  } else {
    if (data.has("points")) data.fail("points", "only with source = \"mixture\" (an HDF5 data set is used whole)");
    const std::string file = data.string("file"), dataset = data.string("dataset");
    d.transform.scale = data.number("scale");
    d.transform.offset = data.number("offset");
    d.transform.bin_width = data.number("bin_width");
    Batch y = read_data_file(data, file, dataset, dims);
    // Uniform dequantization (DataTransform's comment): y + bin_width u, u ~ U[0,1)^D.
    if (d.transform.bin_width > 0) y += d.transform.bin_width * dequantization_noise(y.rows(), y.cols(), seed);
    d.x = d.transform.to_model(y);
    d.description = fmt::format("{} points of {}:{}", y.rows(), file, dataset);
  }
  data.finish();
  return d;
}

}  // namespace diffode
