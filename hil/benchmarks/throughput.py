"""Training throughput (samples per second) of the real training command, one process and torchrun.

Each measurement runs ``hil train`` (``python -m hil``, or ``torchrun -m hil`` for several
processes) for a few steps on a config derived from a shipped one, and reads the per-step
clock of rank 0's ``log.csv``: the first step (warm-up, lazy initialisation) and the final
validation are excluded, so the figure is the steady-state rate of the training step.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from hil.common.provenance import REPO_ROOT


@dataclass(frozen=True)
class ThroughputCase:
    config: str  # shipped training config (path relative to the repository)
    n: int  # object size (n x n)
    processes: int  # torchrun --nproc_per_node (1: plain process)
    threads: int  # CPU threads per process
    device: str = "cpu"
    steps: int = 6


def _derived_config(case: ThroughputCase, folder: Path) -> Path:
    system = yaml.safe_load((REPO_ROOT / "configs" / "system.yaml").read_text())
    system["optics"]["n"] = system["data"]["n"] = case.n
    (folder / "system.yaml").write_text(yaml.safe_dump(system))
    cfg = yaml.safe_load((REPO_ROOT / case.config).read_text())
    cfg.update(
        system=str(folder / "system.yaml"), steps=case.steps, val_every=10**6, checkpoint_every=case.steps,
        time_budget_s=None, threads=case.threads, device=case.device, val_images=2,
    )  # fmt: skip
    cfg.setdefault("distillation", {})["teacher"] = ""
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def measure(case: ThroughputCase) -> dict:
    """Run one case; returns its row (samples per second over steps 2..steps, global batch)."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hil-throughput-") as tmp:
        folder = Path(tmp)
        cfg_path = _derived_config(case, folder)
        args = [
            "-m",
            "hil",
            "train",
            str(cfg_path),
            "--out",
            str(folder / "run"),
            "--no-progress",
            "--test-images",
            "2",
        ]
        if case.processes > 1:
            args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={case.processes}", *args]
        env = {**os.environ, "OMP_NUM_THREADS": str(case.threads)}
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"training for {case} failed:\n{done.stderr[-2000:]}")
        with (folder / "run" / "log.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        batch = yaml.safe_load(cfg_path.read_text())["batch_size"] * case.processes
    seconds = float(rows[-1]["elapsed_s"]) - float(rows[0]["elapsed_s"])
    samples = batch * (len(rows) - 1)
    return {
        **case.__dict__, "global_batch": batch, "timed_steps": len(rows) - 1,
        "seconds": seconds, "samples_per_s": samples / seconds,
        "load_avg_1min_before": load_before,  # other work on the machine skews CPU figures
    }  # fmt: skip


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| config | n | processes × threads | device | global batch | samples/s | s/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {Path(r['config']).stem} | {r['n']} | {r['processes']} × {r['threads']} | {r['device']} | "
            f"{r['global_batch']} | {r['samples_per_s']:.1f} | {r['seconds'] / r['timed_steps']:.2f} |"
        )
    return "\n".join(lines) + "\n"
