"""Run an experiment's (setting x method x seed) cells into a resumable results file.

The results file is JSON lines. The first line is a header holding the hash
of the experiment config and preset (:meth:`Experiment.config_hash`); every
further line is one finished cell::

    {"kind": "cell", "cell_id": ..., "label": ..., "method": ..., "seed": ...,
     "record": {...}, "host": {...}, "finished_at": ...}

A cell is identified by the hash of its TrainConfig (without ``data_dir``,
which says where the data lives, not what is run). Each finished cell is
appended as one line, then flushed and fsynced, by the parent process only,
so an interrupted sweep keeps every finished cell; rerunning the same command
runs only the cells not in the file. A truncated last line (a kill during a
write) is dropped on resume. A file written under another config hash is
refused, never mixed in.

Cells pin their thread count (``TrainConfig.threads``, 1 unless the config
says otherwise), so a record does not depend on the executor that ran it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, get_args

from cvxsnn.experiments.config import Experiment, load_experiment
from cvxsnn.network import config_hash
from cvxsnn.pipeline import TrainConfig
from cvxsnn.sg import check_snapshot_interval, read_progress, snapshot_progress

__all__ = [
    "EXECUTORS",
    "Cell",
    "CellError",
    "CellStatus",
    "ReproduceSummary",
    "ResultsFile",
    "cell_id",
    "comparable",
    "default_results_path",
    "expand_cells",
    "read_results",
    "reproduce",
    "run_cell",
    "sweep_status",
]

ExecutorName = Literal["local", "dask"]
EXECUTORS: tuple[str, ...] = get_args(ExecutorName)
RESULTS_FORMAT = "cvxsnn-results"
RESULTS_VERSION = 1
#: Record keys that hold timings or describe the host, not the result.
HOST_KEYS = frozenset({"time_s", "memory", "environment", "model_path"})


class CellError(RuntimeError):
    """A cell of a sweep failed; finished cells are kept in the results file."""


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: a setting, a method and a seed."""

    label: str
    method: str
    seed: int
    config: TrainConfig
    cell_id: str


def cell_id(config: TrainConfig) -> str:
    """Hash identifying a run: its TrainConfig without ``data_dir``."""
    d = config.identity()
    d.pop("data_dir")
    return config_hash(d)


def expand_cells(
    experiment: Experiment,
    preset: str,
    seeds: int | None = None,
    data_dir: str | None = None,
    device: str | None = None,
) -> list[Cell]:
    """The (setting x method x seed) cells of ``experiment`` under ``preset``.

    Parameters
    ----------
    seeds : int, optional
        Seeds 0 .. seeds-1; the preset's count when omitted.
    data_dir : str, optional
        Folder of the MNIST files, set on every cell (not part of its identity).
    device : str, optional
        Torch device of every cell (part of its identity).

    Returns
    -------
    list of Cell
        In setting, method, seed order; a TrainConfig reached twice runs once.
    """
    n_seeds = experiment.preset(preset).seeds if seeds is None else int(seeds)
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {n_seeds}")
    cells, seen = [], set()
    for setting in experiment.settings(preset):
        for method in experiment.methods:
            for seed in range(n_seeds):
                changes: dict[str, Any] = {"method": method, "seed": seed}
                if setting.config.threads is None:
                    changes["threads"] = 1
                if data_dir is not None:
                    changes["data_dir"] = str(data_dir)
                if device is not None:
                    changes["device"] = device
                cfg = dataclasses.replace(setting.config, **changes)
                cid = cell_id(cfg)
                if cid not in seen:
                    seen.add(cid)
                    cells.append(Cell(setting.label, method, seed, cfg, cid))
    return cells


