"""A stand-in for ``runner.run_cell`` that a spawned worker can import: it records its
process id in its snapshot folder and then blocks for 120 s, like an hours-long SG cell."""

from __future__ import annotations

import os
import time
from pathlib import Path


def run_cell(config: dict, snapshot_dir: str | None, every_s: float) -> None:
    folder = Path(snapshot_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pid.tmp").write_text(str(os.getpid()))
    os.replace(folder / "pid.tmp", folder / "pid")
    time.sleep(120)
