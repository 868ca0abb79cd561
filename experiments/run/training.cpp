#include "experiments/run/training.hpp"

#include "core/splitmix.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/networks.hpp"
#include "experiments/run/output.hpp"
#include "experiments/run/readers.hpp"
#include "models/fashion_mnist.hpp"
#include "models/gaussian_mixture.hpp"
#include "models/toy_data.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <stdexcept>

namespace diffode {
namespace {

std::vector<std::string> data_kinds() {
  std::vector<std::string> kinds = {"mixture"};
  for (const std::string& name : toy_set_names()) kinds.push_back(name);
  kinds.push_back("hdf5");
  kinds.push_back("fashion_mnist");
  return kinds;
}

// Rows of an HDF5 data set (and their labels), drawn with replacement, keyed by (seed, step, row).
struct ArrayData {
  Batch x;
  std::vector<std::int64_t> labels;
};

TrainingData array_batches(std::shared_ptr<const ArrayData> data, std::int64_t batch, std::uint64_t seed) {
  return [data, batch, seed](std::uint64_t step) {
    TrainingBatch out;
    out.x0.resize(batch, data->x.cols());
    const auto rows = static_cast<std::uint64_t>(data->x.rows());
    for (std::int64_t i = 0; i < batch; ++i) {
      const std::uint64_t row = splitmix64(splitmix64(seed ^ 0x6864663544617461ULL) + step * static_cast<std::uint64_t>(batch) + i) % rows;
      out.x0.row(i) = data->x.row(static_cast<Index>(row));
      if (!data->labels.empty()) out.labels.push_back(data->labels[row]);
    }
    return out;
  };
}

// The data of [data] as the backend's generator of batches; sets dims, and the description.
// `image_shape` is set (C, H, W) for image data.
TrainingData read_training_data(ConfigTable data, const TrainingRun& run, Index classes, std::uint64_t seed, std::int64_t batch, Index& dims,
                                std::string& description, std::vector<Index>& image_shape) {
  data = data.bind(training_data_schema());
  const std::string kind = data.string("kind");
  const auto only = [&](std::vector<const char*> keys, const std::string& which) {
    for (const char* key : keys)
      if (data.has(key)) data.fail(key, fmt::format("only with {} (not kind = \"{}\")", which, kind));
  };
  if (classes > 0 && kind != "hdf5" && kind != "fashion_mnist")
    data.fail("kind", fmt::format("a class-conditional network ([network] classes = {}) needs labelled data: kind = \"hdf5\" with labels, or "
                                  "\"fashion_mnist\"",
                                  classes));
  if (kind != "fashion_mnist") only({"split", "directory"}, "kind = \"fashion_mnist\"");
  if (kind == "fashion_mnist") {
    only({"noise"}, "a toy set");
    only({"preset", "seed", "weights", "means", "variances", "file", "dataset", "labels"}, "another kind");
    const std::string split = data.string("split"), directory = data.string("directory");
    data.finish();
    if (classes != 0 && classes != kFashionMnistClasses)
      data.fail("kind", fmt::format("Fashion-MNIST has {} classes; [network] classes = {} (0 or {})", kFashionMnistClasses, classes,
                                    kFashionMnistClasses));
    auto arrays = std::make_shared<ArrayData>();
    ImageSet images;
    try {
      images = read_fashion_mnist(split, directory);
    } catch (const std::exception& e) {
      data.fail(data.has("directory") ? "directory" : "kind", e.what());
    }
    arrays->x = std::move(images.pixels);
    if (classes > 0) arrays->labels = std::move(images.labels);
    dims = arrays->x.cols();
    description = fmt::format("Fashion-MNIST {} split: {} images of {}x{}x{}{}, drawn with replacement", split, arrays->x.rows(), images.channels,
                              images.height, images.width, classes > 0 ? " with their 10 class labels" : "");
    image_shape = {images.channels, images.height, images.width};
    return array_batches(arrays, batch, seed);
  }
  if (kind == "mixture") {
    only({"noise"}, "a toy set");
    only({"dataset", "labels"}, "kind = \"hdf5\"");
    auto mixture = std::make_shared<const GaussianMixture>(read_mixture(data));
    dims = mixture->dims();
    description = fmt::format("fresh draws of the {}-D mixture ({} components) every step", dims, mixture->components());
    return [mixture, batch, seed](std::uint64_t step) {
      return TrainingBatch{mixture->sample(batch, seed, static_cast<Index>(step) * batch), {}};
    };
  }
  only({"preset", "seed", "weights", "means", "variances"}, "kind = \"mixture\"");
  if (const auto set = toy_set_from_string(kind)) {
    only({"file", "dataset", "labels"}, "kind = \"hdf5\"");
    std::optional<double> noise;
    if (data.has("noise")) noise = data.number("noise");
    data.finish();
    dims = 2;
    description = fmt::format("fresh draws of the 2-D {} set (noise {:g}) every step", kind, noise.value_or(toy_default_noise(*set)));
    const ToySet which = *set;
    return [which, noise, batch, seed](std::uint64_t step) {
      return TrainingBatch{toy_data(which, batch, seed, static_cast<Index>(step) * batch, noise), {}};
    };
  }
  // hdf5
  only({"noise"}, "a toy set");
  const std::string file = data.string("file"), dataset = data.string("dataset");
  if (!std::filesystem::exists(file)) data.fail("file", fmt::format("no such file: {}", file));
  auto arrays = std::make_shared<ArrayData>();
  std::string labels;
  if (data.has("labels")) labels = data.string("labels");
  data.finish();
  try {
    const Hdf5File h5(file, Hdf5File::Mode::read);
    if (!h5.has(dataset)) data.fail("dataset", fmt::format("{}: no dataset '{}'", file, dataset));
    arrays->x = h5.read_matrix(dataset);
    if (!labels.empty()) {
      if (!h5.has(labels)) data.fail("labels", fmt::format("{}: no dataset '{}'", file, labels));
      for (double v : h5.read_vector(labels)) {
        if (!(v >= 0 && v < static_cast<double>(classes) && v == std::floor(v)))
          data.fail("labels", fmt::format("{}:{} holds {}: labels are integers 0..{} ([network] classes = {})", file, labels, v,
                                          classes - 1, classes));
        arrays->labels.push_back(static_cast<std::int64_t>(v));
      }
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    data.fail("file", e.what());
  }
  if (arrays->x.rows() < 1 || arrays->x.cols() < 1) data.fail("dataset", fmt::format("{}:{} is empty", file, dataset));
  if (!arrays->x.isFinite().all()) data.fail("dataset", fmt::format("{}:{} holds non-finite values", file, dataset));
  if (!labels.empty() && static_cast<Index>(arrays->labels.size()) != arrays->x.rows())
    data.fail("labels", fmt::format("{}:{} has {} labels for {} rows", file, labels, arrays->labels.size(), arrays->x.rows()));
  if (classes > 0 && labels.empty()) data.fail("labels", fmt::format("[network] classes = {}: the labels dataset is required", classes));
  if (classes == 0 && !labels.empty()) data.fail("labels", "labels need a class-conditional network ([network] classes > 0)");
  dims = arrays->x.cols();
  description = fmt::format("{} x {} rows of {}:{}, drawn with replacement", arrays->x.rows(), dims, file, dataset);
  (void)run;
  return array_batches(arrays, batch, seed);
}

}  // namespace

const TableSchema& network_schema() {
  static const TableSchema s{
      "network",
      "diffode train: the network (a residual MLP or an image U-Net, models/network.hpp) and its conditioning; the data set its dimension",
      {string_key("architecture", "the residual MLP (any dimension) or the U-Net (images: rows of C*H*W values)")
           .fallback_str("mlp")
           .one_of({"mlp", "unet"}),
       string_key("output", "what the raw output F is: a parameterisation, or EDM's preconditioned denoiser c_skip x~ + c_out F")
           .fallback_str("edm")
           .one_of({"eps", "x0", "v", "score", "flow", "edm"}),
       number_key("sigma_data", "the data's standard deviation in c_in (and EDM's c_skip, c_out)").fallback(0.5).above(0),
       integer_key("width", "mlp: hidden units").fallback_int(128).at_least(1).at_most(65536),
       integer_key("blocks", "mlp: residual blocks").fallback_int(3).at_least(0).at_most(1000),
       integer_key("embedding_dims", "noise-embedding features (even)").fallback_int(64).at_least(2).at_most(65536),
       string_key("embedding", "noise embedding of c_noise = log(sigma~)/4: EDM's sinusoids or random Fourier features")
           .fallback_str("sinusoidal")
           .one_of({"sinusoidal", "fourier"}),
       number_key("fourier_scale", "std of the Fourier frequencies (embedding = \"fourier\")").fallback(16.0).above(0),
       integer_key("classes", "0: unconditional; else labels 0..classes-1 and a null class for guidance").fallback_int(0).at_least(0),
       numbers_key("image", "unet: [channels, height, width] of the images (C*H*W = the data's dimension)").optional("the data's, for image data"),
       integer_key("base_channels", "unet: channels of the first level").fallback_int(16).at_least(1).at_most(1024),
       numbers_key("channel_multipliers", "unet: channels of each level as multiples of base_channels; the resolution halves between levels")
           .optional("[1, 2, 2]"),
       integer_key("blocks_per_level", "unet: residual blocks per level on the way down (one more on the way up)").fallback_int(1).at_least(1).at_most(16),
       boolean_key("attention", "unet: self-attention in the middle, at the lowest resolution").fallback_bool(true),
       integer_key("attention_heads", "unet: attention heads (divide the lowest level's channels)").fallback_int(1).at_least(1).at_most(64),
       integer_key("groups", "unet: GroupNorm groups (divide every level's channels)").fallback_int(8).at_least(1).at_most(1024)}};
  return s;
}

const TableSchema& training_data_schema() {
  static const TableSchema s{
      "data",
      "diffode train: the training data, fresh draws every step (mixture, toy sets), rows of an HDF5 array or Fashion-MNIST images",
      {string_key("kind", "an exact mixture (the [model] keys below), a 2-D toy set (models/toy_data.hpp), or an N x D HDF5 dataset")
           .fallback_str("mixture")
           .one_of(data_kinds()),
       string_key("preset", "mixture: a shipped mixture").fallback_str("ring2d").one_of({"ring2d", "iso16", "diag64"}),
       integer_key("seed", "mixture: seed of the random presets (iso16, diag64); the draws follow [train] seed").fallback_int(0).at_least(0),
       numbers_key("weights", "mixture: component weights (K; with means and variances)").optional("none"),
       rows_key("means", "mixture: component means (K x D)").optional("none"),
       rows_key("variances", "mixture: diagonal component variances (K x D)").optional("none"),
       string_key("file", "mixture: HDF5 with weights, means, variances; hdf5: the data file").optional("required for hdf5"),
       string_key("dataset", "hdf5: the N x D dataset").optional("required for hdf5"),
       string_key("labels", "hdf5: a dataset of N integer labels (with [network] classes > 0)").optional("none"),
       string_key("split", "fashion_mnist: the split (60,000 or 10,000 images)").fallback_str("train").one_of({"train", "test"}),
       string_key("directory", "fashion_mnist: the folder of the IDX files (Debian's dataset-fashion-mnist)").fallback_str(std::string(kFashionMnistDirectory)),
       number_key("noise", "toy sets: Gaussian jitter").optional("the set's own: two_moons 0.1, checkerboard 0, swiss_roll 1, rings 0.08").at_least(0)}};
  return s;
}

const TableSchema& train_schema() {
  static const TableSchema s{
      "train",
      "diffode train: denoising score matching with AdamW, warm-up, clipping and an EMA of the weights",
      {string_key("task", "what is trained: a score network, or an image classifier (its own tables: experiments/run/classifier_training.hpp)")
           .fallback_str("score")
           .one_of({"score", "classifier"}),
       integer_key("steps", "optimiser steps").fallback_int(1000).at_least(1).at_most(1'000'000'000),
       integer_key("batch_size", "data rows per step").fallback_int(256).at_least(1).at_most(1 << 24),
       number_key("learning_rate", "AdamW's learning rate after the warm-up").fallback(1e-3).above(0).at_most(10),
       number_key("weight_decay", "AdamW's decoupled weight decay").fallback(0.0).at_least(0),
       integer_key("warmup_steps", "linear learning-rate warm-up from lr/warmup_steps (0: none)").fallback_int(100).at_least(0),
       number_key("gradient_clip", "max global gradient norm (0: no clipping)").fallback(1.0).at_least(0),
       number_key("ema_decay", "decay of the weights' moving average used for sampling (warmed up as min(decay, (1+s)/(10+s)))")
           .fallback(0.999)
           .at_least(0)
           .below(1),
       number_key("label_dropout", "probability of training a labelled row as the null class").fallback(0.1).at_least(0).at_most(1),
       number_key("p_mean", "EDM process: mean of ln sigma~ (Karras et al. 2022)").fallback(-1.2),
       number_key("p_std", "EDM process: std of ln sigma~").fallback(1.2).above(0),
       integer_key("checkpoint_every", "write the checkpoint every this many steps (0: only at the end and on ^C)").fallback_int(500).at_least(0),
       integer_key("seed", "seed of the initial weights, the data draws and every step's noise").fallback_int(0).at_least(0),
       string_key("device", "where training runs").fallback_str("cpu").one_of({"cpu", "cuda"}),
       string_key("dtype", "the network's floating-point type while training").fallback_str("float32").one_of({"float32", "float64"})}};
  return s;
}

const TableSchema& training_output_schema() {
  static const TableSchema s{
      "output",
      "diffode train: the checkpoint and the training history",
      {string_key("file", "the checkpoint (LibTorch archive: spec, EMA weights for sampling, and the state to resume from)"),
       string_key("history", "HDF5 with the loss curve, learning rate and wall time per step, and the provenance")
           .optional("the checkpoint's name with the extension .train.h5")}};
  return s;
}

TrainingProcess training_process(std::shared_ptr<const Process> p) {
  TrainingProcess out;
  out.alpha = [p](double t) { return p->alpha(t); };
  out.sigma = [p](double t) { return p->sigma(t); };
  out.d_alpha = [p](double t) { return p->d_alpha(t); };
  out.d_sigma = [p](double t) { return p->d_sigma(t); };
  out.t_min = p->t_min();
  out.t_max = p->t_max();
  out.edm = p->name() == "edm";
  return out;
}

TrainingRun read_training_run(const std::filesystem::path& config_path) {
  TrainingRun run;
  const Config config(config_path);
  run.config_text = config.text();
  ConfigTable root = config.root();
  reject_undeclared_keys(root, {&process_schema(), &network_schema(), &training_data_schema(), &train_schema(), &training_output_schema()});
  run.process = read_process(root.table("process"));
  TrainingSpec& s = run.spec;
  s.process = training_process(run.process);

  ConfigTable net = root.table("network", network_schema());
  s.network.kind = net.string("architecture");
  const bool unet = s.network.kind == "unet";
  s.network.output = network_output_from_string(net.string("output"));
  s.network.sigma_data = net.number("sigma_data");
  for (const char* key : unet ? std::vector<const char*>{"width", "blocks"}
                              : std::vector<const char*>{"image", "base_channels", "channel_multipliers", "blocks_per_level", "attention",
                                                         "attention_heads", "groups"})
    if (net.has(key)) net.fail(key, fmt::format("only with architecture = \"{}\"", unet ? "mlp" : "unet"));
  const Index embedding_dims = net.integer("embedding_dims");
  if (embedding_dims % 2 != 0) net.fail("embedding_dims", fmt::format("{}: must be even (cosines and sines)", embedding_dims));
  const std::string embedding = net.string("embedding");
  if (net.has("fourier_scale") && embedding != "fourier") net.fail("fourier_scale", "only with embedding = \"fourier\"");
  const double fourier_scale = net.number("fourier_scale");
  const Index classes = net.integer("classes");
  MlpArchitecture& a = s.network.architecture;
  UnetArchitecture& u = s.network.unet;
  std::optional<std::vector<Index>> image;
  if (unet) {
    const auto integers = [&](const char* key) {
      std::vector<Index> values;
      for (double v : net.numbers(key)) {
        if (!(v >= 1 && v <= 1e6 && v == std::floor(v))) net.fail(key, fmt::format("{}: entries are positive integers", v));
        values.push_back(static_cast<Index>(v));
      }
      return values;
    };
    if (net.has("image")) {
      image = integers("image");
      if (image->size() != 3) net.fail("image", fmt::format("{} entries: [channels, height, width]", image->size()));
    }
    u.base_channels = net.integer("base_channels");
    if (net.has("channel_multipliers")) u.channel_multipliers = integers("channel_multipliers");
    u.blocks_per_level = net.integer("blocks_per_level");
    u.attention = net.boolean("attention");
    if (net.has("attention_heads") && !u.attention) net.fail("attention_heads", "only with attention = true");
    u.attention_heads = net.integer("attention_heads");
    u.groups = net.integer("groups");
    u.embedding_dims = embedding_dims, u.embedding = embedding, u.fourier_scale = fourier_scale, u.classes = classes;
  } else {
    a.width = net.integer("width");
    a.blocks = net.integer("blocks");
    a.embedding_dims = embedding_dims, a.embedding = embedding, a.fourier_scale = fourier_scale, a.classes = classes;
  }
  net.finish();

  ConfigTable train = root.table("train", train_schema());
  if (train.string("task") != "score") train.fail("task", "a classifier config is read by read_classifier_run");
  read_train_optimiser_keys(train, s);
  s.gradient_clip = train.number("gradient_clip");
  s.ema_decay = train.number("ema_decay");
  s.label_dropout = train.number("label_dropout");
  if (train.has("label_dropout") && classes == 0) train.fail("label_dropout", "only with a class-conditional network ([network] classes > 0)");
  for (const char* key : {"p_mean", "p_std"})
    if (train.has(key) && !s.process.edm) train.fail(key, fmt::format("only under the EDM process ([process] name = \"edm\"; {} samples t uniformly)",
                                                                      run.process->name()));
  s.p_mean = train.number("p_mean");
  s.p_std = train.number("p_std");
  read_train_run_keys(train, s);
  train.finish();
  if (s.network.output == NetworkOutput::flow && s.process.edm) {
    // EDM's levels are drawn without a time, so a velocity has no alpha', sigma' to be read with.
    ConfigTable n2 = root.table("network");
    n2.fail("output", "a flow output needs a process with times (not edm, whose levels are drawn log-normally)");
  }

  Index dims = 0;
  std::vector<Index> data_image;
  s.data = read_training_data(root.table("data"), run, classes, s.seed, s.batch_size, dims, run.data_description, data_image);
  if (unet) {
    // The image shape: [network] image, else the image data's own.
    ConfigTable n2 = root.table("network");
    if (!image && data_image.empty()) n2.fail("architecture", fmt::format("a U-Net needs image = [channels, height, width] for {}-dimensional rows", dims));
    const std::vector<Index> shape = image ? *image : data_image;
    u.channels = shape[0], u.height = shape[1], u.width = shape[2];
    if (u.dims() != dims)
      n2.fail(image ? "image" : "architecture", fmt::format("image {} x {} x {} = {} values per row, but the data have {}", u.channels, u.height,
                                                            u.width, u.dims(), dims));
    if (const std::string problem = unet_architecture_problem(u); !problem.empty()) n2.fail("architecture", "U-Net: " + problem);
  } else {
    a.dims = dims;
  }

  // The checkpoint: weights, EMA and two AdamW moments, 4 copies of the parameters in float64 at most.
  const double width = static_cast<double>(a.width);
  const double parameters = unet ? static_cast<double>(unet_parameter_count(u))
                                 : width * width * (3.0 * a.blocks + 1) + width * (a.embedding_dims + 2 * a.dims + 8);
  read_training_output(root, 4 * 8 * parameters + (1 << 16), run, s);
  return run;
}

namespace {

std::atomic<bool> interrupted{false};

extern "C" void on_train_interrupt(int) {
  interrupted = true;
  std::signal(SIGINT, SIG_DFL);  // a second ^C ends the process at once (the checkpoint stays whole)
}

}  // namespace

double recent_loss(const std::vector<TrainingProgress>& h, std::size_t window) {
  if (h.empty()) return std::nan("");
  const std::size_t begin = h.size() > window ? h.size() - window : 0;
  double sum = 0;
  for (std::size_t i = begin; i < h.size(); ++i) sum += h[i].loss;
  return sum / static_cast<double>(h.size() - begin);
}

const NetworkBackend* training_backend() {
  try {
    return &network_backend();
  } catch (const std::exception& e) {
    std::cerr << "diffode train: " << e.what() << "\n";
    return nullptr;
  }
}

int train_interruptibly(const std::function<TrainingOutcome(const std::function<bool()>& stop)>& train, const std::function<void()>& done,
                        TrainingOutcome& outcome) {
  interrupted = false;
  auto previous_handler = std::signal(SIGINT, on_train_interrupt);
  const auto finish = [&] {
    if (done) done();
    std::signal(SIGINT, previous_handler);
  };
  try {
    outcome = train([] { return interrupted.load(); });
  } catch (const std::invalid_argument& e) {
    finish();
    std::cerr << "diffode train: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    finish();
    std::cerr << "diffode train: failed: " << e.what() << "\n";
    return 1;
  }
  finish();
  return 0;
}

void write_history_steps(Hdf5File& h5, const std::vector<TrainingProgress>& history) {
  std::vector<double> step, loss, lr, seconds;
  for (const TrainingProgress& p : history) {
    step.push_back(static_cast<double>(p.step));
    loss.push_back(p.loss);
    lr.push_back(p.learning_rate);
    seconds.push_back(p.seconds);
  }
  h5.write_vector("step", step);
  h5.write_vector("loss", loss);
  h5.write_vector("learning_rate", lr);
  h5.write_vector("seconds", seconds);
}

}  // namespace diffode
