#!/usr/bin/env python3
"""Runs the reference samplers on diffode's exact-mixture problems and writes fixtures.

References (public repositories, checked out by the user; never copied into diffode):
  k-diffusion  (crowsonkb/k-diffusion)  k_diffusion/sampling.py
  DPM-Solver   (LuChengTHU/dpm-solver)  dpm_solver_pytorch.py
  UniPC        (wl-zhao/UniPC)          uni_pc.py

Everything runs in float64 on the CPU from the case files diffode exports (mixture, process,
initial noise x~_T), and each result goes to tests/data/reference/<name>.txt together with the
scale-free grid sigma~ = sigma / alpha it ran on (for the samplers that choose their own steps,
DPM-Solver-fast and adaptive DPM-Solver, just the range [sigma~_start, sigma~_end]), so
tests/solvers/diffusion/reference_test.cpp can replay diffode's sampler from the same x~_T and
sigmas. See tools/reference/README.md.

k-diffusion works in the scale-free variables x~ = x / alpha, sigma~ (its model is the denoiser
D(x~; sigma~)), so it runs on every case. DPM-Solver and UniPC work in x_t with the (alpha_t, sigma_t)
of a VP schedule: they run on the VP cases with NoiseScheduleVP('linear', 0.1, 20), which is
diffode's VP linear process; they are fed x_T = alpha(T) x~_T and their result x_t is stored as
x_t / alpha(t_end) (with denoise_to_zero, the result is the denoised x0, stored as it is, and the
grid ends in 0).
"""

import argparse
import hashlib
import importlib
import importlib.util
import math
import os
import sys
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exact_mixture import Case, ExportedNoise, RecordWriter  # noqa: E402

torch.set_default_dtype(torch.float64)

CASES = ['ring2d_edm', 'ring2d_vp', 'mix16_edm', 'mix16_vp']


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---- loading the references ---------------------------------------------------------------------

def stub_module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load_k_diffusion(root):
    """k_diffusion.sampling as a submodule of an empty package, so k_diffusion/__init__.py (training
    code and its dependencies) never runs. Imports that the deterministic samplers do not use are
    stubbed only where the real package is missing (docs/DESIGN.md §5.3)."""
    def missing(name):
        try:
            importlib.import_module(name)
            return False
        except ImportError:
            return True

    def unavailable(*_, **__):
        raise RuntimeError('stubbed out by run_reference.py')

    if missing('torchsde'):
        stub_module('torchsde', BrownianTree=unavailable)
    if missing('torchdiffeq'):
        stub_module('torchdiffeq', odeint=unavailable)
    if missing('tqdm'):
        class ProgressBar:
            """tqdm(...) as sample_dpm_fast and sample_dpm_adaptive use it: a context manager with update()."""

            def __init__(self, *_, **__):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *_):
                return False

            def update(self, *_):
                pass

        tqdm = stub_module('tqdm')
        tqdm.auto = stub_module('tqdm.auto', trange=lambda n, disable=None: range(n), tqdm=ProgressBar)
    if missing('safetensors'):
        stub_module('safetensors')
    if missing('torchvision'):
        tv = stub_module('torchvision')
        tv.transforms = stub_module('torchvision.transforms')
        tv.transforms.functional = stub_module('torchvision.transforms.functional')
    package_dir = os.path.join(root, 'k_diffusion')
    pkg = types.ModuleType('k_diffusion')
    pkg.__path__ = [package_dir]
    sys.modules['k_diffusion'] = pkg
    return importlib.import_module('k_diffusion.sampling'), os.path.join(package_dir, 'sampling.py')


def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Quiet:
    """UniPC prints a line per step; keep the tool's output readable."""

    def __enter__(self):
        self.stdout = sys.stdout
        sys.stdout = open(os.devnull, 'w')

    def __exit__(self, *_):
        sys.stdout.close()
        sys.stdout = self.stdout


# ---- fixtures -----------------------------------------------------------------------------------

