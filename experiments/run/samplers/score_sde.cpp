// The score-SDE samplers in the process's own time: predictor-corrector sampling (Song et al. 2021,
// arXiv:2011.13456, Algorithm 1 and Appendix G) and annealed Langevin dynamics (Song & Ermon 2019,
// arXiv:1907.05600, Algorithm 1), on the grid's times.
#include "experiments/run/samplers/parts.hpp"
#include "experiments/run/samplers/process_time.hpp"
#include "solvers/diffusion/predictor_corrector.hpp"

namespace diffode::samplers {
namespace {

std::vector<KeySpec> corrector_keys(std::string corrector_default, std::int64_t steps_default) {
  const PcOptions d;
  return {string_key("corrector", "Langevin step rule: target signal-to-noise ratio, or annealed (NCSN)")
              .fallback_str(std::move(corrector_default))
              .one_of({"langevin", "annealed_langevin"}),
          integer_key("corrector_steps", "Langevin steps per noise level").fallback_int(steps_default).at_least(0).at_most(10000),
          number_key("snr", "target signal-to-noise ratio r (langevin)").fallback(d.snr).above(0),
          number_key("step_ratio", "annealed_langevin: the step alpha_i / sigma_i^2 (NCSN's epsilon / sigma_L^2; stable below 2)")
              .fallback(d.step_ratio)
              .above(0),
          string_key("norm", "Langevin norms: batch means (score_sde) or each sample's own")
              .fallback_str("batch_mean")
              .one_of({"batch_mean", "per_sample"}),
          boolean_key("noise_removal", "return the last step's mean, without its noise").fallback_bool(true), noise_key(false)};
}

void read_corrector(ConfigTable& o, PcOptions& pc) {
  pc.corrector = o.string("corrector") == "langevin" ? PcCorrector::langevin : PcCorrector::annealed_langevin;
  pc.corrector_steps = static_cast<int>(o.integer("corrector_steps"));
  pc.snr = o.number("snr");
  pc.step_ratio = o.number("step_ratio");
  pc.norm = o.string("norm") == "batch_mean" ? LangevinNorm::batch_mean : LangevinNorm::per_sample;
  pc.noise_removal = o.boolean("noise_removal");
}

ConfiguredSampler pc_sampler(const PcOptions& pc) {
  ConfiguredSampler s{.stochastic = true, .steps_to_zero = false, .batch_coupled = pc.norm == LangevinNorm::batch_mean && pc.corrector_steps > 0 &&
                                                                                    pc.corrector == PcCorrector::langevin};
  s.run = [pc](const SamplerContext& c, Batch& x_scaled) {
    return in_process_variables(c, x_scaled, [&](Batch& x, auto& observer) {
      const DiffusionScore<Batch> score(c.process, c.predictor);
      const PcNoise<Batch> noise = c.noise.kind == NoiseKind::per_step ? PcNoise<Batch>::per_step(c.noise.seed, x.cols(), c.noise.first_sample)
                                                                       : PcNoise<Batch>(c.noise.seed, c.process.t_max(), x.cols(), c.noise.first_sample);
      return sample_pc(score, x, c.times, pc, &noise, observer);
    });
  };
  return s;
}

}  // namespace

void add_score_sde_family(Registry& r) {
  std::vector<KeySpec> pc_keys = corrector_keys("langevin", 1);
  pc_keys.insert(pc_keys.begin(), {string_key("predictor", "the reverse-SDE step between levels")
                                       .fallback_str("reverse_diffusion")
                                       .one_of({"reverse_diffusion", "euler_maruyama", "ancestral", "none"}),
                                   string_key("ancestral_variance", "ancestral predictor's variance: score_sde's choice, DDPM's beta, or the posterior's")
                                       .fallback_str("reference")
                                       .one_of({"reference", "forward", "posterior"})});
  r.push_back({"pc", "score_sde", "predictor-corrector sampling (Song et al. 2021, arXiv:2011.13456, Alg. 1, 4-5)", options_schema("pc", pc_keys),
               [](ConfigTable& o) {
                 PcOptions pc;
                 const std::string predictor = o.string("predictor");
                 pc.predictor = predictor == "reverse_diffusion" ? PcPredictor::reverse_diffusion
                                : predictor == "euler_maruyama"  ? PcPredictor::euler_maruyama
                                : predictor == "ancestral"       ? PcPredictor::ancestral
                                                                 : PcPredictor::none;
                 const std::string variance = o.string("ancestral_variance");
                 pc.ancestral_variance = variance == "reference" ? AncestralVariance::reference
                                         : variance == "forward" ? AncestralVariance::forward
                                                                 : AncestralVariance::posterior;
                 read_corrector(o, pc);
                 if (pc.predictor == PcPredictor::none && pc.corrector_steps == 0)
                   o.fail("corrector_steps", "must be >= 1 when predictor = \"none\" (nothing would move the samples)");
                 return pc_sampler(pc);
               }});
  std::vector<KeySpec> ald_keys = corrector_keys("annealed_langevin", 100);
  std::erase_if(ald_keys, [](const KeySpec& k) { return k.key == "corrector" || k.key == "snr" || k.key == "norm"; });
  ald_keys[0].at_least(1);
  r.push_back({"annealed_langevin", "score_sde",
               "annealed Langevin dynamics on the grid's levels: NCSN's sampler (Song & Ermon 2019, arXiv:1907.05600, Alg. 1)",
               options_schema("annealed_langevin", ald_keys), [](ConfigTable& o) {
                 PcOptions pc{.predictor = PcPredictor::none, .corrector = PcCorrector::annealed_langevin};
                 pc.corrector_steps = static_cast<int>(o.integer("corrector_steps"));
                 pc.step_ratio = o.number("step_ratio");
                 pc.noise_removal = o.boolean("noise_removal");
                 pc.norm = LangevinNorm::per_sample;  // unused by the annealed rule
                 ConfiguredSampler s = pc_sampler(pc);
                 s.batch_coupled = false;
                 return s;
               }});
}

}  // namespace diffode::samplers
