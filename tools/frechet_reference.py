#!/usr/bin/python3
"""Reference values for tests/experiments/frechet_test.cpp: the Frechet distance by the formula of
pytorch-fid's calculate_frechet_distance (mseitzer/pytorch-fid, src/pytorch_fid/fid_score.py),
restated here from its published definition, on data that the test rebuilds bit for bit.

Statistics as pytorch-fid takes them: mu = mean over rows, sigma = np.cov(rowvar=False) (1/(N-1)).
Distance: |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)), with scipy's
general sqrtm; if that is not finite, 1e-6 I is added to both covariances; the real part is kept.

Data: rows x = (2u - 1) A + b, u uniform [0, 1) from splitmix64 (53-bit mantissas, exact in both
languages), A and b defined by integer formulas (see make_set); the test's make_set mirrors it.

Run with Debian's Python (numpy 1.24, scipy 1.10): /usr/bin/python3 tools/frechet_reference.py
"""
import numpy as np
from scipy import linalg

MASK = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def make_set(n, d, seed, scale, shift):
    state = seed
    u = np.empty((n, d))
    for i in range(n):
        for j in range(d):
            state, z = splitmix64(state)
            u[i, j] = (z >> 11) * 2.0**-53
    a = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            a[i, j] = scale * ((((i + 1) * (j + 3)) % 7 - 3) / 10.0 + (1.5 if i == j else 0.0))
    b = np.array([shift * (j % 5) for j in range(d)])
    return (2.0 * u - 1.0) @ a + b


def pytorch_fid_formula(mu1, sigma1, mu2, sigma2, eps=1e-6):
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


# (dims, rows of A, rows of B): well-conditioned, N >> D.
CASES = [(2, 500, 700), (16, 3000, 2000), (64, 4000, 5000)]

for d, na, nb in CASES:
    x = make_set(na, d, 1, 1.0, 0.1)
    y = make_set(nb, d, 2, 1.1, 0.15)
    mu1, s1 = x.mean(axis=0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(axis=0), np.cov(y, rowvar=False)
    fd = pytorch_fid_formula(mu1, s1, mu2, s2)
    print(f"  {{{d}, {na}, {nb}, {fd!r}, {s1[0, 0]!r}, {s1[d - 1, 0]!r}}},")