class Fixtures:
    def __init__(self, out_dir, sources):
        self.out_dir = out_dir
        self.sources = sources  # reference file -> sha256
        self.written = []

    def write(self, name, case, reference, sampler, sigmas, x_out, nfe, options=(), extra=()):
        path = os.path.join(self.out_dir, name + '.txt')
        w = RecordWriter(path)
        w.comment('diffode reference fixture, written by tools/reference/run_reference.py; do not edit')
        for source, digest in self.sources.items():
            w.comment(f'{source} sha256 {digest}')
        w.entry('reference', reference)
        w.entry('case', f'{case.mixture_name} {case.process_name}')
        w.entry('sampler', sampler)
        w.entry('nfe', str(nfe))
        for key, value in extra:
            w.entry(key, value)
        for key, value in options:
            w.option(key, value)
        w.vector('sigmas', sigmas)
        w.matrix('x_out', x_out)
        w.close()
        self.written.append(name)


def max_relative_difference(x, y):
    return ((x - y).norm(dim=1) / y.norm(dim=1)).max().item()


# ---- k-diffusion --------------------------------------------------------------------------------

def exact_linear_multistep_coeff(order, t, i, j):
    """k-diffusion's linear_multistep_coeff with the quadrature made exact: the Lagrange basis
    polynomial has degree order - 1, so Gauss-Legendre with `order` nodes integrates it exactly."""
    if order - 1 > i:
        raise ValueError(f'Order {order} too high for step {i}')
    nodes, weights = np.polynomial.legendre.leggauss(order)
    a, b = float(t[i]), float(t[i + 1])
    taus = 0.5 * (b - a) * nodes + 0.5 * (a + b)
    total = 0.0
    for tau, weight in zip(taus, weights):
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        total += weight * prod
    return 0.5 * (b - a) * total


class NoNoise:
    """The noise sampler handed to k-diffusion's SDE samplers at eta = 0, where the noise is
    multiplied by 0 (or never drawn): it must not be the Brownian tree, which needs torchsde."""

    def __init__(self, like):
        self.like = like

    def __call__(self, sigma, sigma_next):
        return torch.zeros_like(self.like)


