// The baseline of scripts/bench.sh: DPM-Solver++(2M) (Lu et al. 2022b, arXiv:2211.01095,
// Algorithm 2, the multistep form of k-diffusion's sample_dpmpp_2m) on 20 steps of the Karras grid
// (Karras et al. 2022, arXiv:2206.00364, eq. 5: sigma 80 -> 0.002, rho = 7, then 0) for an exact
// isotropic Gaussian mixture in D dimensions with K components, float64, written the way one would
// by hand: a plain OpenMP loop over samples, each carried through every step in registers, the
// per-step constants hoisted. No part of the project is used. Usage:
//   handwritten_mixture_loop D K N   (threads: OMP_NUM_THREADS)
// prints one line: D K N threads seconds cpu_seconds samples_per_s checksum (the loop alone is
// timed). scripts/bench.sh builds it with -O3 -march=native -ffast-math -fopenmp: without
// -ffast-math (reassociation) GCC cannot vectorise the D-sums.
#include <omp.h>

#include <cmath>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) return std::fprintf(stderr, "usage: %s D K N\n", argv[0]), 2;
  const int D = std::atoi(argv[1]), K = std::atoi(argv[2]), steps = 20;
  const long N = std::atol(argv[3]);
  std::mt19937_64 rng(0);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.5, 1.5);
  std::vector<double> mu(K * D), s2(K), logw(K), x(N * D);
  for (int k = 0; k < K; ++k) {
    for (int d = 0; d < D; ++d) mu[k * D + d] = normal(rng);
    s2[k] = std::pow(0.3 + 0.4 * (uniform(rng) - 0.5), 2);
    logw[k] = std::log(uniform(rng));
  }
  std::vector<double> sig(steps + 1, 0.0);  // Karras grid, then sigma = 0
  const double lo = std::pow(0.002, 1 / 7.0), hi = std::pow(80.0, 1 / 7.0);
  for (int i = 0; i < steps; ++i) sig[i] = std::pow(hi + i / (steps - 1.0) * (lo - hi), 7.0);
  for (auto& v : x) v = 80.0 * normal(rng);
  // Per step: 1/v_k, gain s_k^2 / v_k and log w_k - D/2 log(2 pi v_k) (EDM: alpha = 1).
  std::vector<double> prec(steps * K), gain(steps * K), lnorm(steps * K);
  for (int i = 0; i < steps; ++i)
    for (int k = 0; k < K; ++k) {
      const double v = s2[k] + sig[i] * sig[i];
      prec[i * K + k] = 1 / v, gain[i * K + k] = s2[k] / v;
      lnorm[i * K + k] = logw[k] - 0.5 * D * std::log(2 * M_PI * v);
    }
  const double t0 = omp_get_wtime();
  const std::clock_t c0 = std::clock();
#pragma omp parallel
  {
    std::vector<double> xs(D), den(D), old(D), lr(K);
#pragma omp for schedule(static)
    for (long n = 0; n < N; ++n) {
      for (int d = 0; d < D; ++d) xs[d] = x[n * D + d];
      for (int i = 0; i < steps; ++i) {
        double top = -INFINITY, total = 0;
        for (int k = 0; k < K; ++k) {  // responsibilities by log-sum-exp
          double q = 0;
          for (int d = 0; d < D; ++d) q += (xs[d] - mu[k * D + d]) * (xs[d] - mu[k * D + d]);
          lr[k] = lnorm[i * K + k] - 0.5 * q * prec[i * K + k];
          top = std::max(top, lr[k]);
        }
        for (int k = 0; k < K; ++k) total += lr[k] = std::exp(lr[k] - top);
        for (int d = 0; d < D; ++d) den[d] = 0;
        for (int k = 0; k < K; ++k) {  // E[x0 | x] = sum_k r_k (mu_k + g_k (x - mu_k))
          const double r = lr[k] / total, g = gain[i * K + k];
          for (int d = 0; d < D; ++d) den[d] += r * (mu[k * D + d] + g * (xs[d] - mu[k * D + d]));
        }
        if (sig[i + 1] == 0) {  // the last step lands on the denoiser
          for (int d = 0; d < D; ++d) xs[d] = den[d];
          break;
        }
        const double h = std::log(sig[i] / sig[i + 1]), e = -std::expm1(-h);
        const double c = i == 0 ? 0 : 0.5 * h / std::log(sig[i - 1] / sig[i]);  // 1 / (2 r)
        for (int d = 0; d < D; ++d) {
          const double dd = (1 + c) * den[d] - c * old[d];
          xs[d] = sig[i + 1] / sig[i] * xs[d] + e * dd, old[d] = den[d];
        }
      }
      for (int d = 0; d < D; ++d) x[n * D + d] = xs[d];
    }
  }
  const double seconds = omp_get_wtime() - t0, cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
  double checksum = 0;
  for (double v : x) checksum += v;
  std::printf("%d %d %ld %d %.6f %.6f %.1f %.6e\n", D, K, N, omp_get_max_threads(), seconds, cpu, N / seconds, checksum);
}
