"""Draw the documentation's adaptation-curve plot from a comparison's results.json.

    metaopt compare --artifact sinusoid --trials 50 --steps 10 --tasks 500 --out runs/compare
    python benchmarks/plot_adaptation_curves.py runs/compare/results.json docs/img/sinusoid-curves.png

The plot is the report's own (``metaopt_tuner.compare.report.curves_figure``: query loss per
adaptation step, 95% CI bands, the meta-learned optimizer beside every Optuna-tuned baseline, named
as the Benchmarks table names them; the oracle, which overshoots by orders of magnitude before its
last step, is drawn without a band and does not set the axis); the committed input is
``benchmarks/results/sinusoid-compare.json``, and redrawing it takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metaopt_tuner.atomic import atomic_write_bytes  # noqa: E402
from metaopt_tuner.compare import figures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?",
                        default=REPO / "benchmarks/results/sinusoid-compare.json")
    parser.add_argument("png", type=Path, nargs="?", default=REPO / "docs/img/sinusoid-curves.png")
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    atomic_write_bytes(args.png, figures(data, None)["curves.png"])
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