def run_k_diffusion(sampling, case, fixtures, steps):
    grids = {
        # k-diffusion's own constructors, in float64; the Karras grid ends with an appended 0,
        # the exponential one stops at sigma_min (> 0) so every step is a regular one.
        'karras': sampling.get_sigmas_karras(steps, case.sigma_min, case.sigma_max, rho=7.0),
        'exp': sampling.get_sigmas_exponential(steps, case.sigma_min, case.sigma_max)[:-1],
    }
    x_T = case.x_T.clone()
    # fixture kind: (k-diffusion function, its kwargs, diffode sampler, diffode options)
    samplers = {
        'euler': (sampling.sample_euler, {}, 'sample_euler', {}),
        'heun': (sampling.sample_heun, {}, 'sample_heun', {}),
        'dpm2': (sampling.sample_dpm_2, {}, 'sample_dpm_2', {}),
        'dpmpp_2m': (sampling.sample_dpmpp_2m, {}, 'sample_dpmpp_2m', {}),
        'dpmpp_2s_ancestral_eta0': (sampling.sample_dpmpp_2s_ancestral, {'eta': 0.0}, 'sample_dpmpp_2s', {'eta': 0}),
        'euler_ancestral_eta0': (sampling.sample_euler_ancestral, {'eta': 0.0}, 'sample_euler_ancestral', {'eta': 0}),
        'dpm2_ancestral_eta0': (sampling.sample_dpm_2_ancestral, {'eta': 0.0}, 'sample_dpm_2_ancestral', {'eta': 0}),
        'dpmpp_2m_sde_eta0': (sampling.sample_dpmpp_2m_sde, {'eta': 0.0, 'noise_sampler': NoNoise(x_T)},
                              'sample_dpmpp_2m_sde', {'eta': 0, 'solver_type': 'midpoint'}),
        'dpmpp_2m_sde_heun_eta0': (sampling.sample_dpmpp_2m_sde,
                                   {'eta': 0.0, 'noise_sampler': NoNoise(x_T), 'solver_type': 'heun'},
                                   'sample_dpmpp_2m_sde', {'eta': 0, 'solver_type': 'heun'}),
        'dpmpp_3m_sde_eta0': (sampling.sample_dpmpp_3m_sde, {'eta': 0.0, 'noise_sampler': NoNoise(x_T)},
                              'sample_dpmpp_3m_sde', {'eta': 0}),
        # sample_dpmpp_sde at eta = 0 draws no noise: it is DPM-Solver++(2S) with the intermediate
        # point lambda_s + r h, diffode's sample_dpmpp_2s option r (r = 1/2 is covered above).
        'dpmpp_sde_eta0_r1_3': (sampling.sample_dpmpp_sde, {'eta': 0.0, 'noise_sampler': NoNoise(x_T), 'r': 1 / 3},
                                'sample_dpmpp_2s', {'eta': 0, 'r': 1 / 3}),
        'dpmpp_sde_eta0_r1': (sampling.sample_dpmpp_sde, {'eta': 0.0, 'noise_sampler': NoNoise(x_T), 'r': 1.0},
                              'sample_dpmpp_2s', {'eta': 0, 'r': 1.0}),
    }
    report = []
    for grid_name, sigmas in grids.items():
        for kind, (fn, kwargs, diffode_sampler, diffode_options) in samplers.items():
            counter = [0]
            x = fn(case.k_denoiser(counter), x_T.clone(), sigmas, disable=True, **kwargs)
            shown = ', '.join(f'{k}={v}' for k, v in kwargs.items() if k != 'noise_sampler')
            fixtures.write(f'kdiff_{kind}_{grid_name}_{case.name}', case,
                           f'k_diffusion.sampling.{fn.__name__}({shown})', diffode_sampler, sigmas, x, counter[0],
                           diffode_options.items())

        # LMS (order 4): as published (scipy quad, epsrel 1e-4) and with the exact integral.
        counter = [0]
        x_quad = sampling.sample_lms(case.k_denoiser(counter), x_T.clone(), sigmas, disable=True, order=4)
        published = sampling.linear_multistep_coeff
        sampling.linear_multistep_coeff = exact_linear_multistep_coeff
        try:
            x_exact = sampling.sample_lms(case.k_denoiser(), x_T.clone(), sigmas, disable=True, order=4)
        finally:
            sampling.linear_multistep_coeff = published
        gap = max_relative_difference(x_quad, x_exact)
        report.append(f'  {case.name} {grid_name}: sample_lms quad vs exact integral: max relative difference {gap:.3e}')
        fixtures.write(f'kdiff_lms_quad_{grid_name}_{case.name}', case, 'k_diffusion.sampling.sample_lms(order=4)',
                       'sample_lms', sigmas, x_quad, counter[0], [('order', 4)], [('quad_vs_exact', '%.3e' % gap)])
        fixtures.write(f'kdiff_lms_exact_{grid_name}_{case.name}', case,
                       'k_diffusion.sampling.sample_lms(order=4), linear_multistep_coeff integrated exactly',
                       'sample_lms', sigmas, x_exact, counter[0], [('order', 4)])
        # The lower orders, as published (their integrands have degree <= 2: quad is exact too).
        for order in (1, 2, 3):
            counter = [0]
            x = sampling.sample_lms(case.k_denoiser(counter), x_T.clone(), sigmas, disable=True, order=order)
            fixtures.write(f'kdiff_lms_o{order}_{grid_name}_{case.name}', case,
                           f'k_diffusion.sampling.sample_lms(order={order})', 'sample_lms', sigmas, x, counter[0],
                           [('order', order)])
    return report


# sample_dpm_fast budgets (NFE): 5 -> orders [3, 2], 10 -> [3, 3, 3, 1], 12 -> [3, 3, 3, 2, 1],
# 20 -> [3] * 6 + [2]: every branch of its order schedule.
K_DIFFUSION_FAST_NFE = (5, 10, 12, 20)
# sample_dpm_adaptive settings: (name, kwargs). k-diffusion's defaults (rtol 0.05, atol 0.0078, an
# integral controller), a tight tolerance, and a PID controller with all three terms.
K_DIFFUSION_ADAPTIVE = (
    ('default', {}),
    ('tight', {'rtol': 1e-3, 'atol': 1e-4}),
    ('pid', {'rtol': 1e-2, 'atol': 1e-3, 'pcoeff': 0.3, 'icoeff': 0.5, 'dcoeff': 0.2}),
)


