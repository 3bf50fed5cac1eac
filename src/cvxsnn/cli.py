"""Command-line interface: thin commands over :mod:`cvxsnn.pipeline`.

Results go to stdout as JSON; progress and logs go to stderr. A bad argument
gives one line naming it and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, no usage dump
        self.exit(2, f"cvxsnn {self.prog.split()[-1]}: error: {message}\n")


def _number(name: str, cast: type, minimum: float, strict: bool):
    """Parser of ``name``'s value: a finite ``cast`` >= ``minimum`` (> when ``strict``)."""
    kind = "an integer" if cast is int else "a number"
    bound = f"{'>' if strict else '>='} {minimum:g}"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {kind}; got {text!r}") from None
        ok = value > minimum if strict else value >= minimum
        if not ok or value != value or value in (float("inf"), float("-inf")):
            what = "a finite number " if cast is float else ""
            raise argparse.ArgumentTypeError(f"{name} must be {what}{bound}; got {text}")
        return value

    return parse


def _positive_int(name: str):
    return _number(name, int, 1, strict=False)


def _nonneg_int(name: str):
    return _number(name, int, 0, strict=False)


def _positive_float(name: str):
    return _number(name, float, 0, strict=True)


def _nonneg_float(name: str):
    return _number(name, float, 0, strict=False)


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_snapshot_options(p: argparse.ArgumentParser, every_help: str) -> None:
    p.add_argument(
        "--snapshot-every",
        type=_nonneg_float("--snapshot-every"),
        default=120.0,
        metavar="SECONDS",
        help=every_help,
    )


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from cvxsnn.pipeline import (
        CG_PRICERS,
        LOSSES,
        METHODS,
        PENALTIES,
        TASKS,
        WITNESS_SCHEMES,
        TrainConfig,
    )

    d = TrainConfig()
    g = p.add_argument_group("task")
    g.add_argument("--task", choices=TASKS, default=d.task, help="task (default: %(default)s)")
    g.add_argument(
        "--steps",
        "-T",
        type=_positive_int("--steps"),
        default=None,
        help="time steps T (addition: T = digits + 1); default per task",
    )
    g.add_argument("--n-train", type=_positive_int("--n-train"), default=d.n_train)
    g.add_argument("--n-val", type=_positive_int("--n-val"), default=d.n_val)
    g.add_argument("--n-test", type=_positive_int("--n-test"), default=d.n_test)
    g.add_argument("--base", type=int, choices=(2, 3, 5), default=d.base, help="addition base")
    g.add_argument(
        "--lambda-carry",
        type=_positive_float("--lambda-carry"),
        default=d.lambda_carry,
        help="weight of the carry head's loss (addition)",
    )
    g.add_argument(
        "--data-dir",
        default=d.data_dir,
        help="folder with the MNIST IDX files (mnist-seq); env CVXSNN_DATA_DIR",
    )
    g.add_argument("--data", default=d.data, help="FILE.npz with X (n, T, d) and y (custom task)")
    g = p.add_argument_group("network")
    g.add_argument("--method", choices=METHODS, default=d.method, help="(default: %(default)s)")
    g.add_argument(
        "--depth",
        "-L",
        type=_positive_int("--depth"),
        default=d.depth,
        help="L: hidden LIF layers + readout (>= 2)",
    )
    g.add_argument("--branches", "-K", type=_positive_int("--branches"), default=d.branches)
    g.add_argument("--width", "-m", type=_positive_int("--width"), default=d.width)
    g.add_argument("--beta", type=float, default=d.beta, help="LIF leak (fixed)")
    g = p.add_argument_group("convex path")
    g.add_argument("--loss", choices=LOSSES, default=d.loss)
    g.add_argument("--penalty", choices=PENALTIES, default=d.penalty)
    g.add_argument(
        "--rho",
        type=_positive_float("--rho"),
        default=d.rho,
        help="fixed rho; by default a path from rho_max is selected on validation",
    )
    g.add_argument(
        "--beta-reg",
        type=_positive_float("--beta-reg"),
        default=d.beta_reg,
        help="fixed beta_reg, rho = beta_reg / sqrt(m)",
    )
    g.add_argument("--n-rhos", type=_positive_int("--n-rhos"), default=d.n_rhos)
    g.add_argument(
        "--path-patience",
        type=_positive_int("--path-patience"),
        default=d.path_patience,
        help="stop the rho path after this many values without a better validation score",
    )
    g.add_argument("--tol", type=_positive_float("--tol"), default=d.tol)
    g.add_argument("--witnesses", choices=WITNESS_SCHEMES, default=d.witnesses)
    g.add_argument("--sigma", type=_positive_float("--sigma"), default=d.sigma)
    g.add_argument(
        "--perturb-copies",
        type=_nonneg_int("--perturb-copies"),
        default=d.perturb_copies,
        help="sg-cvx: extra Gaussian-perturbed copies of the SG witnesses",
    )
    g.add_argument(
        "--perturb-scale", type=_positive_float("--perturb-scale"), default=d.perturb_scale
    )
    g = p.add_argument_group("column generation (cvx-cg, sg-cvx-cg)")
    g.add_argument(
        "--cg-rounds",
        type=_nonneg_int("--cg-rounds"),
        default=d.cg_rounds,
        help="pricing rounds at most (default: %(default)s)",
    )
    g.add_argument(
        "--cg-atoms",
        type=_positive_int("--cg-atoms"),
        default=d.cg_atoms,
        help="atoms added per round at most (default: %(default)s)",
    )
    g.add_argument(
        "--cg-pricer",
        choices=CG_PRICERS,
        default=d.cg_pricer,
        help="witness search: random proposals + threshold sweeps + local perturbation "
        "('random'), then surrogate-gradient ascent ('ascent', default)",
    )
    g.add_argument(
        "--cg-proposals",
        type=_positive_int("--cg-proposals"),
        default=d.cg_proposals,
        help="random proposals per round (default: %(default)s)",
    )
    g = p.add_argument_group("surrogate gradient")
    g.add_argument("--epochs", type=_positive_int("--epochs"), default=d.epochs)
    g.add_argument(
        "--sg-checkpoint",
        default=d.sg_checkpoint,
        help="SG model to continue (sg-sg) or take witnesses from (sg-cvx)",
    )
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=_nonneg_int("--seed"), default=d.seed)
    g.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, ...")
    g.add_argument("--threads", type=_positive_int("--threads"), default=d.threads)
    g.add_argument("--output", "-o", default=None, help="also write the result record here")
    g.add_argument("--save-model", default=None, help="write the trained network here")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _config_from_args(args: argparse.Namespace, **overrides: Any):
    from cvxsnn.pipeline import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields}
    values.update(overrides)
    return TrainConfig(**values)


