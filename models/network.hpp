// Neural score networks, as everything outside LibTorch sees them.
//
// A network is a model like the exact mixture: it gives a Predictor<Batch> (models/predictor.hpp)
// that counts evaluations, for any sampler, the likelihood tool and the sweeps. Its LibTorch code
// (models/torch/) is built into a separate shared library, the network backend, which the command-
// line program opens only when a config names a network or asks for training: loading LibTorch
// costs about half a second per process, which every other command (and the thousands of child
// processes the test suite starts) would otherwise pay. This header is the whole interface between
// the two: plain data in, plain data or a Predictor out, no LibTorch types.
//
// Conditioning, the same for every process (so one network serves VP, VE, EDM and flow processes
// whose marginals have the same scale-free noise level sigma~ = sigma / alpha):
//   input   c_in x with c_in = 1 / sqrt(alpha^2 sigma_data^2 + sigma^2): unit variance for data of
//           standard deviation sigma_data (EDM's c_in, Karras et al. 2022, arXiv:2206.00364,
//           Table 1, written for any alpha);
//   noise   c_noise = log(sigma~) / 4 (EDM's c_noise);
//   output  F, read as one of the Parameterizations (eps, x0, v, score, flow), or `edm`:
//           D(x~; sigma~) = c_skip x~ + c_out F with c_skip = sigma_data^2 / (sigma~^2 + sigma_data^2),
//           c_out = sigma~ sigma_data / sqrt(sigma~^2 + sigma_data^2) (Table 1), x~ = x / alpha.
#pragma once

#include "core/state.hpp"
#include "models/predictor.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace diffode {

// What the network's raw output F means.
enum class NetworkOutput { eps, x0, v, score, flow, edm };

std::string_view to_string(NetworkOutput output);
// Throws std::invalid_argument naming the allowed values.
NetworkOutput network_output_from_string(std::string_view name);

// The residual MLP for low-dimensional data: x -> Linear(dims, width), `blocks` residual blocks
// (LayerNorm, SiLU, Linear(width, width), SiLU, Linear(width, width), plus the block's input, the noise
// (and class) embedding added after the first Linear), then LayerNorm, SiLU, Linear(width, dims).
struct MlpArchitecture {
  Index dims = 2;
  Index width = 128;
  Index blocks = 3;
  Index embedding_dims = 64;
  // "sinusoidal" (Vaswani et al. 2017 frequencies over c_noise) or "fourier" (random Fourier
  // features, Tancik et al. 2020, with `fourier_scale` the std of the frequencies).
  std::string embedding = "sinusoidal";
  double fourier_scale = 16.0;
  Index classes = 0;  // 0: unconditional; else labels 0..classes-1 and the null class `classes`
};

// A U-Net for images of channels x height x width values (a row of D = C H W values, channel-major
// then row-major, reshaped to an image inside the network): a 3x3 input convolution to
// base_channels, then per level (resolution halved between levels by a stride-2 convolution)
// `blocks_per_level` residual blocks (GroupNorm, SiLU, 3x3 convolution, plus the noise and class
// embedding, GroupNorm, SiLU, 3x3 convolution, and the block's input), a middle of two residual
// blocks with optional self-attention between them at the lowest resolution, and the mirror path up
// (nearest-neighbour upsampling and a 3x3 convolution) whose blocks also take the skip connection of
// each encoder block; GroupNorm, SiLU and a 3x3 convolution (zero-initialised) to the output.
// The noise embedding is the MLP's (`embedding`, `embedding_dims`, `fourier_scale`).
struct UnetArchitecture {
  Index channels = 1, height = 28, width = 28;
  Index base_channels = 16;
  std::vector<Index> channel_multipliers = {1, 2, 2};  // one per level; height and width divisible by 2^(levels-1)
  Index blocks_per_level = 1;
  bool attention = true;  // self-attention in the middle (the lowest resolution)
  Index attention_heads = 1;
  Index groups = 8;       // GroupNorm groups; divides every level's channel count
  Index embedding_dims = 64;
  std::string embedding = "sinusoidal";
  double fourier_scale = 16.0;
  Index classes = 0;  // 0: unconditional; else labels 0..classes-1 and the null class `classes`
  Index dims() const { return channels * height * width; }
};