def run_k_diffusion_grid_free(sampling, case, fixtures):
    """k-diffusion's DPM-Solver-fast and adaptive DPM-Solver-12/23, which choose their own steps from a
    range: the fixture's `sigmas` holds just that range [sigma_max, sigma_min]."""
    x_T = case.x_T.clone()
    ends = [case.sigma_max, case.sigma_min]
    for nfe in K_DIFFUSION_FAST_NFE:
        counter = [0]
        x = sampling.sample_dpm_fast(case.k_denoiser(counter), x_T.clone(), case.sigma_min, case.sigma_max, nfe,
                                     disable=True)
        fixtures.write(f'kdiff_dpm_fast_nfe{nfe}_{case.name}', case, f'k_diffusion.sampling.sample_dpm_fast(n={nfe})',
                       'sample_dpm_solver_fast', ends, x, counter[0], [('nfe', nfe), ('order', 3)])
    defaults = {'rtol': 0.05, 'atol': 0.0078, 'h_init': 0.05, 'pcoeff': 0.0, 'icoeff': 1.0, 'dcoeff': 0.0,
                'accept_safety': 0.81}
    for order in (2, 3):
        for setting, kwargs in K_DIFFUSION_ADAPTIVE:
            counter = [0]
            x, info = sampling.sample_dpm_adaptive(case.k_denoiser(counter), x_T.clone(), case.sigma_min, case.sigma_max,
                                                   disable=True, order=order, return_info=True, **kwargs)
            assert info['nfe'] == counter[0], (info, counter[0])
            shown = ', '.join([f'order={order}'] + [f'{k}={v}' for k, v in kwargs.items()])
            options = [('order', order), ('controller', 'k_diffusion')] + list({**defaults, **kwargs}.items())
            fixtures.write(f'kdiff_dpm_adaptive_o{order}_{setting}_{case.name}', case,
                           f'k_diffusion.sampling.sample_dpm_adaptive({shown})', 'sample_dpm_solver_adaptive', ends,
                           x, counter[0], options, [('accepted', info['n_accept']), ('rejected', info['n_reject'])])


