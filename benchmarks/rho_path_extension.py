"""Does the end of the rho path limit the convex methods? Rerun one CVX cell with a longer path.

The reproduction configs solve a path of 12 rhos from rho_max down to 1e-3 rho_max; on
ADDITION the validation-selected rho is often the last one. This script reruns one CVX
cell of the standard preset (L = 3, T = 6, K x m = 64 x 32, 2,000 / 500 / 1,000 samples)
with the path extended to ``--ratio`` (same density per decade) and prints the selected
rho, the validation accuracy along the path and the test accuracies, to compare with the
cell's record in ``docs/results``::

    python benchmarks/rho_path_extension.py --base 3 --seed 0
    python benchmarks/rho_path_extension.py --base 2 --lambda-carry 10 --seed 0   # Figure 1
"""

from __future__ import annotations

import argparse
import json
import math

from cvxsnn.pipeline import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, default=3, choices=(2, 3, 5))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ratio", type=float, default=1e-4, help="rho_min / rho_max")
    ap.add_argument("--lambda-carry", type=float, default=1.0, help="carry head weight")
    args = ap.parse_args(argv)
    n_rhos = round(4 * -math.log10(args.ratio))  # the configs' 12 values over 3 decades
    cfg = TrainConfig(
        task="addition", base=args.base, depth=3, steps=6, n_train=2000, n_val=500,
        n_test=1000, branches=64, width=32, method="cvx", rho_min_ratio=args.ratio,
        n_rhos=n_rhos, seed=args.seed, threads=1, lambda_carry=args.lambda_carry,
    )  # fmt: skip
    rec = train(cfg, progress=False).record
    path = rec["rho_path"]
    top = path[0]["rho"] / args.ratio ** (1 / n_rhos)  # rho_max: the first value is one step below
    test = rec["metrics"]["test"]
    print(json.dumps({
        "base": args.base, "seed": args.seed, "lambda_carry": args.lambda_carry,
        "rho_min_ratio": args.ratio, "n_rhos": n_rhos,
        "selected_rho_over_rho_max": rec["rho"] / top,
        "path": [(round(p["rho"] / top, 6), round(p["val_acc"], 4)) for p in path],
        "test_joint_token_acc": test["joint_token_acc"],
        "test_ood_10x_joint_token_acc": test["ood_10x/joint_token_acc"],
        "gap": rec["gap"],
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
