#!/usr/bin/python3
"""Golden RDP values of the sampled Gaussian mechanism, by numerical integration.

For each (q, sigma, alpha) this integrates the definition (Mironov, Talwar, Zhang 2019):

    A_alpha = E_{z ~ mu0}[(mu(z) / mu0(z))^alpha],   mu = (1 - q) mu0 + q mu1,
    mu0 = N(0, sigma^2), mu1 = N(1, sigma^2),  so  mu(z) / mu0(z) = (1 - q) + q exp((2z - 1) / (2 sigma^2)),

    rdp(alpha) = log(A_alpha) / (alpha - 1).

No series is used, so the values are independent of the ones edgetune sums. The quadrature is
the trapezoidal rule on the real line in 60-digit decimal arithmetic (Python's decimal module, no
other package needed). For an integrand analytic in the strip |Im z| < d the rule's error falls
like exp(-2 pi d / h) (Trefethen and Weideman, SIAM Review 56(3), 2014); this one is analytic up
to |Im z| = pi sigma^2, where (mu / mu0)^alpha has its branch points, and its Gaussian factor grows
there by at most exp(pi^2 sigma^2 / 2). With the step h = sigma / 8 the bound is below 1e-40 for
every sigma here; the script checks it by integrating again at h / 2 and requiring agreement to
1e-30. The range runs 16 sigma past both places the mass lies (around 0 for the mu0 part,
around alpha for the mu1 part, exp(-128) below the peak at the ends). Integer orders are also
checked against the exact binomial sum
    A_alpha = sum_i C(alpha, i) q^i (1 - q)^(alpha - i) exp((i^2 - i) / (2 sigma^2)).

Writes rdp_golden.json beside this script:
    /usr/bin/python3 tests/golden/privacy/make_rdp_golden.py
"""
import json
import math
import os
from decimal import Decimal, getcontext

getcontext().prec = 60

QS = ["0.001", "0.01", "0.05", "0.2", "0.5", "0.9"]
SIGMAS = ["0.6", "1", "2", "8"]
# Fractional and integer orders among Opacus' defaults, and one beyond them (20.5).
ALPHAS = ["1.1", "1.5", "2", "2.5", "3.7", "5", "10.9", "12", "20.5", "63"]

MAX_STEP_DISAGREEMENT = Decimal("1e-30")  # |A(h) - A(h/2)| / A
MAX_BINOMIAL_DISAGREEMENT = Decimal("1e-30")  # |A - exact| / exact, integer orders


def pi():
    """pi to the working precision (Gauss-Legendre iteration)."""
    getcontext().prec += 5
    a, b, t, p = Decimal(1), Decimal(1) / Decimal(2).sqrt(), Decimal(1) / 4, Decimal(1)
    for _ in range(8):
        a, b, t, p = (a + b) / 2, (a * b).sqrt(), t - p * ((a - b) / 2) ** 2, 2 * p
    getcontext().prec -= 5
    return +((a + b) ** 2 / (4 * t))


PI = pi()


def a_by_trapezoid(q, sigma, alpha, h):
    s2 = sigma * sigma
    z0 = s2 * (1 / q - 1).ln() + Decimal(1) / 2
    lo = min(Decimal(0), z0) - 16 * sigma
    hi = max(alpha, z0) + 16 * sigma
    n = int(math.ceil((hi - lo) / h))
    total = Decimal(0)
    for k in range(n + 1):
        z = lo + k * h
        ratio = (1 - q) + q * ((2 * z - 1) / (2 * s2)).exp()
        total += (-(z * z) / (2 * s2) + alpha * ratio.ln()).exp()
    return total * h / (sigma * (2 * PI).sqrt())


def a_binomial(q, sigma, n):
    total = Decimal(0)
    for i in range(n + 1):
        total += math.comb(n, i) * q ** i * (1 - q) ** (n - i) * (Decimal(i * i - i) / (2 * sigma * sigma)).exp()
    return total


def main():
    cases = []
    for qs in QS:
        for ss in SIGMAS:
            for als in ALPHAS:
                q, sigma, alpha = Decimal(qs), Decimal(ss), Decimal(als)
                where = f"q={qs} sigma={ss} alpha={als}"
                a_h = a_by_trapezoid(q, sigma, alpha, sigma / 8)
                a = a_by_trapezoid(q, sigma, alpha, sigma / 16)
                if abs(a - a_h) > MAX_STEP_DISAGREEMENT * a:
                    raise SystemExit(f"trapezoid not converged at {where}: {a_h} vs {a}")
                if alpha == alpha.to_integral_value():
                    exact = a_binomial(q, sigma, int(alpha))
                    if abs(a - exact) > MAX_BINOMIAL_DISAGREEMENT * exact:
                        raise SystemExit(f"integral {a} != binomial sum {exact} at {where}")
                log_a = a.ln()
                cases.append({
                    "q": float(q), "sigma": float(sigma), "alpha": float(alpha),
                    "log_a": format(log_a, ".25e"), "rdp": float(log_a / (alpha - 1)),
                })
    out = {
        "format": "edgetune-rdp-golden",
        "version": 1,
        "method": "trapezoidal rule of E_mu0[(mu/mu0)^alpha] in 60-digit decimals, step sigma/16",
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rdp_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