// Why `a` cannot be built (wrong shape: sizes not divisible by 2^(levels-1), groups not dividing the
// channels, ...), or "" when it can.
std::string unet_architecture_problem(const UnetArchitecture& a);
// The number of trainable parameters of the U-Net `a` (as the LibTorch module counts them).
std::int64_t unet_parameter_count(const UnetArchitecture& a);

// A network with its conditioning: everything needed to rebuild it from a checkpoint.
struct NetworkSpec {
  std::string kind = "mlp";     // which architecture: "mlp" (`architecture`) or "unet" (`unet`)
  MlpArchitecture architecture;  // kind = "mlp"
  UnetArchitecture unet;         // kind = "unet"
  NetworkOutput output = NetworkOutput::edm;
  double sigma_data = 0.5;
  Index dims() const { return kind == "unet" ? unet.dims() : architecture.dims; }
  Index classes() const { return kind == "unet" ? unet.classes : architecture.classes; }
};

// One line naming the architecture and its sizes, the output and sigma_data (for results files).
std::string describe(const NetworkSpec& spec);

// Where and how a loaded network runs.
struct NetworkRuntime {
  std::string device = "cpu";    // "cpu" or "cuda" / "cuda:N"
  std::string dtype = "float64"; // "float32" or "float64"
  Index batch_size = 0;          // rows per network call; 0: the whole block in one call
  int threads = 1;               // intra-op threads of LibTorch for this model's calls
  // Where a sampling run keeps its state: "host" (Eigen; each evaluation copies the batch to the
  // device and back) or "device" (NetworkBackend::solve_on_device). Recorded in description().
  std::string state = "host";
};

// A user's TorchScript module (torch.jit.script / torch.jit.trace, saved with torch.jit.save).
struct TorchScriptSpec {
  std::string file;
  Index dims = 0;                              // the data's dimension (checked by a dry run at load)
  Parameterization prediction = Parameterization::eps;  // what the module outputs
  // The module's arguments: "x_t" for (x, t), "x_sigma" for (x, sigma), "x_t_class" for (x, t, class).
  std::string signature = "x_t";
  // What the module is handed as its time or noise input: "t" (the process's time), "t1000"
  // (1000 t, the DDPM convention), "sigma" (sigma~), "log_sigma_quarter" (log(sigma~)/4).
  std::string time_input = "t";
  // The module takes x~ = x / alpha (true: scale-free input, as EDM and k-diffusion models) or the
  // process's x (false: as DDPM / score-SDE models).
  bool scale_free_input = false;
  // "x_t_class": labels 0..classes-1, and `classes` the null class (what make_predictor(-1) passes).
  Index classes = 0;
  // The process the module was trained under (the config's [process]), as functions of its time:
  // a predictor is handed (alpha, sigma) per sample, and the module its process's t at
  // sigma~ = sigma / alpha and x scaled to that process's alpha(t). d_alpha and d_sigma (d/dt) are
  // needed only to read a flow velocity.
  std::function<double(double)> t_of_scaled_sigma, alpha, sigma, d_alpha, d_sigma;
};