def run_k_diffusion_stochastic(sampling, case, fixtures):
    """The stochastic samplers on diffode's noise (ExportedNoise), on the case's grid noise_sigmas
    (Karras rho = 7, 12 steps, appended 0), where one noise draw per step is all they take."""
    sigmas = torch.tensor(ExportedNoise(case.path).sigmas)
    x_T = case.x_T.clone()
    churn = {'s_churn': 2.0, 's_tmin': 0.05, 's_tmax': 10.0}
    # kind: (k-diffusion function, kwargs, how it draws noise, diffode sampler, diffode options)
    samplers = {
        'euler_ancestral_eta1': (sampling.sample_euler_ancestral, {'eta': 1.0}, 'noise_sampler',
                                 'sample_euler_ancestral', {'eta': 1}),
        # DDIM(eta = 1) in sigma~ is the Euler-ancestral step (ddim.hpp); checked on the same run.
        'ddim_eta1': (sampling.sample_euler_ancestral, {'eta': 1.0}, 'noise_sampler', 'sample_ddim', {'eta': 1}),
        'dpm2_ancestral_eta1': (sampling.sample_dpm_2_ancestral, {'eta': 1.0}, 'noise_sampler',
                                'sample_dpm_2_ancestral', {'eta': 1}),
        'dpmpp_2s_ancestral_eta1': (sampling.sample_dpmpp_2s_ancestral, {'eta': 1.0}, 'noise_sampler',
                                    'sample_dpmpp_2s', {'eta': 1}),
        'dpmpp_2m_sde_eta1': (sampling.sample_dpmpp_2m_sde, {'eta': 1.0}, 'noise_sampler',
                              'sample_dpmpp_2m_sde', {'eta': 1, 'solver_type': 'midpoint'}),
        'dpmpp_2m_sde_heun_eta1': (sampling.sample_dpmpp_2m_sde, {'eta': 1.0, 'solver_type': 'heun'}, 'noise_sampler',
                                   'sample_dpmpp_2m_sde', {'eta': 1, 'solver_type': 'heun'}),
        'dpmpp_3m_sde_eta1': (sampling.sample_dpmpp_3m_sde, {'eta': 1.0}, 'noise_sampler',
                              'sample_dpmpp_3m_sde', {'eta': 1}),
        'euler_churn': (sampling.sample_euler, churn, 'randn_like', 'sample_euler', churn),
        'heun_churn': (sampling.sample_heun, churn, 'randn_like', 'sample_heun', churn),
        'dpm2_churn': (sampling.sample_dpm_2, churn, 'randn_like', 'sample_dpm_2', churn),
    }
    # The same samplers between the deterministic and the full-noise ends, with the noise scaled:
    # eta = 1/2 (sigma_up and the SDE's noise both depend on eta non-linearly) and s_noise = 0.9;
    # the churn samplers with Karras et al.'s s_noise = 1.007 (2022, Table 5).
    partial = {'eta': 0.5, 's_noise': 0.9}
    churn_noise = {**churn, 's_noise': 1.007}
    samplers.update({
        'euler_ancestral_eta05_snoise09': (sampling.sample_euler_ancestral, partial, 'noise_sampler',
                                           'sample_euler_ancestral', partial),
        # DDIM(eta) in sigma~ is the Euler-ancestral step with the same eta, for every eta (ddim.hpp).
        'ddim_eta05_snoise09': (sampling.sample_euler_ancestral, partial, 'noise_sampler', 'sample_ddim', partial),
        'dpm2_ancestral_eta05_snoise09': (sampling.sample_dpm_2_ancestral, partial, 'noise_sampler',
                                          'sample_dpm_2_ancestral', partial),
        'dpmpp_2s_ancestral_eta05_snoise09': (sampling.sample_dpmpp_2s_ancestral, partial, 'noise_sampler',
                                              'sample_dpmpp_2s', partial),
        'dpmpp_2m_sde_eta05_snoise09': (sampling.sample_dpmpp_2m_sde, partial, 'noise_sampler', 'sample_dpmpp_2m_sde',
                                        {**partial, 'solver_type': 'midpoint'}),
        'dpmpp_2m_sde_heun_eta05_snoise09': (sampling.sample_dpmpp_2m_sde, {**partial, 'solver_type': 'heun'},
                                             'noise_sampler', 'sample_dpmpp_2m_sde', {**partial, 'solver_type': 'heun'}),
        'dpmpp_3m_sde_eta05_snoise09': (sampling.sample_dpmpp_3m_sde, partial, 'noise_sampler', 'sample_dpmpp_3m_sde',
                                        partial),
        'euler_churn_snoise1007': (sampling.sample_euler, churn_noise, 'randn_like', 'sample_euler', churn_noise),
        'heun_churn_snoise1007': (sampling.sample_heun, churn_noise, 'randn_like', 'sample_heun', churn_noise),
        'dpm2_churn_snoise1007': (sampling.sample_dpm_2, churn_noise, 'randn_like', 'sample_dpm_2', churn_noise),
    })
    for kind, (fn, kwargs, draws, diffode_sampler, diffode_options) in samplers.items():
        noise = ExportedNoise(case.path)
        counter = [0]
        if draws == 'noise_sampler':
            x = fn(case.k_denoiser(counter), x_T.clone(), sigmas, disable=True, noise_sampler=noise.noise_sampler,
                   **kwargs)
        else:
            published = torch.randn_like
            torch.randn_like = noise.randn_like
            try:
                x = fn(case.k_denoiser(counter), x_T.clone(), sigmas, disable=True, **kwargs)
            finally:
                torch.randn_like = published
            assert noise.calls == len(sigmas) - 1, f'{kind}: {noise.calls} draws for {len(sigmas) - 1} steps'
        shown = ', '.join(f'{k}={v}' for k, v in kwargs.items())
        fixtures.write(f'kdiff_{kind}_{case.name}', case,
                       f'k_diffusion.sampling.{fn.__name__}({shown}) on diffode noise', diffode_sampler, sigmas, x,
                       counter[0], diffode_options.items(), [('noise_seed', case.noise_seed)])


# ---- DPM-Solver and UniPC (VP cases) ------------------------------------------------------------

def vp_model(case, counter):
    """The exact denoiser as a DPM-Solver/UniPC 'x_start' model: model(x_t, t) -> x0, at
    diffode's VP levels alpha(t), sigma(t). Accepts (N, D) or (N, D, 1, 1) states."""
    process = case.process

    def model(x, t):
        counter[0] += 1
        shape = x.shape
        la = process.log_alpha(t.reshape(-1).expand(shape[0]))
        alpha, sigma = la.exp(), torch.sqrt(-torch.expm1(2.0 * la))
        return case.mixture.denoise(x.reshape(shape[0], -1), alpha, sigma).reshape(shape)
    return model


def vp_noise_model(case, ns, counter):
    """The exact denoiser as a 'noise' model for uni_pc.py: eps = (x - alpha_t x0) / sigma_t with
    the schedule's alpha_t, sigma_t, the conversion dpm_solver_pytorch.py's model_wrapper makes.
    uni_pc.py's own model_wrapper cannot be used for an x_start model: it multiplies the state by
    alpha_t of shape (N,) without expanding it to (N, 1, 1, 1) (its expand_dims is not called), which
    broadcasts (N, C, H, 1) states to (N, C, H, N)."""
    x0_model = vp_model(case, counter)

    def model(x, t):
        alpha = ns.marginal_alpha(t).reshape(-1, *([1] * (x.dim() - 1)))
        sigma = ns.marginal_std(t).reshape(-1, *([1] * (x.dim() - 1)))
        return (x - alpha * x0_model(x, t)) / sigma
    return model