def _cmd_train(args: argparse.Namespace) -> int:
    from cvxsnn.pipeline import train
    from cvxsnn.records import write_json

    result = train(
        _config_from_args(args),
        progress=not args.quiet,
        save_model=args.save_model,
        snapshot_dir=args.snapshot_dir,
        snapshot_every_s=args.snapshot_every,
    )
    if args.output:
        write_json(result.record, args.output)
    json.dump(result.record, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from cvxsnn.plots import plot_file

    out = plot_file(
        args.kind,
        args.model,
        args.out,
        data=args.data,
        task=args.task,
        steps=args.steps,
        n=args.n,
        sample=args.sample,
        seed=args.seed,
    )
    json.dump(out, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cvxsnn.pipeline import predict_file

    out = predict_file(args.model, args.data, device=args.device, output=args.output)
    json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from cvxsnn.pipeline import sweep

    values = [v.strip() for v in args.values.split(",") if v.strip()]
    table = sweep(
        _config_from_args(args),
        args.param,
        values,
        seeds=args.seeds,
        progress=not args.quiet,
        output=args.output,
    )
    json.dump(table, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from cvxsnn.experiments.runner import reproduce, sweep_status

    # the arguments that pick the cells and where their results and snapshots are
    which = dict(
        preset=args.preset,
        seeds=args.seeds,
        results=args.results,
        methods=args.methods,
        settings=args.settings,
        snapshot_dir=args.snapshot_dir,
        device=args.device,
    )
    if args.status:
        cells = sweep_status(args.table, **which)
        rows = [(c.label, c.method, str(c.seed), c.state, c.detail) for c in cells]
        head = ("setting", "method", "seed", "state", "detail")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
        for r in [head, *rows]:
            print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True)), r[4])
        counts = {st: sum(c.state == st for c in cells) for st in ("done", "in progress", "to run")}
        print(", ".join(f"{n} {st}" for st, n in counts.items()) + f" of {len(cells)} cells")
        return 0
    summary = reproduce(
        args.table,
        **which,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
        data_dir=args.data_dir,
        progress=not args.quiet,
        reuse=args.reuse,
        snapshots=not args.no_snapshots,
        snapshot_every_s=args.snapshot_every,
    )
    json.dump(vars(summary), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cvxsnn.experiments.report import report

    rep = report(args.table, preset=args.preset, results=args.results, out=args.out)
    sys.stdout.write(rep.markdown)
    for path in (rep.table_path, rep.plot):
        if path:
            print(f"[cvxsnn] wrote {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cvxsnn",
        description="Train LIF spiking networks to a certified optimum over a spike dictionary.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("train", help="train one network (sg, sg-sg, cvx, sg-cvx); prints a record")
    _add_train_options(p)
    p.add_argument(
        "--snapshot-dir",
        default=None,
        metavar="DIR",
        help="keep the state of SG training here; a killed run started again with the same "
        "DIR resumes it (sg, sg-sg, sg-cvx)",
    )
    _add_snapshot_options(p, "write that state at most this often (default: %(default)s)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("plot", help="draw a spike raster, firing rates or a rho path (PNG)")
    p.add_argument("kind", choices=("raster", "rates", "path"))
    p.add_argument("--model", required=True, help="model file written by train --save-model")
    p.add_argument("--data", default=None, help="FILE.npz with X (n, T, d) [and y]")
    p.add_argument("--task", default="xor", help="task to generate when --data is not given")
    p.add_argument("--steps", "-T", type=_positive_int("--steps"), default=None)
    p.add_argument("--n", type=_positive_int("--n"), default=200, help="generated samples")
    p.add_argument("--sample", type=_nonneg_int("--sample"), default=0, help="raster sample")
    p.add_argument("--seed", type=_nonneg_int("--seed"), default=0)
    p.add_argument("--out", required=True, help="output FILE.png")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("predict", help="run a saved model on FILE.npz")
    p.add_argument("--model", required=True, help="model file written by train --save-model")
    p.add_argument("--data", required=True, help="FILE.npz with X of shape (n, T, d)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", "-o", default=None, help="write predictions (.npz)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("sweep", help="train over values of one option; prints a table per value")
    _add_train_options(p)
    p.add_argument("--param", required=True, help="option to sweep, e.g. branches, depth, steps")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 2,16,32,64")
    p.add_argument("--seeds", type=_positive_int("--seeds"), default=1)
    p.set_defaults(func=_cmd_sweep)

    table_help = "experiment: table1..table6, table4a/4b, table5a/5b, figure1..3, or a .toml file"
    p = sub.add_parser("reproduce", help="run a table or figure of the paper (resumable)")
    p.add_argument("table", help=table_help)
    p.add_argument("--preset", choices=("quick", "standard", "paper"), default="quick")
    p.add_argument(
        "--seeds",
        type=_positive_int("--seeds"),
        default=None,
        help="seeds per (setting, method); default per preset",
    )
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.add_argument(
        "--workers",
        type=_positive_int("--workers"),
        default=1,
        help="parallel processes (local) or LocalCluster workers (dask)",
    )
    p.add_argument(
        "--results",
        default=None,
        help="results file (JSON lines); default results/TABLE-PRESET.jsonl",
    )
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    p.add_argument("--device", default=None, help="torch device of every run (default cpu)")
    p.add_argument(
        "--reuse",
        nargs="+",
        default=(),
        metavar="FILE_OR_DIR",
        help="results files (or folders of them) of other tables: identical cells (same "
        "settings, seed, threads, device) are copied instead of rerun",
    )
    p.add_argument(
        "--methods",
        type=_comma_list,
        default=None,
        metavar="M1,M2",
        help="run only these methods' cells (comma list, e.g. cvx); a later run without "
        "it resumes the rest in the same results file",
    )
    p.add_argument(
        "--settings",
        type=_comma_list,
        default=None,
        metavar="LABEL1,LABEL2",
        help="run only these grid settings' cells (comma list of labels, e.g. T=28); with "
        "--methods, splits a table across machines (gather the files with --reuse)",
    )
    p.add_argument(
        "--snapshot-dir",
        default=None,
        metavar="DIR",
        help="where SG cells keep their training state, so a killed sweep resumes a cell "
        "mid-training (default: RESULTS.snapshots; deleted per cell once it is saved)",
    )
    _add_snapshot_options(p, "write an SG cell's state at most this often (default: %(default)s)")
    p.add_argument(
        "--no-snapshots", action="store_true", help="keep no SG training state between runs"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--status",
        action="store_true",
        help="run nothing: list every cell as done (test accuracy, seconds), in progress "
        "(where its SG training stands) or to run, from the results file and snapshots",
    )
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("report", help="table (and plot) of a table's results; never retrains")
    p.add_argument("table", help=table_help)
    p.add_argument("--preset", choices=("quick", "standard", "paper"), default="quick")
    p.add_argument(
        "--results", default=None, help="results file; default results/TABLE-PRESET.jsonl"
    )
    p.add_argument("--out", default=None, help="write TABLE-PRESET.md and .png in this folder")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cvxsnn`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    previous = _sigterm_interrupts()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, MemoryError) as err:
        print(f"cvxsnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cvxsnn {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sigterm_interrupts() -> Any:
    """Make SIGTERM (``kill PID``, a scheduler's stop) interrupt a command as Ctrl-C does, so
    that a sweep stops its worker processes and keeps what it finished; returns the
    previous handler, or None off the main thread (where handlers cannot be set)."""
    try:
        return signal.signal(signal.SIGTERM, _sigterm_interrupt)
    except ValueError:
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