// The score s = grad_x log p_t of a network, read off its prediction at per-sample levels (alpha_n,
// sigma_n) as a Predictor is asked, with products of its Jacobian J_s = ds/dx by reverse-mode autograd:
// what the likelihood solver needs (solvers/diffusion/likelihood.hpp's DivergenceSource, which sits
// above this layer and wraps this). Rows are independent, so one backward pass over the batch gives
// every row's product: the batch is replicated once per probe (or per dimension), the network run
// once on the replicas, and one backward pass gives all the products.
class ScoreJacobian {
 public:
  virtual ~ScoreJacobian() = default;
  // score (N x D) and the exact div_x s (N): the D vector-Jacobian products with the unit vectors,
  // one backward pass over D replicas of the batch (D times the cost of an evaluation: small D only).
  virtual void score_and_divergence(const Batch& x, const PerSample& alpha, const PerSample& sigma, Batch& score,
                                    PerSample& divergence) const = 0;
  // score (N x D) and, per probe v_k (N x D, a row per sample), the vector-Jacobian products
  // v_k^T J_s as N x D rows (one backward pass over K replicas). For the quadratic forms v^T J_s v
  // of Hutchinson's estimator this is the same number as v . (J_s v); J_s itself is symmetric for an
  // exact score (a Hessian of log p_t), for a network only nearly so.
  virtual void score_and_vjps(const Batch& x, const PerSample& alpha, const PerSample& sigma, std::span<const Batch> probes,
                              Batch& score, std::vector<Batch>& vjps) const = 0;
};

// One loaded model. make_predictor gives each thread its own predictor (NFE counters, scratch).
class NetworkModel {
 public:
  virtual ~NetworkModel() = default;
  virtual Index dims() const = 0;
  virtual Index classes() const = 0;  // 0 when unconditional
  // A short description for results files: kind, file, its SHA-256, architecture, output.
  virtual std::string description() const = 0;
  // `label`: the class to condition on (-1: unconditional, i.e. the null class).
  virtual std::unique_ptr<Predictor<Batch>> make_predictor(int label = -1) const = 0;
  // The score and its Jacobian products (ScoreJacobian), for one thread, as make_predictor.
  virtual std::unique_ptr<ScoreJacobian> make_score_jacobian(int label = -1) const = 0;
};

// How a network is trained (diffode train). Data are given as a generator: rows of x0 for a step
// (and their labels, or none), drawn from (seed, step) so that a resumed run draws what the
// uninterrupted one would.
struct TrainingBatch {
  Batch x0;
  std::vector<std::int64_t> labels;  // empty, or one per row
};
using TrainingData = std::function<TrainingBatch(std::uint64_t step)>;

// The forward process of training, as functions of t on [t_min, t_max] (no Process type crosses the
// boundary, so the backend stays free of the problems layer's virtual classes).
struct TrainingProcess {
  std::function<double(double)> alpha, sigma, d_alpha, d_sigma;
  double t_min = 0, t_max = 1;
  bool edm = false;  // sigma~ = t, alpha = 1: noise levels drawn log-normally (EDM's P_mean, P_std)
};

struct TrainingSpec {
  NetworkSpec network;
  TrainingProcess process;
  TrainingData data;
  std::uint64_t seed = 0;
  std::int64_t steps = 1000;
  std::int64_t batch_size = 256;
  double learning_rate = 1e-3;
  double weight_decay = 0.0;
  std::int64_t warmup_steps = 100;
  double gradient_clip = 1.0;   // max global gradient norm; 0: none
  double ema_decay = 0.999;
  double label_dropout = 0.1;   // probability of replacing a label by the null class
  double p_mean = -1.2, p_std = 1.2;  // EDM's log-normal noise levels (when process.edm)
  std::int64_t checkpoint_every = 500;
  std::string checkpoint_file;  // written atomically every checkpoint_every steps and at the end
  // A checkpoint to continue from ("" = start afresh): its network, optimiser state, step and loss
  // history are restored, and the remaining steps are those the uninterrupted run would take.
  std::string resume_from;
  std::string device = "cpu";
  std::string dtype = "float32";
  int threads = 1;
};

struct TrainingProgress {
  std::int64_t step = 0;
  double loss = 0;
  double learning_rate = 0;
  double seconds = 0;
};

