"""The exact Gaussian-mixture denoiser of models/gaussian_mixture.{hpp,cpp}, in float64 PyTorch.

The mixture (weights, means, per-dimension variances), the process and the initial noise are read
from a case file that diffode itself writes (tests/data/reference/cases/*.txt, by
`reference_test --gtest_also_run_disabled_tests --gtest_filter='*ExportCases*'`), so nothing here
re-implements the C++ random construction: both sides see the same doubles.

Formulas (the C++ file's): for x = alpha x0 + sigma eps and p_0 = sum_k w_k N(mu_k, diag(s_k^2)),
    m_k = alpha mu_k,  v_k = alpha^2 s_k^2 + sigma^2,  g_k = alpha s_k^2 / v_k,
    log r_k = log w_k - sum_d log(2 pi v_kd)/2 - sum_d (x_d - m_kd)^2 / (2 v_kd)   (then log-sum-exp)
    E[x0 | x] = sum_k r_k (mu_k + g_k (x - m_k)).
"""

import math

import torch


def read_record(path):
    """Parses the line format of tests/support/reference_fixture.hpp."""
    entries, vectors, matrices = {}, {}, {}
    with open(path) as f:
        lines = f.read().splitlines()
    i = 0

    def numbers(count):
        nonlocal i
        out = []
        while len(out) < count:
            out.extend(float(t) for t in lines[i].split())
            i += 1
        return out

    while i < len(lines):
        line = lines[i]
        i += 1
        if not line or line.startswith('#'):
            continue
        head = line.split()
        if head[0] == 'vector':
            vectors[head[1]] = numbers(int(head[2]))
        elif head[0] == 'matrix':
            rows, cols = int(head[2]), int(head[3])
            matrices[head[1]] = torch.tensor(numbers(rows * cols), dtype=torch.float64).reshape(rows, cols)
        elif head[0] == 'option':
            entries['option.' + head[1]] = ' '.join(head[2:])
        else:
            entries[head[0]] = line[len(head[0]):].strip()
    return entries, vectors, matrices


class RecordWriter:
    """Writes the same format, numbers in %.17g (exact round trip)."""

    def __init__(self, path):
        self.f = open(path, 'w')

    def comment(self, text):
        self.f.write(f'# {text}\n')

    def entry(self, key, value):
        self.f.write(f'{key} {value}\n')

    def option(self, key, value):
        self.f.write(f'option {key} {value}\n')

    def vector(self, name, values):
        values = [float(v) for v in values]
        self.f.write(f'vector {name} {len(values)}\n')
        for v in values:
            self.f.write('%.17g\n' % v)

    def matrix(self, name, m):
        m = m.reshape(m.shape[0], -1)
        self.f.write(f'matrix {name} {m.shape[0]} {m.shape[1]}\n')
        for row in m.tolist():
            self.f.write(' '.join('%.17g' % v for v in row) + '\n')

    def close(self):
        self.f.close()


class GaussianMixture:
    def __init__(self, weights, means, variances):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.log_weights = self.weights.log()
        self.means = means.to(torch.float64)          # K x D
        self.variances = variances.to(torch.float64)  # K x D

    def denoise(self, x, alpha, sigma):
        """E[x0 | x] for x (N x D) at per-sample levels alpha, sigma (length N)."""
        a = alpha.reshape(-1, 1, 1)
        s = sigma.reshape(-1, 1, 1)
        centre = a * self.means[None]                         # N x K x D
        v = a * a * self.variances[None] + s * s
        gain = a * self.variances[None] / v
        diff = x[:, None, :] - centre
        log_norm = self.log_weights[None] - 0.5 * (self.means.shape[1] * math.log(2 * math.pi) + v.log().sum(-1))
        log_r = log_norm - 0.5 * (diff * diff / v).sum(-1)    # N x K
        r = torch.softmax(log_r, dim=-1)
        return (r[..., None] * (self.means[None] + gain * diff)).sum(1)


class Edm:
    """alpha = 1, sigma = t (Karras et al. 2022)."""
    name = 'edm'

    def alpha_sigma_of_scaled(self, s):
        return torch.ones_like(s), s


