// solve_on_device (device_solve_torch.hpp): the deterministic fixed-grid samplers on device-resident
// torch state. The samplers are the host path's templates (each header cites its paper); this file
// only chooses one by name, hands it the same options and grid, and moves the state across once
// each way.
#include "solvers/diffusion/device_solve_torch.hpp"

#include "core/state_torch.hpp"
#include "models/torch/network_model_torch.hpp"
#include "solvers/diffusion/ddim.hpp"
#include "solvers/diffusion/dpm_solver.hpp"
#include "solvers/diffusion/dpm_solver_pp.hpp"
#include "solvers/diffusion/euler.hpp"
#include "solvers/diffusion/heun.hpp"
#include "solvers/diffusion/ipndm.hpp"
#include "solvers/diffusion/lms.hpp"
#include "solvers/diffusion/unipc.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace diffode {
namespace {

using Tensor = torch::Tensor;
using Ops = StateOps<Tensor>;

// ScaledDenoiser<Tensor> (solvers/diffusion/denoiser.hpp) with the process replaced by its levels
// at sigma~, which the host computed as ScaledDenoiser does: the same calls, in the same order,
// with the same arithmetic, so the device path's samples are the host path's to rounding.
class DeviceDenoiser {
 public:
  DeviceDenoiser(const Predictor<Tensor>& predictor, const DeviceSolveSpec& spec) : predictor_(predictor), spec_(spec) {}

  void operator()(const Tensor& x_scaled, double sigma, Tensor& denoised) const {
    if (spec_.unit_alpha) {
      predictor_.predict_as(Parameterization::x0, x_scaled, {Ops::fill(x_scaled, 1.0), Ops::fill(x_scaled, sigma)}, denoised);
      return;
    }
    const auto [alpha, level] = spec_.levels(sigma);
    const Tensor alphas = Ops::fill(x_scaled, alpha), sigmas = Ops::fill(x_scaled, level);
    if (alpha == 1.0) {
      predictor_.predict_as(Parameterization::x0, x_scaled, {alphas, sigmas}, denoised);
    } else {
      Ops::scale(x_, alpha, x_scaled);
      predictor_.predict_as(Parameterization::x0, x_, {alphas, sigmas}, denoised);
    }
  }
  // Per-sample levels: only the adaptive samplers ask for them, and they do not run here.
  void operator()(const Tensor&, const Tensor&, Tensor&) const {
    throw std::logic_error("the device-resident solve evaluates the whole batch at one level per call");
  }

 private:
  const Predictor<Tensor>& predictor_;
  const DeviceSolveSpec& spec_;
  mutable Tensor x_;
};

[[noreturn]] void refuse(const std::string& what) { throw std::invalid_argument(what); }

template <class E>
E choose(const std::string& key, const std::string& value, std::initializer_list<std::pair<const char*, E>> options) {
  for (const auto& [name, e] : options)
    if (value == name) return e;
  refuse(fmt::format("solve_on_device: {} '{}' is not an option", key, value));
}

// DDIM is run with eta = 0 and no noise source; GCC, inlining it, does not see that its noise branch
// is then dead and warns of the null noise pointer there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnonnull"
IntegrationStats run_sampler(const DeviceDenoiser& d, Tensor& x, const DeviceSolveSpec& spec) {
  const std::span<const double> sigmas(spec.sigmas);
  const std::string& name = spec.sampler;
  if (name == "euler") return sample_euler(d, x, sigmas, ChurnOptions{});
  if (name == "heun") return sample_heun(d, x, sigmas, ChurnOptions{});
  if (name == "ddim") return sample_ddim(d, x, sigmas, DDIMOptions{});
  if (name == "dpmpp_2m") return sample_dpmpp_2m(d, x, sigmas, DpmSolverPPMultistepOptions{.lower_order_final_below = spec.lower_order_final_below});
  if (name == "dpmpp_3m") {
    const DpmSolverPPMultistepOptions o{
        .lower_order_final_below = spec.lower_order_final_below,
        .form = choose<DpmSolverPP3MForm>("form", spec.form, {{"reference", DpmSolverPP3MForm::reference}, {"third_order", DpmSolverPP3MForm::third_order}})};
    return sample_dpmpp_3m(d, x, sigmas, o);
  }
  if (name == "dpm_solver") {
    DpmSolverOptions o;
    if (spec.order > 0) o.order = spec.order;
    return sample_dpm_solver(d, x, sigmas, o);
  }
  if (name == "unipc") {
    UniPCOptions o{.variant = choose<UniPCVariant>("variant", spec.variant, {{"bh1", UniPCVariant::bh1}, {"bh2", UniPCVariant::bh2}}),
                   .prediction = choose<UniPCPrediction>("prediction", spec.prediction, {{"data", UniPCPrediction::data}, {"noise", UniPCPrediction::noise}}),
                   .lower_order_final = spec.lower_order_final,
                   .corrector = spec.corrector};
    if (spec.order > 0) o.order = spec.order;
    return sample_unipc(d, x, sigmas, o);
  }
  if (name == "ipndm") return sample_ipndm(d, x, sigmas, IPNDMOptions{.max_order = spec.max_order});
  if (name == "lms") {
    LmsOptions o{.startup = choose<LmsStartup>("startup", spec.startup, {{"lower_order", LmsStartup::lower_order}, {"rk4", LmsStartup::rk4}})};
    if (spec.order > 0) o.order = spec.order;
    return sample_lms(d, x, sigmas, o);
  }
  refuse(fmt::format("solve_on_device: the sampler '{}' does not run on the device state; it runs the deterministic fixed-grid samplers {}",
                     name, fmt::join(device_state_samplers(), ", ")));
}
#pragma GCC diagnostic pop

}  // namespace

DeviceSolveOutcome solve_on_device(const NetworkModel& model, const DeviceSolveSpec& spec, const Batch& x_scaled) {
  const auto& names = device_state_samplers();
  if (std::find(names.begin(), names.end(), spec.sampler) == names.end())
    refuse(fmt::format("solve_on_device: the sampler '{}' does not run on the device state; it runs the deterministic fixed-grid samplers {}",
                       spec.sampler, fmt::join(names, ", ")));
  if (!spec.unit_alpha && !spec.levels) refuse("solve_on_device: the process's levels are missing");
  if (x_scaled.cols() != model.dims())
    refuse(fmt::format("solve_on_device: x_T has {} columns for a network of {} dimensions", x_scaled.cols(), model.dims()));
  const std::unique_ptr<Predictor<Tensor>> predictor = make_tensor_predictor(model, spec.label);
  const DeviceDenoiser denoiser(*predictor, spec);
  // The one host->device copy: x~_T in float64 on the network's device.
  const Tensor like = torch::empty({x_scaled.rows(), x_scaled.cols()}, torch::TensorOptions().dtype(torch::kFloat64).device(network_device(model)));
  Tensor x = Ops::from_host(x_scaled, like);
  const torch::NoGradGuard no_grad;
  DeviceSolveOutcome out;
  const IntegrationStats stats = run_sampler(denoiser, x, spec);
  out.nfe = stats.nfe;
  out.failed = stats.failed;
  out.failure = stats.failure;
  if (!stats.failed && spec.denoise_at_end) {
    Tensor denoised;
    denoiser(x, spec.sigmas.back(), denoised);
    ++out.nfe;
    x = denoised;
  }
  out.model_calls = predictor->nfe();
  // The one device->host copy.
  out.x = Ops::to_host(x);
  return out;
}

}  // namespace diffode