struct TrainingOutcome {
  std::int64_t steps_done = 0;
  bool interrupted = false;
  std::vector<TrainingProgress> history;  // one entry per step since the start of training
};

// A feature network: rows of images (C x H x W, channel-major) in, one feature vector per row out,
// for Frechet distances on features (experiments/run/frechet.hpp) and for classifying samples.
//   classifier   a checkpoint of diffode's image classifier (models/torch/classifier_torch.hpp): its
//                features are the penultimate layer, its logits the last;
//   torchscript  a user's TorchScript module taking N x C x H x W (or N x D when no shape is given)
//                and returning N x F (more dimensions are flattened), e.g. pytorch-fid's Inception-v3.
struct FeatureSpec {
  std::string kind = "classifier";  // "classifier" or "torchscript"
  std::string file;
  // The shape each row is reshaped to (C, H, W); empty: the rows as they are (N x D). A classifier
  // checks it against its own.
  std::vector<Index> input_shape;
  // What the network is handed: input_scale * x + input_shift of the stored values x.
  double input_scale = 1.0, input_shift = 0.0;
  std::string dtype = "float32";  // the dtype of the module's input ("float32" or "float64")
};

class FeatureNetwork {
 public:
  virtual ~FeatureNetwork() = default;
  virtual Index input_dims() const = 0;    // C H W; 0 when the spec gave no shape
  virtual Index feature_dims() const = 0;  // 0 until known (a module without a shape is not dry-run)
  virtual Index classes() const = 0;       // logits of a classifier; 0 for a module
  // A short name for results ("fmnist-classifier", a module's file stem) and the SHA-256 of its file.
  virtual std::string name() const = 0;
  virtual std::string sha256() const = 0;
  virtual std::string description() const = 0;
  // Features (N x F) and, of a classifier, logits (N x classes; throws std::logic_error otherwise).
  virtual Batch features(const Batch& rows) const = 0;
  virtual Batch logits(const Batch& rows) const = 0;
};

// The image classifier (models/torch/classifier_torch.hpp): two stages of 3x3 convolution, GroupNorm,
// ReLU and 2x2 max-pooling, a fully connected layer of `features` units (the features), ReLU, and a
// linear layer to the logits.
struct ClassifierArchitecture {
  Index channels = 1, height = 28, width = 28;
  Index classes = 10;
  Index conv1 = 32, conv2 = 64;  // channels of the two convolution stages (multiples of 8: GroupNorm's 8 groups)
  Index features = 128;
  std::string name = "classifier";  // what its features are called ("fmnist-classifier")
};

// Cross-entropy training of the classifier with AdamW, a linear warm-up and a cosine decay of the
// learning rate; reproducible and resumable as TrainingSpec is (labels are required).
struct ClassifierTrainingSpec {
  ClassifierArchitecture architecture;
  TrainingData data;
  std::uint64_t seed = 0;
  std::int64_t steps = 1000;
  std::int64_t batch_size = 128;
  double learning_rate = 2e-3;
  double weight_decay = 1e-4;
  std::int64_t warmup_steps = 100;
  std::int64_t checkpoint_every = 500;
  std::string checkpoint_file;
  std::string resume_from;
  std::string device = "cpu";
  std::string dtype = "float32";
  int threads = 1;
};

