"""GPU against CPU on one machine: dictionary build, convex solve, SG epoch, whole CVX runs.

Prepared to run as one short job on a machine with a CUDA device (about 5 minutes on an
H100 with 16 CPU cores), so that the GPU timings can be recorded beside the CPU ones of
``docs/PERFORMANCE.md``. Every section runs the same call with ``device`` set to the GPU
and to the CPU (all the machine's cores unless ``--threads``), in the same process, and
checks that the two agree (identical atoms; certified solves with equal objectives to the
gap; the same test accuracy) before it prints the ratio.

    python benchmarks/bench_gpu.py --data-dir DIR --out OUT             # on the GPU machine
    python benchmarks/bench_gpu.py --device cpu --small --data-dir DIR  # a dry run anywhere

Sections (``--sections`` picks some; each is skipped once ``--budget`` seconds are spent):

- ``dictionary``: MNIST-SEQ T = 28, L = 3, m = 32, n = 10,000, K = 64 and K = 640;
  K = 800 on 50,000 sequences on the GPU only (the scale run of PERFORMANCE section 4);
- ``solve``: squared loss, l1, at 0.1 rho_max on the K = 640 dictionary;
- ``sg``: one SG epoch (the protocol's batch 64, float32) of MNIST-SEQ T = 28 and 56,
  K = 64, m = 32, 2,000 sequences;
- ``pipeline``: the authors' XOR configuration (CVX, L = 3, T = 6, 2,000 samples, K = 64)
  and Table 5b's T = 28 CVX cell (seed 0), whose CPU record is in
  ``docs/results/table5b-standard.jsonl``.

Writes ``OUT/gpu.jsonl`` (one JSON row per measurement) and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _runner import sg_epoch, time_call  # noqa: E402

from cvxsnn.dictionary import build_dictionary  # noqa: E402
from cvxsnn.network import NetConfig, ParallelLIFNet  # noqa: E402
from cvxsnn.pipeline import TrainConfig, encode_targets, train  # noqa: E402
from cvxsnn.sg import SGConfig, head_weights_for  # noqa: E402
from cvxsnn.solver import duality_gap, rho_max, solve  # noqa: E402
from cvxsnn.tasks import make_task  # noqa: E402
from cvxsnn.witnesses import sample_witnesses  # noqa: E402

SECTIONS = ("dictionary", "solve", "sg", "pipeline")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int) -> tuple[float, list[float], Any]:
    """Median seconds of ``repeat`` calls (after one untimed warm-up call when repeat > 1),
    each call waiting for the device to finish."""

    def call() -> Any:
        out = fn()
        sync(device)
        return out

    if repeat > 1:
        call()
    t = time_call(call, repeat, trace_memory=False)
    return t.median_s, list(t.times_s), t.result


def compared(device_s: float, device_times: list[float], cpu_s: float) -> dict[str, Any]:
    """The timing fields of a row that runs one call on the device and on the CPU."""
    return {
        "device_s": round(device_s, 4),
        "device_runs_s": [round(t, 4) for t in device_times],
        "cpu_s": round(cpu_s, 4),
        "cpu_over_device": round(cpu_s / device_s, 2),
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache: dict[str, Any] = {}

    def devices(self) -> tuple[tuple[str, str], ...]:
        """(tag, device): the device under test, then the CPU baseline."""
        return (("device", self.args.device), ("cpu", "cpu"))

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def add(self, **row: Any) -> None:
        row = {"device": self.args.device, **row}
        self.rows.append(row)
        with open(self.out / "gpu.jsonl", "a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
        print(json.dumps(row, default=str), flush=True)

    # ------------------------------------------------------------------ dictionary
    def mnist(self, n: int, T: int = 28) -> Any:
        key = f"mnist{n}-{T}"
        if key not in self.cache:
            self.cache[key] = make_task(
                "mnist-seq", steps=T, n_train=n, n_val=10, n_test=10, seed=0,
                data_dir=self.args.data_dir,
            )  # fmt: skip
        return self.cache[key]

    def dictionary(self) -> None:
        small = self.args.small
        n = 500 if small else 10_000
        for K in (8, 64) if small else (64, 640):
            task = self.mnist(n)
            params = sample_witnesses(
                task.train.d, (32, 32), K, generator=torch.Generator().manual_seed(0)
            )
            x = task.train.x.double()
            steps = task.train.steps
            res = {}
            for tag, dev in self.devices():
                res[tag] = timed(
                    lambda dev=dev, p=params, x=x, st=steps: build_dictionary(p, x, st, device=dev),
                    dev,
                    repeat=3 if tag == "device" else 1,
                )
            (g_med, g_times, g_dic), (c_med, _, c_dic) = res["device"], res["cpu"]
            same = g_dic.atoms.shape == c_dic.atoms.shape and np.array_equal(
                g_dic.atoms, c_dic.atoms
            )
            self.add(
                section="dictionary",
                setting=f"MNIST-SEQ T=28 L=3 K={K} m=32 n={n}",
                P=int(g_dic.atoms.shape[1]),
                **compared(g_med, g_times, c_med),
                identical_atoms=bool(same),
            )
            if K == (64 if small else 640):
                self.cache["dic"] = (g_dic, task)
        if not small and self.args.device != "cpu" and self.left() > 120:
            task = self.mnist(50_000)
            params = sample_witnesses(
                task.train.d, (32, 32), 800, generator=torch.Generator().manual_seed(0)
            )
            med, _, dic = timed(
                lambda: build_dictionary(
                    params, task.train.x.double(), task.train.steps, device=self.args.device
                ),
                self.args.device,
                repeat=1,
            )
            self.add(
                section="dictionary",
                setting="MNIST-SEQ T=28 L=3 K=800 m=32 n=50000 (device only)",
                P=int(dic.atoms.shape[1]),
                device_s=round(med, 3),
                cpu_s="see PERFORMANCE section 4 (782 s on one shared core)",
            )

    # ------------------------------------------------------------------ solve
    def solve(self) -> None:
        if "dic" not in self.cache:
            self.dictionary()
        dic, task = self.cache["dic"]
        D = np.asarray(dic.atoms)
        Y, _, _ = encode_targets(task.train, "squared", (1.0,))
        Y = np.asarray(Y, dtype=np.float64)
        rho = 0.1 * rho_max(D, Y)
        res = {}
        for tag, dev in self.devices():
            use = None if dev == "cpu" else dev
            med, times, r = timed(
                lambda use=use: solve(D, Y, rho, tol=1e-6, device=use),
                dev,
                repeat=3 if tag == "device" else 1,
            )
            res[tag] = (med, times, r, duality_gap(D, Y, r.coef, r.intercept, rho))
        (g_med, g_times, g, gc), (c_med, _, c, cc) = res["device"], res["cpu"]
        self.add(
            section="solve",
            setting=f"MNIST-SEQ P={dic.atoms.shape[1]} atoms, n={D.shape[0]}, l1, 0.1 rho_max",
            **compared(g_med, g_times, c_med),
            device_rel_gap=gc.rel_gap,
            cpu_rel_gap=cc.rel_gap,
            primal_diff=abs(gc.primal - cc.primal),
            support=(int(g.support.size), int(c.support.size)),
        )

    # ------------------------------------------------------------------ SG epoch
    def sg(self) -> None:
        small = self.args.small
        n = 256 if small else 2000
        for T in (28, 56):
            task = self.mnist(n, T)
            sgc = SGConfig()
            res = {}
            for tag, dev in self.devices():
                train_ds = task.train.to(device=dev, dtype=torch.float32)
                cfg = NetConfig(
                    d_in=train_ds.d, widths=(32, 32), branches=64,
                    out_layout=train_ds.head_classes, head_classes=train_ds.head_classes,
                    surrogate=sgc.surrogate, surrogate_scale=sgc.surrogate_scale,
                )  # fmt: skip
                weights = head_weights_for(train_ds, sgc)

                def epoch(cfg=cfg, ds=train_ds, weights=weights, dev=dev, sgc=sgc) -> float:
                    net = ParallelLIFNet(cfg, device=dev, dtype=torch.float32)
                    net.reset_parameters(
                        gain=sgc.init_gain, generator=torch.Generator().manual_seed(0)
                    )
                    return sg_epoch(net, ds.x, ds.targets, ds.steps, weights, sgc)

                res[tag] = timed(epoch, dev, repeat=3 if tag == "device" else 1)
            (g_med, g_times, g_loss), (c_med, _, c_loss) = res["device"], res["cpu"]
            self.add(
                section="sg",
                setting=f"MNIST-SEQ T={T} L=3 K=64 m=32 n={n} B=64 float32, one epoch",
                **compared(g_med, g_times, c_med),
                mean_loss=(round(g_loss, 5), round(c_loss, 5)),
            )

    # ------------------------------------------------------------------ pipeline
    def pipeline(self) -> None:
        from cvxsnn.experiments import expand_cells, load_experiment

        xor = TrainConfig(
            task="xor", method="cvx", depth=3, steps=6, n_train=2000, n_val=500, n_test=1000,
            branches=64, width=32,
        )  # fmt: skip
        runs = [("XOR L=3 T=6 K=64 n=2000 CVX (authors' configuration)", xor, None)]
        if not self.args.small:
            cells = expand_cells(
                load_experiment("table5b"), "standard", data_dir=self.args.data_dir
            )
            (cell,) = [c for c in cells if (c.label, c.method, c.seed) == ("T=28", "cvx", 0)]
            ref = None
            path = ROOT / "docs" / "results" / "table5b-standard.jsonl"
            for line in path.read_text().splitlines():
                e = json.loads(line)
                if e.get("cell_id") == cell.cell_id:
                    ref = e["record"]
            runs.append(("Table 5b T=28 CVX seed 0", cell.config, ref))
        for name, cfg, ref in runs:
            row: dict[str, Any] = {"section": "pipeline", "setting": name}
            for tag, dev in self.devices():
                if tag == "cpu" and ref is not None:
                    row["cpu_s"] = f"record: {ref['time_s']['total']} s (2-core machine)"
                    row["cpu_test_acc"] = ref["test_acc"]
                    continue
                c = dataclasses.replace(cfg, device=dev, threads=self.args.threads)
                t0 = time.perf_counter()
                rec = train(c, progress=False).record
                wall = time.perf_counter() - t0
                row[f"{tag}_s"] = round(wall, 3)
                row[f"{tag}_test_acc"] = rec["test_acc"]
                row[f"{tag}_rel_gap"] = rec["rel_gap"]
                row[f"{tag}_stages_s"] = rec["time_s"]
            if isinstance(row.get("cpu_s"), float):
                row["cpu_over_device"] = round(row["cpu_s"] / row["device_s"], 2)
            self.add(**row)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data-dir", default=os.environ.get("CVXSNN_DATA_DIR"))
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; later sections skip")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ap.add_argument("--small", action="store_true", help="tiny sizes: a dry run of the script")
    args = ap.parse_args(argv)
    if args.data_dir is None:
        ap.error("--data-dir (or CVXSNN_DATA_DIR): the folder with the MNIST IDX files")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch sees no CUDA device")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }
    bench.add(section="environment", **env)
    for name in args.sections.split(","):
        if name not in SECTIONS:
            ap.error(f"--sections: unknown section {name!r}; choose from {list(SECTIONS)}")
        if bench.left() <= 0:
            bench.add(section=name, skipped=f"budget of {args.budget:g} s spent")
            continue
        t0 = time.perf_counter()
        getattr(bench, name)()
        print(f"[bench_gpu] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