def scaled_sigmas(ns, timesteps):
    """sigma~ = exp(-lambda) at the solver's own timesteps, by its own lambda."""
    return torch.exp(-ns.marginal_lambda(timesteps.reshape(-1)))


# DPM-Solver runs that have a diffode counterpart: (algorithm_type, method, order, steps,
# denoise_to_zero). Not run: multistep 'dpmsolver' (noise prediction) and singlestep order-3
# 'dpmsolver++', which diffode does not implement.
DPM_SOLVER_RUNS = (
    [('dpmsolver', 'singlestep', order, 10, False) for order in (1, 2, 3)]
    + [('dpmsolver', 'singlestep_fixed', order, 12, False) for order in (2, 3)]
    + [('dpmsolver++', 'singlestep', order, 10, False) for order in (1, 2)]
    + [('dpmsolver++', 'singlestep_fixed', 2, 12, False)]
    # lower_order_final acts below 10 steps only: 8 steps use it, 12 do not.
    + [('dpmsolver++', 'multistep', order, steps, False) for order in (2, 3) for steps in (8, 12)]
    # denoise_to_zero: a last first-order step from t_end to sigma = 0 (D at t_end), which diffode
    # takes as a grid ending in 0; with 8 multistep steps it follows the lower-order final steps.
    + [('dpmsolver', 'singlestep', 3, 10, True), ('dpmsolver++', 'singlestep', 2, 10, True)]
    + [('dpmsolver++', 'multistep', order, steps, True) for order in (2, 3) for steps in (8, 12)]
)
# DPM-Solver-fast (method='singlestep', skip_type='logSNR') replayed through diffode's
# sample_dpm_solver_fast, which builds the same order schedule and lambda-uniform grid itself from
# the range and the NFE budget: (order, NFE).
DPM_SOLVER_FAST_RUNS = [(order, nfe) for order in (1, 2, 3) for nfe in (5, 10, 12)]


def dpm_solver_counterpart(algorithm, method, order, orders):
    """diffode's sampler and options for one DPM-Solver run."""
    if algorithm == 'dpmsolver':  # singlestep DPM-Solver-1/2/3 with the per-step orders
        return 'sample_dpm_solver', [('orders', ' '.join(str(o) for o in orders))]
    if method == 'multistep':
        return f'sample_dpmpp_{order}m', [('lower_order_final_below', 10)]
    if set(orders) == {1}:  # DPM-Solver++-1 is DDIM
        return 'sample_ddim', [('eta', 0)]
    assert set(orders) == {2}
    return 'sample_dpmpp_2s', [('eta', 0)]  # r1 = 1/2: DPM-Solver++(2S)