class VpLinear:
    """VP with linear beta on [0, 1] (Song et al. 2021, eq. 33); problems/process.hpp's VpLinear."""
    name = 'vp'

    def __init__(self, beta_min=0.1, beta_max=20.0):
        self.b0, self.b1 = beta_min, beta_max

    def log_alpha(self, t):
        return -0.25 * t * t * (self.b1 - self.b0) - 0.5 * t * self.b0

    def t_of_scaled(self, s):
        # alpha^2 = 1 / (1 + s^2): -2 log alpha = log1p(s^2); then the root DPM-Solver's
        # inverse_lambda uses.
        l = torch.log1p(s * s)
        return 2.0 * l / (torch.sqrt(self.b0 ** 2 + 2.0 * (self.b1 - self.b0) * l) + self.b0)

    def alpha_sigma_of_scaled(self, s):
        t = self.t_of_scaled(s)
        la = self.log_alpha(t)
        return la.exp(), torch.sqrt(-torch.expm1(2.0 * la))


class Case:
    """A case file: mixture, process and the scaled initial noise x~_T."""

    def __init__(self, path):
        entries, vectors, matrices = read_record(path)
        self.path = path
        self.mixture_name = entries['mixture']
        self.process_name = entries['process']
        self.name = f'{self.mixture_name}_{self.process_name}'
        self.sigma_max = float(entries['sigma_max'])   # scaled sigma~ at T
        self.sigma_min = float(entries['sigma_min'])   # scaled sigma~ at t_min
        self.t_max = float(entries['t_max'])
        self.t_min = float(entries['t_min'])
        self.mixture = GaussianMixture(vectors['weights'], matrices['means'], matrices['variances'])
        self.x_T = matrices['x_T']
        self.noise_seed = entries['noise_seed']
        if self.process_name == 'edm':
            self.process = Edm()
        elif self.process_name == 'vp':
            self.process = VpLinear(float(entries['beta_min']), float(entries['beta_max']))
        else:
            raise ValueError(f'{path}: unsupported process {self.process_name}')

    def k_denoiser(self, counter=None):
        """k-diffusion's model interface: model(x~, sigma~ per sample) -> D, in scaled variables."""
        def model(x, sigma):
            if counter is not None:
                counter[0] += 1
            alpha, sig = self.process.alpha_sigma_of_scaled(sigma.reshape(-1).to(torch.float64).expand(x.shape[0]))
            return self.mixture.denoise(x * alpha[:, None], alpha, sig)
        return model


class ExportedNoise:
    """diffode's noise for one case, as k-diffusion's samplers ask for it.

    The case file holds the grid `noise_sigmas` and, per step i, the standard normals
    z_i = (W(sigma_i+1) - W(sigma_i)) / sqrt(|sigma_i+1 - sigma_i|) of diffode's SigmaNoise
    (matrices noise_0, noise_1, ...). `noise_sampler(sigma, sigma_next)` returns z_i for the step
    with exactly those ends (k-diffusion's noise_sampler interface; any other interval is an
    error, so a sampler drawing noise elsewhere cannot silently get other noise); `randn_like`
    returns z_0, z_1, ... in call order, for the samplers that draw torch.randn_like once a step
    (the churn of sample_euler, sample_heun, sample_dpm_2)."""

    def __init__(self, case_path):
        _, vectors, matrices = read_record(case_path)
        self.sigmas = vectors['noise_sigmas']
        self.z = [matrices[f'noise_{i}'] for i in range(len(self.sigmas) - 1)]
        self.calls = 0

    def noise_sampler(self, sigma, sigma_next):
        a, b = float(sigma), float(sigma_next)
        for i in range(len(self.z)):
            if self.sigmas[i] == a and self.sigmas[i + 1] == b:
                return self.z[i].clone()
        raise KeyError(f'no exported noise for the interval [{b}, {a}]')

    def randn_like(self, like):
        z = self.z[self.calls].clone()
        self.calls += 1
        return z.reshape(like.shape)