def default_results_path(name: str, preset: str) -> Path:
    """``results/<name>-<preset>.jsonl`` under the current directory."""
    return Path("results") / f"{name}-{preset}.jsonl"


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its timings and host fields (``time_s`` anywhere, memory, ...).

    Two runs of the same cell give equal ``comparable`` records.
    """

    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "time_s"}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    out = {k: v for k, v in record.items() if k not in HOST_KEYS}
    out = strip(out)
    if isinstance(out.get("config"), dict):
        out["config"] = {k: v for k, v in out["config"].items() if k != "data_dir"}
        out.pop("config_hash", None)  # it hashes data_dir too
    return out


# --------------------------------------------------------------------------- #
# The results file
# --------------------------------------------------------------------------- #
def read_results(path: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """Read a results file without changing it.

    Returns
    -------
    header : dict or None
        None when the file is empty or holds no complete header line.
    entries : list of dict
        The finished cells, in file order.
    good_bytes : int
        Length of the complete, valid prefix; a longer file ends in a
        truncated line, which is ignored.

    Raises
    ------
    ValueError
        A line other than the last is not valid JSON, or the header is not a
        cvxsnn results header.
    """
    path = Path(path)
    data = path.read_bytes()
    header, entries, good = None, [], 0
    pos = 0
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        complete = i < len(lines) - 1  # the last piece has no newline after it
        end = pos + len(raw) + (1 if complete else 0)
        if not raw.strip():
            pos = end
            if complete:
                good = end
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            if complete and any(x.strip() for x in lines[i + 1 :]):
                raise ValueError(
                    f"results file {path}: line {i + 1} is not valid JSON (the file is damaged; "
                    "only a truncated last line is repaired)"
                ) from None
            break
        if not complete:
            break  # a last line without its newline may be cut short: ignore it
        if header is None:
            if not (
                isinstance(obj, dict)
                and obj.get("kind") == "header"
                and obj.get("format") == RESULTS_FORMAT
            ):
                raise ValueError(
                    f"results file {path}: first line is not a {RESULTS_FORMAT} header"
                )
            header = obj
        elif isinstance(obj, dict) and obj.get("kind") == "cell":
            entries.append(obj)
        else:
            raise ValueError(f"results file {path}: line {i + 1} is not a cell entry")
        pos = end
        good = end
    return header, entries, good


def _header(experiment: Experiment, preset: str) -> dict[str, Any]:
    return {
        "kind": "header",
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_VERSION,
        "experiment": experiment.name,
        "preset": preset,
        "config_hash": experiment.config_hash(preset),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def check_header(header: dict[str, Any], path: Path, experiment: Experiment, preset: str) -> None:
    """Refuse a results file written under another experiment config or preset."""
    want = experiment.config_hash(preset)
    have = header.get("config_hash")
    if have != want:
        raise ValueError(
            f"results file {path} was written under config hash {have} "
            f"({header.get('experiment')} --preset {header.get('preset')}), but "
            f"{experiment.name} --preset {preset} now has config hash {want}; refusing to mix "
            "them: pass another --results file or move this one away"
        )


class ResultsFile:
    """An open results file: finished cells by id, and an appender.

    Opening creates the file with its header, or checks the header of an
    existing one and cuts a truncated last line. Use as a context manager;
    the file is locked against a second writer while open.
    """

    def __init__(self, path: str | Path, experiment: Experiment, preset: str) -> None:
        self.path = Path(path)
        self.experiment = experiment
        self.preset = preset
        self.entries: dict[str, dict[str, Any]] = {}
        self.repaired_bytes = 0
        self._fh: IO[str] | None = None

    def __enter__(self) -> ResultsFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            _lock(fh, self.path)
            header, entries, good = read_results(self.path)
            size = self.path.stat().st_size
            if header is None:
                fh.truncate(0)
                self._fh = fh
                self._append(_header(self.experiment, self.preset))
            else:
                check_header(header, self.path, self.experiment, self.preset)
                if good < size:
                    self.repaired_bytes = size - good
                    fh.truncate(good)
                    os.fsync(fh.fileno())
                    print(
                        f"[cvxsnn] {self.path}: dropped a truncated last line "
                        f"({self.repaired_bytes} bytes)",
                        file=sys.stderr,
                    )
                self._fh = fh
            for e in entries:
                self.entries.setdefault(e["cell_id"], e)
        except BaseException:
            fh.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _append(self, obj: dict[str, Any]) -> None:
        assert self._fh is not None, "ResultsFile must be opened with 'with'"
        line = json.dumps(obj, sort_keys=True, default=str)
        self._fh.seek(0, os.SEEK_END)
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def add(self, cell: Cell, record: dict[str, Any], host: dict[str, Any]) -> None:
        """Append one finished cell (one line, flushed and fsynced)."""
        entry = {
            "kind": "cell",
            "cell_id": cell.cell_id,
            "label": cell.label,
            "method": cell.method,
            "seed": cell.seed,
            "record": record,
            "host": host,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._append(entry)
        self.entries[cell.cell_id] = entry


def _lock(fh: IO[str], path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover (not POSIX)
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ValueError(f"results file {path} is being written by another process") from None


# --------------------------------------------------------------------------- #
# Running cells
# --------------------------------------------------------------------------- #
def run_cell(
    config: dict[str, Any],
    snapshot_dir: str | None = None,
    snapshot_every_s: float = 120.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one cell (in whatever process or worker calls it).

    Parameters
    ----------
    config : dict
        ``TrainConfig.to_dict()`` of the cell.
    snapshot_dir, snapshot_every_s
        Where SG training keeps its state, and how often it writes it
        (:func:`cvxsnn.pipeline.train`): a cell killed during SG training
        resumes there.

    Returns
    -------
    record : dict
        The run's JSON-ready record (:func:`cvxsnn.pipeline.train`).
    host : dict
        Host name, process id and wall seconds of the cell.
    """
    from cvxsnn.pipeline import train

    t0 = time.perf_counter()
    record = train(
        TrainConfig(**config),
        progress=False,
        snapshot_dir=snapshot_dir,
        snapshot_every_s=snapshot_every_s,
    ).record
    host = {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    return record, host


@dataclass(frozen=True)
class ReproduceSummary:
    """What :func:`reproduce` did."""

    experiment: str
    preset: str
    results: str
    config_hash: str
    n_cells: int
    n_already_done: int
    n_run: int
    seconds: float
    n_reused: int = 0


class _Stop:
    """Set by the consumer after a failure: start no new cell."""

    def __init__(self) -> None:
        self.set = False


@dataclass(frozen=True)
class _Snapshots:
    """Where cells keep their SG training state: ``root/<cell_id>/``; None: nowhere."""

    root: Path | None
    every_s: float = 120.0

    def args(self, cell: Cell) -> tuple[str | None, float]:
        """The ``snapshot_dir`` and ``snapshot_every_s`` arguments of :func:`run_cell`."""
        return (None if self.root is None else str(self.root / cell.cell_id)), self.every_s

    def holds(self, cell: Cell) -> bool:
        """Whether a snapshot of ``cell`` is there to resume from."""
        return self.root is not None and any((self.root / cell.cell_id).glob("*.pt"))

    def discard(self, cell: Cell) -> None:
        """Delete a cell's snapshots once its record is stored."""
        if self.root is not None:
            shutil.rmtree(self.root / cell.cell_id, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.root.rmdir()  # only when no other cell's snapshots remain


#: Seconds between two looks of a sweep at its running cells' progress files.
PROGRESS_POLL_S = 15.0

_STAGES = {"sg": "", "sg_continue": "continued "}  # snapshot stem -> how its line starts


def _stage_info(
    folder: Path, stem: str, saved: bool, since: float | None, loaded: dict | None = None
) -> dict | None:
    """One stage's progress summary: its progress file, or (``saved``) its snapshot.

    ``loaded`` keeps the snapshots' summaries between calls on the same folder (each is
    a ``torch.load`` of the whole snapshot)."""
    info = read_progress(folder / f"{stem}.progress.json")

    def from_snapshot() -> dict | None:
        path = folder / f"{stem}.pt"
        if loaded is None:
            return snapshot_progress(path)
        if path not in loaded:
            loaded[path] = snapshot_progress(path)
        got = loaded[path]
        return None if got is None else dict(got)  # callers may edit their copy

    if saved:
        snap = from_snapshot()
        if snap is not None and info is not None:  # the grid's size and epoch limit
            snap["n_lrs"], snap["max_epochs"] = info.get("n_lrs"), info.get("max_epochs")
            if snap.get("rate_ended") and isinstance(snap["n_lrs"], int):
                # written at the end of a rate: a rerun starts the next one at epoch 0
                if snap["lr_index"] + 1 < snap["n_lrs"]:
                    snap["lr_index"], snap["epoch"] = snap["lr_index"] + 1, 0
                else:
                    snap["done"] = True
        info = snap
    elif info is None and since is None:
        info = from_snapshot()
    if info is None or (since is not None and float(info.get("updated", 0.0)) < since):
        return None
    return info


def _latest_stage(
    folder: Path, saved: bool, since: float | None, loaded: dict | None = None
) -> tuple[dict, str] | None:
    latest = None
    for stem, prefix in _STAGES.items():
        info = _stage_info(folder, stem, saved, since, loaded)
        if info is None:
            continue
        if latest is None or info.get("updated", 0.0) >= latest[0].get("updated", 0.0):
            latest = (info, prefix)
    return latest


def _position(info: dict, prefix: str) -> tuple[Any, ...]:
    """(stage, learning rate index, epoch) of a summary; (stage, "done") once trained."""
    if info.get("done"):
        return prefix, "done"
    return prefix, info.get("lr_index"), info.get("epoch")


def _progress_line(info: dict, prefix: str) -> str | None:
    try:
        n_lrs, max_epochs = info["n_lrs"], info["max_epochs"]
        if info["done"]:
            where = f"{n_lrs} learning rates done"
        else:
            where = f"lr {info['lr_index'] + 1}{'' if n_lrs is None else f'/{n_lrs}'} "
            where += f"epoch {info['epoch']}{'' if max_epochs is None else f'/{max_epochs}'}"
        line = f"{prefix}{where}, best val {float(info['grid_best_val_accuracy']):.3f}"
    except (KeyError, TypeError, ValueError):
        return None
    return line + (" (snapshot)" if n_lrs is None else "")


def cell_progress(
    folder: str | Path, since: float | None = None, *, saved: bool = False
) -> str | None:
    """One line on the SG training whose snapshots are in ``folder``, or None.

    Read from the progress files that :func:`cvxsnn.sg.train_sg` keeps beside its
    snapshots (:func:`cvxsnn.sg.progress_path`): the learning rate and epoch in progress
    and the best validation accuracy so far, e.g. ``lr 2/3 epoch 41/200, best val
    0.918``. For SG-SG the continued run's file, once written, is the one shown. Files
    last written before ``since`` (Unix time) are ignored. Without ``since``, a snapshot
    with no progress file beside it is read itself (slower; the line then ends in
    ``(snapshot)``).

    The progress file is rewritten every epoch, the snapshot at most every
    ``snapshot_every_s`` seconds, so after a kill the file can be ahead of the state a
    rerun resumes from. ``saved=True`` reads that state: the snapshots themselves (the
    grid's size and epoch limit taken from the progress file).
    """
    latest = _latest_stage(Path(folder), saved, since)
    return None if latest is None else _progress_line(*latest)


def _status_detail(folder: Path) -> str:
    """Where an interrupted cell stands, and where a rerun resumes when that is earlier."""
    loaded: dict = {}  # each snapshot loaded once for both questions
    latest = _latest_stage(folder, False, None, loaded)
    if latest is None:
        return "unreadable snapshot"
    line = _progress_line(*latest) or "snapshot, unreadable progress file"
    elapsed = latest[0].get("elapsed_s")
    if isinstance(elapsed, (int, float)):
        tail = " (snapshot)" if line.endswith(" (snapshot)") else ""
        line = f"{line.removesuffix(tail)}, {elapsed:,.0f} s trained{tail}"
    saved = _latest_stage(folder, True, None, loaded)
    if saved is None:
        return f"{line}; no readable snapshot: a rerun starts the cell afresh"
    if _position(*saved) != _position(*latest):
        line += f"; resumes from its snapshot at {_progress_line(*saved)}"
    return line


class _ProgressWatcher:
    """Shows, in the sweep's progress bar, where the SG training of each running cell is.

    A thread reads the cells' progress files (:func:`cell_progress`) every ``every_s``
    seconds, so it works for every executor whose workers write the snapshot folder this
    process reads (local processes, a local Dask cluster, a cluster on a shared file
    system). Cells whose files were written before the sweep started are not shown.
    """

    def __init__(self, bar: Any, snaps: _Snapshots, cells: list[Cell], every_s: float) -> None:
        self.bar, self.snaps, self.every_s = bar, snaps, every_s
        self.since = time.time()
        self.cells = {c.cell_id: c for c in cells}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cvxsnn-progress", daemon=True)

    def __enter__(self) -> _ProgressWatcher:
        if self.snaps.root is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def finished(self, cell: Cell) -> None:
        self.cells.pop(cell.cell_id, None)

    def text(self) -> str:
        assert self.snaps.root is not None
        parts = []
        for c in list(self.cells.values()):
            line = cell_progress(self.snaps.root / c.cell_id, self.since)
            if line is not None:
                parts.append(f"{c.label} {c.method} seed {c.seed}: {line}")
        return " | ".join(parts)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            text = self.text()
            if text:
                self.bar.set_postfix_str(text)


def _iter_local(
    cells: list[Cell], workers: int, stop: _Stop, snaps: _Snapshots
) -> Iterator[tuple[Cell, Any]]:
    """Yield (cell, outcome) as cells finish; an outcome is (record, host) or an exception."""
    if workers == 1:
        for cell in cells:
            if stop.set:
                return
            try:
                yield cell, run_cell(cell.config.to_dict(), *snaps.args(cell))
            except Exception as err:
                yield cell, err
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures: dict[cf.Future, Cell] = {}
        try:
            for c in cells:
                futures[pool.submit(run_cell, c.config.to_dict(), *snaps.args(c))] = c
            for fut in cf.as_completed(futures):
                if fut.cancelled():
                    continue
                err = fut.exception()
                yield futures[fut], (err if err is not None else fut.result())
                if stop.set:  # cells not started are dropped; running ones finish
                    for other in futures:
                        other.cancel()
        except BaseException:
            # Interrupted (Ctrl-C or SIGTERM to this process alone) or closed early: stop the
            # running cells now rather than wait hours for them; their snapshots keep what
            # they trained, so a rerun resumes them.
            _terminate_workers(pool)
            raise
        finally:
            for fut in futures:
                fut.cancel()


def _terminate_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the pool's worker processes."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()
    # the pool sees its workers gone, marks itself broken and closes its queues
    pool.shutdown(wait=True, cancel_futures=True)


def _iter_dask(
    cells: list[Cell],
    workers: int,
    scheduler: str | None,
    processes: bool,
    stop: _Stop,
    snaps: _Snapshots,
) -> Iterator[tuple[Cell, Any]]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ValueError(
            "executor 'dask' needs dask.distributed: pip install 'cvxsnn[dask]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=processes,
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        futures = {}
        for c in cells:
            fut = client.submit(run_cell, c.config.to_dict(), *snaps.args(c), pure=False)
            futures[fut] = c
        try:
            for fut in as_completed(list(futures)):
                cell = futures[fut]
                if fut.status == "cancelled":
                    continue
                yield cell, (fut.exception() if fut.status == "error" else fut.result())
                if stop.set:
                    break
        finally:
            client.cancel([f for f in futures if not f.done()])


def _select_cells(
    exp: Experiment,
    preset: str,
    seeds: int | None,
    data_dir: str | None,
    device: str | None,
    methods: Sequence[str] | None,
    settings: Sequence[str] | None,
) -> list[Cell]:
    """The cells of ``exp`` under ``preset``, restricted to ``methods`` and ``settings``."""
    cells = expand_cells(exp, preset, seeds, data_dir=data_dir, device=device)
    if methods is not None:
        unknown = [m for m in methods if m not in exp.methods]
        if unknown or not methods:
            raise ValueError(
                f"methods must be a non-empty subset of {exp.name}'s methods "
                f"{list(exp.methods)}; got {list(methods)}"
            )
        cells = [c for c in cells if c.method in methods]
    if settings is not None:
        labels = [st.label for st in exp.settings(preset)]
        unknown = [lb for lb in settings if lb not in labels]
        if unknown or not settings:
            raise ValueError(
                f"settings must be a non-empty subset of {exp.name}'s settings {labels} "
                f"under preset {preset!r}; got {list(settings)}"
            )
        cells = [c for c in cells if c.label in settings]
    return cells


def _snapshot_root(results: Path, snapshot_dir: str | Path | None) -> Path:
    """The cells' snapshot folder: ``snapshot_dir``, or ``<results>.snapshots``."""
    root = (
        Path(snapshot_dir)
        if snapshot_dir is not None
        else results.with_name(results.name + ".snapshots")
    )
    return root.absolute()


@dataclass(frozen=True)
class CellStatus:
    """Where one cell of a sweep stands (:func:`sweep_status`).

    Attributes
    ----------
    label, method, seed, cell_id
        The cell.
    state : {"done", "in progress", "to run"}
        In the results file; not there but with an SG snapshot to resume from; neither.
    detail : str
        Done: its test accuracy and wall seconds. In progress: where its SG training
        stands (:func:`cell_progress`), as of the progress file's last write, followed by
        "; resumes from its snapshot at ..." when the snapshot a rerun resumes from is
        behind that (the file is rewritten every epoch, the snapshot less often).
    """

    label: str
    method: str
    seed: int
    cell_id: str
    state: str
    detail: str = ""


def sweep_status(
    experiment: str | Path | Experiment,
    preset: str = "quick",
    seeds: int | None = None,
    results: str | Path | None = None,
    methods: Sequence[str] | None = None,
    settings: Sequence[str] | None = None,
    snapshot_dir: str | Path | None = None,
    device: str | None = None,
) -> list[CellStatus]:
    """Where every cell of a sweep stands, from its results file and snapshots only.

    Runs nothing and writes nothing; safe beside a running sweep. The arguments are
    :func:`reproduce`'s (``device`` is part of a cell's identity: give the sweep's). A
    results file of another config is refused as there. A cell that is running but has
    written no snapshot yet (a CVX cell, an SG cell before its first write) shows as
    "to run".
    """
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    exp.preset(preset)
    cells = _select_cells(exp, preset, seeds, None, device, methods, settings)
    path = Path(results) if results is not None else default_results_path(exp.name, preset)
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        header, entries, _ = read_results(path)
        if header is not None:
            check_header(header, path, exp, preset)
        done = {e["cell_id"]: e for e in entries}
    snaps = _Snapshots(_snapshot_root(path, snapshot_dir))
    out = []
    for c in cells:
        if c.cell_id in done:
            entry = done[c.cell_id]
            acc = entry["record"].get("test_acc")
            wall = entry.get("host", {}).get("wall_s")
            parts = [f"test acc {acc:.3f}" if isinstance(acc, (int, float)) else ""]
            parts.append(f"{wall:,.0f} s" if isinstance(wall, (int, float)) else "")
            state, detail = "done", ", ".join(p for p in parts if p)
        elif snaps.holds(c):
            assert snaps.root is not None
            state, detail = "in progress", _status_detail(snaps.root / c.cell_id)
        else:
            state, detail = "to run", ""
        out.append(CellStatus(c.label, c.method, c.seed, c.cell_id, state, detail))
    return out


def reproduce(
    experiment: str | Path | Experiment,
    preset: str = "quick",
    seeds: int | None = None,
    executor: ExecutorName = "local",
    workers: int = 1,
    scheduler: str | None = None,
    results: str | Path | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
    dask_processes: bool = True,
    reuse: Sequence[str | Path] = (),
    methods: Sequence[str] | None = None,
    settings: Sequence[str] | None = None,
    snapshots: bool = True,
    snapshot_dir: str | Path | None = None,
    snapshot_every_s: float = 120.0,
) -> ReproduceSummary:
    """Run every cell of an experiment not yet in its results file.

    Parameters
    ----------
    experiment : str, Path or Experiment
        A shipped config's name (``"table2"``), a TOML path, or a loaded one.
    preset : {"quick", "standard", "paper"}
    seeds : int, optional
        Seeds 0 .. seeds-1 per (setting, method); the preset's count by default.
    executor : {"local", "dask"}
        ``local``: in this process (``workers=1``) or a pool of ``workers``
        processes. ``dask``: a ``distributed.LocalCluster`` of ``workers``
        single-threaded workers, or the scheduler at ``scheduler``.
    results : str or Path, optional
        The JSON-lines results file; ``results/<name>-<preset>.jsonl`` by default.
    data_dir, device : str, optional
        Set on every cell (see :func:`expand_cells`).
    progress : bool
        A progress bar with ETA on stderr. While cells train, it names each running SG
        cell's learning rate, epoch and best validation accuracy so far, read every
        ``PROGRESS_POLL_S`` seconds from the progress files beside the cells' snapshots
        (:func:`cell_progress`; not shown with ``snapshots=False``, or when the workers
        write snapshots where this process cannot read them).
    dask_processes : bool
        LocalCluster workers as processes (True) or threads of this process.
    reuse : sequence of str or Path
        Results files (or folders of them) of other experiments: a cell whose
        id (the hash of its whole TrainConfig, seed, thread count and device
        included) is finished there is copied, not rerun, with
        ``host["reused_from"]`` naming the file. The same id means the same
        run, and runs are deterministic per id, so the copy is the record
        this sweep would have produced (timings aside).
    methods : sequence of str, optional
        Run only the cells of these methods (each one of the experiment's), e.g. the
        convex half of a table whose SG cells take days. The results file is the
        experiment's own (same config hash): a later run without ``methods`` finds
        these cells done and runs the rest.
    settings : sequence of str, optional
        Run only the cells of these grid settings (labels, e.g. ``["T=28"]``), in the
        same way. With ``methods``, one table's cells can be split across machines,
        each writing its own results file; ``reuse`` then gathers them into one.
    snapshots : bool
        Let each cell keep the state of its SG training in ``snapshot_dir/<cell_id>/``
        (written at most every ``snapshot_every_s`` seconds and at the end of each
        learning rate; :class:`cvxsnn.sg.SGSnapshot`), so that a sweep killed in the
        middle of an hours-long SG cell resumes that cell where it stopped, with the
        record an uninterrupted run gives (timings aside). A cell's snapshots are
        deleted once its record is in the results file.
    snapshot_dir : str or Path, optional
        ``<results>.snapshots`` next to the results file by default. With a remote
        Dask scheduler it must be a folder every worker can reach.
    snapshot_every_s : float
        See ``snapshots``.

    Returns
    -------
    ReproduceSummary

    Raises
    ------
    CellError
        A cell raised. No new cell is started after that; cells already
        running finish and are saved; rerunning resumes.
    ValueError
        Bad arguments, or a results file of another config.
    """
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    exp.preset(preset)
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}; got {executor!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if scheduler and executor != "dask":
        raise ValueError(f"scheduler needs executor 'dask'; got executor {executor!r}")
    cells = _select_cells(exp, preset, seeds, data_dir, device, methods, settings)
    path = Path(results) if results is not None else default_results_path(exp.name, preset)
    every_s = check_snapshot_interval(snapshot_every_s, "snapshot_every_s")
    snaps = _Snapshots(_snapshot_root(path, snapshot_dir) if snapshots else None, every_s)
    t0 = time.perf_counter()
    with ResultsFile(path, exp, preset) as store:
        todo = [c for c in cells if c.cell_id not in store.entries]
        n_reused = _reuse(todo, store, reuse, path)
        todo = [c for c in todo if c.cell_id not in store.entries]
        done_before = len(cells) - len(todo) - n_reused
        if progress:
            only = "".join(
                f" ({name} {', '.join(chosen)})"
                for name, chosen in (("methods", methods), ("settings", settings))
                if chosen is not None
            )
            print(
                f"[cvxsnn] {exp.name} --preset {preset}{only}: {len(cells)} cells, "
                f"{done_before} already "
                f"in {path}, {n_reused} copied from other results files, {len(todo)} to run",
                file=sys.stderr,
                flush=True,
            )
            for c in todo:
                if snaps.holds(c):
                    assert snaps.root is not None
                    where = cell_progress(snaps.root / c.cell_id, saved=True)
                    print(
                        f"[cvxsnn] {c.label} / {c.method} / seed {c.seed} resumes from its "
                        f"snapshot{f' ({where})' if where else ''} in {snaps.root / c.cell_id}",
                        file=sys.stderr,
                        flush=True,
                    )
        n_run = 0
        failure: tuple[Cell, BaseException] | None = None
        if todo:
            from tqdm.auto import tqdm

            stop = _Stop()
            if executor == "local":
                stream = _iter_local(todo, int(workers), stop, snaps)
            else:
                stream = _iter_dask(todo, int(workers), scheduler, dask_processes, stop, snaps)
            bar = tqdm(
                total=len(cells),
                initial=done_before + n_reused,
                desc=exp.name,
                unit="cell",
                file=sys.stderr,
                disable=not progress,
                dynamic_ncols=True,
            )
            watch = _ProgressWatcher(
                bar, snaps if progress else _Snapshots(None), todo, PROGRESS_POLL_S
            )
            try:
                with watch:
                    for cell, outcome in stream:
                        watch.finished(cell)
                        if isinstance(outcome, BaseException):
                            failure = failure or (cell, outcome)
                            stop.set = True
                            continue
                        record, host = outcome
                        store.add(cell, record, host)
                        snaps.discard(cell)
                        n_run += 1
                        bar.set_postfix_str(
                            f"done: {cell.label} {cell.method} seed {cell.seed}", refresh=False
                        )
                        bar.update(1)
            except KeyboardInterrupt:
                if progress:
                    bar.close()
                    where = "" if snaps.root is None else f" (SG cells from {snaps.root})"
                    print(
                        f"[cvxsnn] interrupted: {n_run + done_before + n_reused} finished cells "
                        f"are saved in {path}; rerun the same command to resume{where}",
                        file=sys.stderr,
                        flush=True,
                    )
                raise
            finally:
                bar.close()
                stream.close()
        if failure is not None:
            cell, err = failure
            raise CellError(
                f"cell {cell.label!r} / {cell.method} / seed {cell.seed} (id {cell.cell_id}) "
                f"failed: {type(err).__name__}: {err}; {n_run + done_before} finished cells are "
                f"saved in {path}; rerun the same command to resume"
            ) from err
    return ReproduceSummary(
        exp.name,
        preset,
        str(path),
        exp.config_hash(preset),
        len(cells),
        done_before,
        n_run,
        round(time.perf_counter() - t0, 3),
        n_reused,
    )


def _reuse(
    todo: list[Cell], store: ResultsFile, sources: Sequence[str | Path], target: Path
) -> int:
    """Copy the finished cells of ``todo`` found in ``sources`` into ``store``."""
    if not todo or not sources:
        return 0
    files: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files += sorted(src.glob("*.jsonl"))
        elif src.is_file():
            files.append(src)
        else:
            raise ValueError(f"reuse: {src} is neither a results file nor a folder")
    wanted = {c.cell_id: c for c in todo}
    n = 0
    for f in files:
        if f.resolve() == target.resolve():
            continue
        try:
            header, entries, _ = read_results(f)
        except ValueError:
            continue  # not a results file (a folder may hold other JSON lines)
        if header is None:
            continue
        for e in entries:
            cell = wanted.pop(e["cell_id"], None)
            if cell is not None:
                store.add(cell, e["record"], {**e.get("host", {}), "reused_from": str(f)})
                n += 1
    return n