def run_dpm_solver(dpm, case, fixtures):
    t_T, t_0 = case.t_max, case.t_min
    alpha_T = math.exp(case.process.log_alpha(t_T))
    alpha_0 = math.exp(case.process.log_alpha(t_0))
    x_T = case.x_T.clone()
    ns = dpm.NoiseScheduleVP('linear', continuous_beta_0=case.process.b0, continuous_beta_1=case.process.b1,
                             dtype=torch.float64)
    for algorithm, method, order, steps, to_zero in DPM_SOLVER_RUNS:
        counter = [0]
        model_fn = dpm.model_wrapper(vp_model(case, counter), ns, model_type='x_start')
        solver = dpm.DPM_Solver(model_fn, ns, algorithm_type=algorithm)
        x = solver.sample(alpha_T * x_T.clone(), steps=steps, t_start=t_T, t_end=t_0, order=order,
                          skip_type='logSNR', method=method, lower_order_final=True, denoise_to_zero=to_zero)
        # The grid the solver stepped on: outer timesteps and per-step orders for the singlestep
        # methods (inner points: r1 = 1/2, or 1/3 and 2/3, of each step in lambda), all timesteps
        # for multistep.
        if method == 'singlestep':
            timesteps, orders = solver.get_orders_and_timesteps_for_singlestep_solver(
                steps=steps, order=order, skip_type='logSNR', t_T=t_T, t_0=t_0, device='cpu')
        elif method == 'singlestep_fixed':
            timesteps = solver.get_time_steps('logSNR', t_T, t_0, steps // order, 'cpu')
            orders = [order] * (steps // order)
        else:
            timesteps = solver.get_time_steps('logSNR', t_T, t_0, steps, 'cpu')
            orders = [order]
        sigmas = scaled_sigmas(ns, timesteps).tolist()
        if to_zero:
            # The result is the denoised x0, at alpha = 1; the step to sigma = 0 is first order.
            sigmas.append(0.0)
            if algorithm == 'dpmsolver':  # diffode's sample_dpm_solver takes one order per step
                orders = list(orders) + [1]
            x_out, suffix, shown = x, '_zero', ', denoise_to_zero=True'
        else:
            x_out, suffix, shown = x / alpha_0, '', ''
        sampler, options = dpm_solver_counterpart(algorithm, method, order, orders)
        algo = 'dpmsolverpp' if algorithm == 'dpmsolver++' else 'dpmsolver'
        extra = [('timesteps', ' '.join('%.17g' % v for v in timesteps.tolist()))]
        fixtures.write(f'dpmsolver_{algo}_{method}_o{order}_n{steps}{suffix}_{case.name}', case,
                       f'dpm_solver_pytorch.DPM_Solver(algorithm_type={algorithm}).sample(steps={steps}, '
                       f'order={order}, skip_type=logSNR, method={method}, lower_order_final=True{shown})',
                       sampler, sigmas, x_out, counter[0], options, extra)

    for order, nfe in DPM_SOLVER_FAST_RUNS:
        counter = [0]
        model_fn = dpm.model_wrapper(vp_model(case, counter), ns, model_type='x_start')
        solver = dpm.DPM_Solver(model_fn, ns, algorithm_type='dpmsolver')
        x = solver.sample(alpha_T * x_T.clone(), steps=nfe, t_start=t_T, t_end=t_0, order=order, skip_type='logSNR',
                          method='singlestep')
        timesteps, orders = solver.get_orders_and_timesteps_for_singlestep_solver(
            steps=nfe, order=order, skip_type='logSNR', t_T=t_T, t_0=t_0, device='cpu')
        ends = scaled_sigmas(ns, torch.tensor([t_T, t_0])).tolist()
        extra = [('timesteps', ' '.join('%.17g' % v for v in timesteps.tolist())),
                 ('orders', ' '.join(str(o) for o in orders))]
        fixtures.write(f'dpmsolver_dpmsolver_fast_o{order}_nfe{nfe}_{case.name}', case,
                       f'dpm_solver_pytorch.DPM_Solver(algorithm_type=dpmsolver).sample(steps={nfe}, order={order}, '
                       f'skip_type=logSNR, method=singlestep)',
                       'sample_dpm_solver_fast', ends, x / alpha_0, counter[0], [('nfe', nfe), ('order', order)], extra)


# UniPC runs: (order, lower_order_final, corrector, denoise_to_zero, name suffix). Every
# variant (bh1, bh2) and prediction (data, noise) runs each. lower_order_final only acts for
# order >= 2 (at order 1 every step is first order anyway).
UNIPC_RUNS = (
    [(order, True, True, False, '') for order in (1, 2, 3)]
    + [(order, False, True, False, '_nolof') for order in (2, 3)]
    + [(order, True, False, False, '_nocorr') for order in (1, 2, 3)]
    + [(order, True, True, True, '_zero') for order in (2, 3)]
)


def without_corrector(solver):
    """uni_pc.py's UniPC.sample() has no switch for the corrector; it always asks
    multistep_uni_pc_update for one (except at the last step). This makes every such call pass
    use_corrector=False, so sample() runs UniP-p alone with its own loop: the update then returns no
    model value and sample() evaluates the model at the predicted point itself."""
    update = solver.multistep_uni_pc_update

    def predictor_only(*args, **kwargs):
        kwargs['use_corrector'] = False
        return update(*args, **kwargs)
    solver.multistep_uni_pc_update = predictor_only
    return solver


def run_unipc(uni, case, fixtures, steps=10):
    t_T, t_0 = case.t_max, case.t_min
    alpha_T = math.exp(case.process.log_alpha(t_T))
    alpha_0 = math.exp(case.process.log_alpha(t_0))
    x_T = case.x_T.clone()
    ns = uni.NoiseScheduleVP('linear', continuous_beta_0=case.process.b0, continuous_beta_1=case.process.b1,
                             dtype=torch.float64)
    for variant in ['bh1', 'bh2']:
        for prediction in ['data_prediction', 'noise_prediction']:
            for order, lower_order_final, corrector, to_zero, suffix in UNIPC_RUNS:
                counter = [0]
                model_fn = uni.model_wrapper(vp_noise_model(case, ns, counter), ns, model_type='noise')
                solver = uni.UniPC(model_fn, ns, algorithm_type=prediction, variant=variant)
                if not corrector:
                    without_corrector(solver)
                # uni_pc.py's einsums want image-shaped states (N, C, H, W).
                with Quiet():
                    x = solver.sample((alpha_T * x_T.clone())[:, :, None, None], steps=steps, t_start=t_T,
                                      t_end=t_0, order=order, skip_type='logSNR', method='multistep',
                                      lower_order_final=lower_order_final, denoise_to_zero=to_zero)
                x = x.reshape(x.shape[0], -1)
                timesteps = solver.get_time_steps('logSNR', t_T, t_0, steps, 'cpu')
                sigmas = scaled_sigmas(ns, timesteps).tolist()
                if to_zero:  # the denoised x0 at alpha = 1, after a first-order step to sigma = 0
                    sigmas.append(0.0)
                else:
                    x = x / alpha_0
                pred = 'data' if prediction == 'data_prediction' else 'noise'
                options = [('order', order), ('variant', variant), ('prediction', pred),
                           ('lower_order_final', int(lower_order_final)), ('corrector', int(corrector))]
                extra = [('timesteps', ' '.join('%.17g' % v for v in timesteps.tolist()))]
                shown = (f'uni_pc.UniPC(algorithm_type={prediction}, variant={variant}).sample(steps={steps}, '
                         f'order={order}, skip_type=logSNR, method=multistep, lower_order_final={lower_order_final}'
                         + (', denoise_to_zero=True' if to_zero else '') + ')'
                         + ('' if corrector else ' with every multistep_uni_pc_update(use_corrector=False)'))
                fixtures.write(f'unipc_{variant}_{pred}_o{order}_n{steps}{suffix}_{case.name}', case, shown,
                               'sample_unipc', sigmas, x, counter[0], options, extra)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--k-diffusion', required=True, help='checkout of crowsonkb/k-diffusion (the folder holding k_diffusion/)')
    parser.add_argument('--dpm-solver', required=True, help='checkout of LuChengTHU/dpm-solver (holding dpm_solver_pytorch.py)')
    parser.add_argument('--unipc', required=True, help='checkout of wl-zhao/UniPC (holding uni_pc.py)')
    parser.add_argument('--data', default=os.path.join(repo, 'tests', 'data', 'reference'),
                        help='fixture folder; case files are read from its cases/ subfolder')
    parser.add_argument('--steps', type=int, default=12, help='k-diffusion grid steps')
    args = parser.parse_args()

    sampling, sampling_path = load_k_diffusion(os.path.abspath(args.k_diffusion))
    dpm_path = os.path.join(args.dpm_solver, 'dpm_solver_pytorch.py')
    uni_path = os.path.join(args.unipc, 'uni_pc.py')
    dpm = load_file('dpm_solver_pytorch', dpm_path)
    uni = load_file('uni_pc', uni_path)
    sources = {'k_diffusion/sampling.py': sha256(sampling_path), 'dpm_solver_pytorch.py': sha256(dpm_path),
               'uni_pc.py': sha256(uni_path)}

    for old in os.listdir(args.data):
        if old.endswith('.txt'):
            os.remove(os.path.join(args.data, old))
    fixtures = Fixtures(args.data, sources)
    report = []
    for name in CASES:
        case = Case(os.path.join(args.data, 'cases', name + '.txt'))
        report += run_k_diffusion(sampling, case, fixtures, args.steps)
        run_k_diffusion_stochastic(sampling, case, fixtures)
        run_k_diffusion_grid_free(sampling, case, fixtures)
        if case.process_name == 'vp':
            run_dpm_solver(dpm, case, fixtures)
            run_unipc(uni, case, fixtures)
    print(f'wrote {len(fixtures.written)} fixtures to {args.data}')
    print('\n'.join(report))


if __name__ == '__main__':
    main()
