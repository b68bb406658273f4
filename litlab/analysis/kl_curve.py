"""Report Q3: KL(N(mu, s_q^2) || N(mu, s_p^2)) as a function of x = s_q / s_p.

With equal means the univariate Gaussian KL reduces to f(x) = -log x + (x^2 - 1) / 2, which is
zero only at x = 1 and grows without bound as x -> 0 or x -> infinity.

    python -m litlab.analysis.kl_curve --out results/figures/kl_curve.png   # also writes kl_curve.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from litlab.files import write_csv
from litlab.plotting import plot_curves, save_figure


def kl_equal_means(x: torch.Tensor) -> torch.Tensor:
    """f(x) = -log x + (x^2 - 1) / 2 for the ratio of standard deviations x > 0."""
    return -torch.log(x) + (x.pow(2) - 1) / 2


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("kl_curve.png"), help="PNG to write")
    parser.add_argument("--x-min", type=float, default=0.05)
    parser.add_argument("--x-max", type=float, default=3.0)
    parser.add_argument("--points", type=int, default=300)
    args = parser.parse_args(argv)
    if not 0 < args.x_min < args.x_max:
        parser.error(f"need 0 < --x-min < --x-max, got {args.x_min}, {args.x_max}")
    x = torch.linspace(args.x_min, args.x_max, args.points, dtype=torch.float64)
    y = kl_equal_means(x)
    series = {"-log x + (x^2 - 1)/2": (x.tolist(), y.tolist())}
    fig = plot_curves(series, "x = sigma_q / sigma_p", "KL(q || p)", "KL with equal means")
    save_figure(fig, args.out)
    write_csv(
        args.out.with_suffix(".csv"), ["x", "kl"], list(zip(x.tolist(), y.tolist(), strict=True))
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")
    return args.out


if __name__ == "__main__":
    main()