// A whole fixed-grid solve with the state resident on the network's device (NetworkBackend::
// solve_on_device, interface version 4): x~_T is copied to the device once, the sampler runs on
// LibTorch tensors (core/state_torch.hpp) through a Predictor<torch::Tensor> of the network that
// keeps every tensor on its device, and the result is copied back once. The arithmetic is the host
// path's (solvers/diffusion/device_solve_torch.hpp); it runs device_state_samplers() and refuses others.
struct DeviceSolveSpec {
  std::string sampler;  // a [sampler] name
  // The options of the samplers the device path runs (their [sampler] keys; defaults as there).
  int order = 0;                        // dpm_solver, unipc, lms (0: the sampler's own default)
  int max_order = 4;                    // ipndm
  int lower_order_final_below = 0;      // dpmpp_2m, dpmpp_3m
  std::string form = "reference";       // dpmpp_3m: "reference" or "third_order"
  std::string variant = "bh1";          // unipc: "bh1" or "bh2"
  std::string prediction = "data";      // unipc: "data" or "noise"
  bool lower_order_final = true;        // unipc
  bool corrector = true;                // unipc
  std::string startup = "lower_order";  // lms: "lower_order" or "rk4"
  std::vector<double> sigmas;           // the scale-free grid (strictly decreasing; the last may be 0)
  // The process's (alpha, sigma) at a scale-free level sigma~ > 0, computed on the host as the host
  // path's ScaledDenoiser does (solvers/diffusion/denoiser.hpp); unit_alpha: alpha = 1, sigma = sigma~.
  std::function<std::pair<double, double>(double)> levels;
  bool unit_alpha = false;
  bool denoise_at_end = false;  // end with D(x~; sigmas.back()) (one more evaluation)
  int label = -1;               // the class to condition on (-1: the null class)
};

// The [sampler] names solve_on_device runs: the deterministic fixed-grid samplers (euler and heun
// without churn, ddim with eta = 0). Stochastic and adaptive samplers are refused on this path:
// their noise and step control are drawn and decided on the host, per step.
inline const std::vector<std::string>& device_state_samplers() {
  static const std::vector<std::string> names{"euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m", "dpm_solver", "unipc", "ipndm", "lms"};
  return names;
}

struct DeviceSolveOutcome {
  Batch x;  // x~ at the grid's last point, or the denoised x0 when denoise_at_end
  Index nfe = 0;          // the sampler's evaluations, the final denoising included (as the host path counts)
  Index model_calls = 0;  // the predictor's own count of its evaluations
  bool failed = false;
  std::string failure;
};

// The functions the backend library exports, as one table (see experiments/run/networks.hpp for the
// loader). `stop` is polled between steps (SIGINT): when it returns true, training writes a
// checkpoint and returns with `interrupted` set.
struct NetworkBackend {
  // 2: NetworkModel::make_score_jacobian; 3: feature networks, classifier training; 4: solve_on_device.
  // Fields are only ever appended, so a table of version v is a prefix of every later one: a program
  // reads a field only when the backend's version has it.
  int abi_version = 4;
  std::shared_ptr<const NetworkModel> (*load_checkpoint)(const std::string& file, const NetworkRuntime& runtime) = nullptr;
  std::shared_ptr<const NetworkModel> (*load_torchscript)(const TorchScriptSpec& spec, const NetworkRuntime& runtime) = nullptr;
  TrainingOutcome (*train)(const TrainingSpec& spec, const std::function<void(const TrainingProgress&)>& progress,
                           const std::function<bool()>& stop) = nullptr;
  std::shared_ptr<const FeatureNetwork> (*load_features)(const FeatureSpec& spec, const NetworkRuntime& runtime) = nullptr;
  TrainingOutcome (*train_classifier)(const ClassifierTrainingSpec& spec, const std::function<void(const TrainingProgress&)>& progress,
                                      const std::function<bool()>& stop) = nullptr;
  // Version 4. `model` must be one this backend loaded; throws std::invalid_argument for a sampler
  // the device path does not run (naming the ones it does) and std::runtime_error for a model it
  // cannot take. x_scaled: x~_T on the host (N x D), copied to the model's device once.
  DeviceSolveOutcome (*solve_on_device)(const NetworkModel& model, const DeviceSolveSpec& spec, const Batch& x_scaled) = nullptr;
};

}  // namespace diffode

// The one symbol the backend library exports (C linkage, so dlsym finds it by this name).
extern "C" const diffode::NetworkBackend* diffode_network_backend();
