"""Where an unfinished SG cell stands on the test split: evaluate the network it keeps so far.

An SG cell of a large setting trains for many hours over several runs of
``cvxsnn reproduce``; its snapshot (``RESULTS.snapshots/<cell_id>/sg.pt``) holds the best
network of every finished learning rate and of the rate in progress. This script picks
the network the protocol would select if the grid ended now (best validation accuracy,
ties by lower validation loss, then the smaller rate), rebuilds the cell's data and
network, and prints its validation accuracy (recomputed, and checked against the one the
snapshot recorded) and its test accuracy. It reads the snapshots only: it is safe beside a
running sweep and changes nothing. The numbers are provisional: the rates still to run
can only raise the selected validation accuracy, and the test accuracy of the final
record may differ::

    python benchmarks/provisional_sg.py table5b --preset standard \\
        --results docs/results/table5b-standard.jsonl --settings T=56 \\
        --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cvxsnn.evaluate import evaluate
from cvxsnn.experiments import expand_cells, load_experiment
from cvxsnn.pipeline import _make_task, _net_config, _sg_config
from cvxsnn.sg import _initial_net, selection_key


def _candidates(saved: dict, lrs: tuple[float, ...]) -> list[tuple[tuple, str, dict]]:
    """(sort key, description, state) of the finished grid's best and the current rate's."""
    out = []
    if saved.get("best_net") is not None:
        h = saved["finished"][saved["best_index"]]
        key = selection_key(h["best_val_accuracy"], h["best_val_loss"], h["lr"])
        out.append((key, f"lr {h['lr']:g} (finished) epoch {h['best_epoch']}", saved["best_net"]))
    cur = saved.get("current")
    if cur is not None and cur.get("best_state") is not None:
        acc, loss, epoch = cur["best"]
        lr = lrs[cur["lr_index"]]
        desc = f"lr {lr:g} (epoch {cur['epoch']} of its run) epoch {epoch}"
        out.append((selection_key(acc, loss, lr), desc, cur["best_state"]))
    return sorted(out, key=lambda c: c[0])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("table")
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--results", type=Path, required=True, help="the sweep's results file")
    ap.add_argument("--settings", default="", help="comma list of setting labels (all)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--snapshot-dir", type=Path, default=None, help="as given to the sweep")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = args.snapshot_dir or Path(str(args.results) + ".snapshots")
    labels = set(filter(None, args.settings.split(",")))
    print("| setting | seed | kept network | val acc (snapshot) | val acc (again) | test acc |")
    print("|---|---|---|---|---|---|")
    for cell in expand_cells(load_experiment(args.table), args.preset, data_dir=args.data_dir):
        if cell.method != "sg" or (labels and cell.label not in labels):
            continue
        path = root / cell.cell_id / "sg.pt"
        if not path.exists():
            print(f"{cell.label} seed {cell.seed}: no snapshot at {path} (finished, or not "
                  "started)", file=sys.stderr)  # fmt: skip
            continue
        saved = torch.load(path, map_location="cpu", weights_only=True)
        sgc = _sg_config(cell.config)
        cands = _candidates(saved, tuple(sgc.lrs))
        if not cands:
            continue
        key, desc, state = cands[0]
        task = _make_task(cell.config)
        net = _initial_net(_net_config(task, cell.config, task.train.head_classes), sgc, None)
        net.load_state_dict(state)
        net.eval()
        val = evaluate(net, task, "val")["acc"]
        test = evaluate(net, task, "test")["acc"]
        again = f"{val:.4f}" if val == -key[0] else f"{val:.4f} (differs: not this cell's net?)"
        print(
            f"| {cell.label} | {cell.seed} | {desc} | {-key[0]:.4f} | {again} | {test:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
