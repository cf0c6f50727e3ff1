"""Distillation benchmark: teacher, students with and without a teacher (several seeds) in several
regimes, ablations, and the classical single- and L-snapshot solvers on the same test images and
noise draws.

Regimes (each KD vs no-KD over the seeds):

* ``product``: the unrolled student with an 8-bit mask (the student config as it is);
* ``cnn``: a plain U-Net behind the mask (back-projection plus a fixed classical warm start as
  inputs, no learned physics steps);
* ``binary``: the product student on a 1-bit (0/π) SLM, where the straight-through estimator is
  the weak link;
* ``lowdata``: the product student with a tenth of the training images.

Training runs go to ``out_dir`` (reused when their bundle exists) and run ``jobs`` at a time in
worker processes, and so do the evaluations of the trained systems (one CPU thread each; with
``jobs`` > 1 the main process computes the classical rows meanwhile). All timings are taken at the
end, one measurement at a time, on this CPU.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hil.common.metrics import phase_psnr, phase_ssim
from hil.data.datasets import batch, distinct_test_images, sources_of_test_items
from hil.learning.bundle import load_bundle
from hil.learning.coded_system import (
    CodedSystem,
    decode_output,
    photons_per_frame,
    point_antisymmetry,
    without_handover,
)
from hil.learning.decoders import DecoderConfig, parameter_count
from hil.learning.distillation import DistillConfig
from hil.learning.evaluation import ms_per_frame, noisy_cdps, photons_for_snr, reference_mask, twin_check
from hil.learning.train_config import TrainConfig, load_train_config
from hil.solvers import ObjectConstraint, solve, solve_at_checkpoints

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
REGIMES = ("product", "cnn", "binary", "lowdata")


@dataclass(frozen=True)
class DistillationBenchmark:
    """What the benchmark trains and evaluates (``None`` steps: the configs' own budgets)."""

    teacher_config: str = "configs/train_teacher.yaml"
    student_config: str = "configs/train_student.yaml"
    out_dir: str = "runs/distill"
    seeds: tuple[int, ...] = (0, 1, 2)
    teacher_steps: int | None = None
    student_steps: int | None = None
    regime_steps: int | None = None  # cnn / binary / lowdata (None: as the product students)
    ablation_steps: int | None = None  # the loss ablations (None: as the product students)
    regimes: tuple[str, ...] = REGIMES
    ablations: tuple[str, ...] = ("cpm_gram", "cpm_none", "feature_none", "unet_backprojection")
    test_images: int = 64
    unseen_images_per_kind: int = 16
    unseen_sources: tuple[str, ...] = ("cells", "phase_screen", "resolution_target")
    snrs_db: tuple[float | None, ...] = (10.0, 20.0, 30.0, None)
    classical_iterations: tuple[int, ...] = (20, 50, 200, 2000)
    classical_l_iterations: tuple[int, ...] = (20, 50, 200)
    classical_l_budgets: tuple[str, ...] = ("equal_total", "per_snapshot")
    cnn_decoder: DecoderConfig = DecoderConfig(kind="unet", channels=16, warm_iterations=20)
    binary_bitdepth: int = 1
    lowdata_fraction: float = 0.1
    noise_seed: int = 1234
    jobs: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.regimes) - set(REGIMES)
        if unknown or "product" not in self.regimes:
            raise ValueError(f"regimes must include 'product' and come from {REGIMES}, got {self.regimes}")


def regime_name(regime: str, kd: bool) -> str:
    """Run/method name of a regime's students: ``student_kd`` for the product, ``cnn_nokd`` ..."""
    return f"{'student' if regime == 'product' else regime}_{'kd' if kd else 'nokd'}"


def regime_config(cfg: DistillationBenchmark, base: TrainConfig, regime: str) -> TrainConfig:
    """The student config of ``regime`` derived from the product student ``base``."""
    if regime == "product":
        return base
    steps = cfg.regime_steps or base.steps
    if regime == "cnn":
        return dataclasses.replace(base, steps=steps, decoder=cfg.cnn_decoder)
    if regime == "binary":
        return dataclasses.replace(base, steps=steps, slm_bitdepth=cfg.binary_bitdepth)
    if regime == "lowdata":
        return dataclasses.replace(base, steps=steps, train_subset=cfg.lowdata_fraction)
    raise ValueError(f"unknown regime {regime!r}; choose from {REGIMES}")


KD_ABLATIONS = ("cpm_gram", "cpm_none", "feature_none")


def ablation_distillation(kd: DistillConfig, name: str) -> DistillConfig:
    """The distillation settings of the loss ablation ``name``, derived from the KD student's ``kd``.

    Each forces its CPM mode (never ``auto``, which may resolve to no CPM term and leave the ablation
    nothing to ablate): ``cpm_gram`` (the Gram CPM loss), ``cpm_none`` (feature-only) and
    ``feature_none`` (CPM-only: the ``informative`` pointwise CPM loss, feature weight 0).
    """
    if name not in KD_ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; choose from {[*KD_ABLATIONS, 'unet_backprojection']}")
    kept = "feature_weight" if name == "cpm_none" else "cpm_weight"
    if getattr(kd, kept) <= 0:
        raise ValueError(f"ablation {name!r} needs distillation.{kept} > 0, got {getattr(kd, kept)}")
    if name == "cpm_gram":
        return dataclasses.replace(kd, cpm_mode="gram")
    if name == "cpm_none":
        return dataclasses.replace(kd, cpm_mode="none")
    return dataclasses.replace(kd, cpm_mode="informative", feature_weight=0.0)


def _student_variants(cfg: DistillationBenchmark) -> dict[str, tuple[str, TrainConfig]]:
    """Run name -> (regime, config) of every student run (teacher path filled in)."""
    teacher_bundle = str(Path(cfg.out_dir) / "teacher" / "bundle")
    # equal step counts for every student (the config's wall-clock cap would give the slower KD runs fewer)
    base = dataclasses.replace(load_train_config(cfg.student_config, steps=cfg.student_steps), time_budget_s=None)
    kd = dataclasses.replace(base.distillation, teacher=teacher_bundle)
    nokd = dataclasses.replace(base.distillation, teacher="")
    runs = {}
    for regime in cfg.regimes:
        regime_cfg = regime_config(cfg, base, regime)
        for seed in cfg.seeds:
            for with_kd, distill in ((True, kd), (False, nokd)):
                runs[f"{regime_name(regime, with_kd)}_s{seed}"] = (
                    regime,
                    dataclasses.replace(regime_cfg, seed=seed, distillation=distill),
                )
    s0 = cfg.seeds[0]
    for name in cfg.ablations:
        if name == "unet_backprojection":  # the plain back-projection U-Net (no warm start), alone
            run_cfg = dataclasses.replace(
                regime_config(cfg, base, "cnn"), seed=s0, distillation=nokd,
                decoder=dataclasses.replace(cfg.cnn_decoder, warm_iterations=0),
            )  # fmt: skip
        else:
            run_cfg = dataclasses.replace(base, seed=s0, distillation=ablation_distillation(kd, name))
        runs[f"ablation_{name}"] = ("product", dataclasses.replace(run_cfg, steps=cfg.ablation_steps or run_cfg.steps))
    return runs


def teacher_config(cfg: DistillationBenchmark) -> TrainConfig:
    """The teacher's config at its step budget, without its wall-clock cap (which would give a teacher
    trained beside other jobs fewer steps than one trained alone)."""
    return dataclasses.replace(load_train_config(cfg.teacher_config, steps=cfg.teacher_steps), time_budget_s=None)


def _train_job(cfg: TrainConfig, out: str) -> str:
    from hil.learning.train_bundle import train_to_bundle

    torch.set_num_threads(max(cfg.threads, 1))
    log = lambda msg: print(f"[{out}] {msg}", flush=True)  # noqa: E731
    _, path = train_to_bundle(cfg, Path(out), progress=False, test_images=8, log=log)
    return str(path)


def _bundle_ready(out: Path) -> bool:
    return (out / "bundle" / "bundle.json").is_file()


def train_all(cfg: DistillationBenchmark, while_training=None, log=print) -> dict[str, str]:
    """Train (or reuse) the teacher and every student; returns run name -> bundle path.

    ``while_training()`` runs in this process while the workers train (not at all when every run is reused).
    """
    root = Path(cfg.out_dir)
    teacher_cfg = teacher_config(cfg)
    students = _student_variants(cfg)
    paths: dict[str, str] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=ctx) as pool:
        futures: dict[str, Future] = {}

        def submit(name: str, run_cfg: TrainConfig) -> None:
            out = root / name
            if _bundle_ready(out):
                log(f"reusing {out / 'bundle'}")
                paths[name] = str(out / "bundle")
            else:
                log(f"training {name}")
                futures[name] = pool.submit(_train_job, run_cfg, str(out))

        submit("teacher", teacher_cfg)
        for name, (_, run_cfg) in students.items():
            if not run_cfg.distillation.teacher:
                submit(name, run_cfg)
        if "teacher" in futures:
            paths["teacher"] = futures.pop("teacher").result()
        for name, (_, run_cfg) in students.items():
            if run_cfg.distillation.teacher:
                submit(name, run_cfg)
        if while_training is not None and futures:
            while_training()
        for name, future in futures.items():
            paths[name] = future.result()
    return paths


def _ci95(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    return T95.get(len(values) - 1, 1.96) * float(np.std(values, ddof=1)) / math.sqrt(len(values))


@dataclass
class EvalSet:
    """Test objects ``(K, n, n)``, the source (kind) of each, and photons per pixel for each SNR."""

    name: str
    phase_rad: torch.Tensor
    photons: dict[float | None, float | None]
    kinds: tuple[str, ...]


def _kind_means(psnr: torch.Tensor, ts: EvalSet) -> dict[str, float]:
    """Mean PSNR per object kind of the test set."""
    return {
        k: float(psnr[[i for i, s in enumerate(ts.kinds) if s == k]].double().mean()) for k in dict.fromkeys(ts.kinds)
    }


def _row(method: str, test_set: str, snr, photons, budget: str, psnr: torch.Tensor, ssim: float, **extra) -> dict:
    values = psnr.double()
    return {
        "method": method,
        "test_set": test_set,
        "iterations": None,
        "snr_db": snr,
        "photons_per_pixel": photons,
        "budget": budget,
        "psnr_db": float(values.mean()),
        "psnr_ci95_db": 1.96 * float(values.std()) / math.sqrt(values.numel()) if values.numel() > 1 else 0.0,
        "ssim": ssim,
        "ms_per_frame": None,
        "ms_per_frame_batch64": None,
        **extra,
    }


def _frame_photons(photons: float | None, n_masks: int, budget: str) -> float | None:
    """Photons per pixel of each frame of an ``n_masks`` system at a single-snapshot budget ``photons``."""
    return None if photons is None else float(photons_per_frame(torch.tensor(photons), n_masks, budget))


def classical_rows(cfg: DistillationBenchmark, sets: list[EvalSet], geometry, slm, camera, n_masks: int) -> list[dict]:
    """RAAR with unit-modulus and [0, π] prior: one SLM-shown random mask; ``n_masks`` random
    continuous masks at equal total photons and at the full budget per snapshot; the plain
    back-projection (what a network behind the mask starts from). PSNR at each checkpoint."""
    rows = []
    ref_op = geometry.operator(reference_mask(geometry, slm))
    g = torch.Generator().manual_seed(cfg.noise_seed)
    l_op = geometry.operator(torch.rand((n_masks, geometry.n, geometry.n), generator=g) * 2 * math.pi)
    constraint = ObjectConstraint()
    for ts in sets:
        for snr in cfg.snrs_db:
            photons = ts.photons[snr]
            y = noisy_cdps(ref_op, ts.phase_rad, camera, photons, cfg.noise_seed)
            phase_hat = constraint.clip_phase(torch.angle(ref_op.backproject(y)))
            psnr = phase_psnr(phase_hat, ts.phase_rad)
            ssim = float(phase_ssim(phase_hat, ts.phase_rad).mean())
            rows.append(_row("backprojection", ts.name, snr, photons, "equal_total", psnr, ssim, masks=1,
                             kinds=_kind_means(psnr, ts)))  # fmt: skip
            runs = [("classical_1", ref_op, "equal_total", cfg.classical_iterations)]
            runs += [("classical_L", l_op, b, cfg.classical_l_iterations) for b in cfg.classical_l_budgets]
            for method, op, budget, checkpoints in runs:
                per_frame = _frame_photons(photons, op.n_masks, budget)
                y = noisy_cdps(op, ts.phase_rad, camera, per_frame, cfg.noise_seed)
                marks = solve_at_checkpoints("raar", op, y, checkpoints, constraint, seed=cfg.noise_seed)
                for it, (_, x) in marks.items():
                    phase_hat = torch.angle(x)
                    psnr = phase_psnr(phase_hat, ts.phase_rad)
                    ssim = float(phase_ssim(phase_hat, ts.phase_rad).mean())
                    rows.append(_row(method, ts.name, snr, photons, budget, psnr, ssim, iterations=it,
                                     masks=op.n_masks, kinds=_kind_means(psnr, ts)))  # fmt: skip
    return rows


def _raar_ms_per_iteration(op, phase_rad: torch.Tensor, camera, photons: float, batch_size: int, seed: int) -> float:
    reps = math.ceil(batch_size / phase_rad.shape[0])
    phase = phase_rad.repeat(reps, 1, 1)[:batch_size]
    y = noisy_cdps(op, phase, camera, photons, seed)
    solve("raar", op, y, iterations=2)
    start = time.perf_counter()
    solve("raar", op, y, iterations=20)
    return 1e3 * (time.perf_counter() - start) / 20 / batch_size


def learned_rows(
    name: str, method: str, system: CodedSystem, budgets: tuple[str, ...], sets: list[EvalSet], cfg, camera, **extra
) -> tuple[list[dict], dict]:
    """Rows of one trained system, plus its per-image PSNRs keyed by (test set, snr, budget).

    A multi-mask system at ``per_snapshot`` gets the full single-snapshot photons in every frame,
    at ``equal_total`` its frames share them."""
    rows, per_image = [], {}
    for ts in sets:
        for snr in cfg.snrs_db:
            photons = ts.photons[snr]
            for budget in budgets:
                per_frame = _frame_photons(photons, system.n_masks, budget)
                op = system.operator()
                y = noisy_cdps(op, ts.phase_rad, camera, per_frame, cfg.noise_seed)
                out = decode_output(system, op, y, per_frame)
                phase_hat = out.phase_rad
                psnr = phase_psnr(phase_hat, ts.phase_rad)
                ssim = float(phase_ssim(phase_hat, ts.phase_rad).mean())
                per_image[(ts.name, snr, budget)] = psnr
                rows.append(_row(method, ts.name, snr, photons, budget, psnr, ssim, run=name,
                                 kinds=_kind_means(psnr, ts), **extra,
                                 raar_iterations_per_frame=float(out.raar_iterations.double().mean())))  # fmt: skip
    return rows, per_image


def _evaluate_job(name: str, path: str, regime: str | None, sets: list[EvalSet], cfg, camera) -> tuple[list, dict]:
    """:func:`learned_rows` of the bundle at ``path`` (the teacher at both budgets, a student at ``equal_total``)."""
    system = load_bundle(path).system
    if name == "teacher":
        return learned_rows(name, name, system, ("equal_total", "per_snapshot"), sets, cfg, camera)
    return learned_rows(
        name, name.removeprefix("ablation_"), system, ("equal_total",), sets, cfg, camera, regime=regime
    )


def evaluate_all(
    cfg, paths: dict[str, str], regimes: dict[str, str], sets: list[EvalSet], camera, meanwhile=None
) -> dict[str, tuple[list[dict], dict]]:
    """Rows and per-image PSNRs of every trained system, in ``paths``' order; ``cfg.jobs`` worker processes
    (``meanwhile()`` runs in this process while they work) or, with one job, here."""
    args = {name: (name, path, regimes.get(name), sets, cfg, camera) for name, path in paths.items()}
    if cfg.jobs == 1:
        if meanwhile is not None:
            meanwhile()
        return {name: _evaluate_job(*a) for name, a in args.items()}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(cfg.jobs, mp_context=ctx, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {name: pool.submit(_evaluate_job, *a) for name, a in args.items()}
        if meanwhile is not None:
            meanwhile()
        return {name: future.result() for name, future in futures.items()}


def _aggregate(rows: list[dict], per_image: list[dict], method: str, sets: list[EvalSet], regime: str) -> list[dict]:
    """Merge per-seed rows of ``method``: PSNR pooled over seeds and images, per-seed means listed."""
    out = []
    by_name = {ts.name: ts for ts in sets}
    keys = sorted({(r["test_set"], r["snr_db"] if r["snr_db"] is not None else math.inf, r["budget"]) for r in rows})
    for test_set, snr_key, budget in keys:
        snr = None if snr_key == math.inf else snr_key
        group = [r for r in rows if (r["test_set"], r["snr_db"], r["budget"]) == (test_set, snr, budget)]
        pooled = torch.cat([p[(test_set, snr, budget)] for p in per_image])
        mean_per_image = torch.stack([p[(test_set, snr, budget)] for p in per_image]).mean(dim=0)
        row = _row(method, test_set, snr, group[0]["photons_per_pixel"], budget, pooled,
                   float(np.mean([r["ssim"] for r in group])), regime=regime,
                   kinds=_kind_means(mean_per_image, by_name[test_set]))  # fmt: skip
        row["seed_psnr_db"] = [r["psnr_db"] for r in group]
        row["raar_iterations_per_frame"] = float(np.mean([r["raar_iterations_per_frame"] for r in group]))
        row["runs"] = [r["run"] for r in group]
        out.append(row)
    return out


def _pick(rows: list[dict], method: str, test_set: str, snr, budget: str | None = "equal_total", **match) -> list[dict]:
    return [
        r for r in rows
        if r["method"] == method and r["test_set"] == test_set and r["snr_db"] == snr
        and (budget is None or r["budget"] == budget) and all(r.get(k) == v for k, v in match.items())
    ]  # fmt: skip


def _targets(rows: list[dict], sets: list[EvalSet], snrs) -> dict[str, Any]:
    """The issue's targets against the best classical results on the same data."""
    wanted = {("in_distribution", 10.0): 12.0, ("in_distribution", 20.0): 4.0, ("in_distribution", 30.0): -0.5,
              ("unseen_kind", 10.0): 10.0, ("unseen_kind", 20.0): -0.5, ("unseen_kind", 30.0): -0.5}  # fmt: skip
    out: dict[str, Any] = {"margin_vs_best_classical_1": [], "speed": [], "kd_gain": [], "teacher_vs_classical_L": []}
    kinds = {ts.name: list(dict.fromkeys(ts.kinds)) for ts in sets}
    for (test_set, snr), need in wanted.items():
        student = _pick(rows, "student_kd", test_set, snr, regime="product")[0]
        classical = sorted(_pick(rows, "classical_1", test_set, snr), key=lambda r: r["iterations"])
        best = max(classical, key=lambda r: r["psnr_db"])
        margin = student["psnr_db"] - best["psnr_db"]
        per_kind = {
            k: {
                "student_kd_psnr_db": student["kinds"][k],
                "best_classical_1_psnr_db": max(r["kinds"][k] for r in classical),
                "margin_db": student["kinds"][k] - max(r["kinds"][k] for r in classical),
            }
            for k in kinds[test_set]
        }
        out["margin_vs_best_classical_1"].append(
            {
                "test_set": test_set, "snr_db": snr, "student_kd_psnr_db": student["psnr_db"],
                "best_classical_1_psnr_db": best["psnr_db"], "best_iterations": best["iterations"],
                "margin_db": margin, "target_db": need,
                "met": margin >= need and all(v["margin_db"] >= min(need, -0.5) for v in per_kind.values()),
                "kinds": per_kind,
            }
        )  # fmt: skip
        reach = next((r for r in classical if r["psnr_db"] >= student["psnr_db"]), None)
        classical_ms = None if reach is None else reach["ms_per_frame"]
        ratio = None if classical_ms is None else student["ms_per_frame"] / classical_ms
        out["speed"].append(
            {
                "test_set": test_set, "snr_db": snr, "student_ms_per_frame": student["ms_per_frame"],
                "classical_iterations_to_match": None if reach is None else reach["iterations"],
                "classical_ms_per_frame_to_match": classical_ms, "ratio": ratio,
                "note": "classical never reaches the student's PSNR" if reach is None else "",
            }
        )  # fmt: skip
    for ts in sets:
        for snr in snrs:
            teacher = _pick(rows, "teacher", ts.name, snr, "per_snapshot")[0]
            best_l = max(_pick(rows, "classical_L", ts.name, snr, "per_snapshot"), key=lambda r: r["psnr_db"])
            out["teacher_vs_classical_L"].append(
                {
                    "test_set": ts.name, "snr_db": snr, "teacher_per_snapshot_psnr_db": teacher["psnr_db"],
                    "best_classical_L_per_snapshot_psnr_db": best_l["psnr_db"], "best_iterations": best_l["iterations"],
                    "margin_db": teacher["psnr_db"] - best_l["psnr_db"], "met": teacher["psnr_db"] > best_l["psnr_db"],
                }
            )  # fmt: skip
    out["kd_gain"] = [
        {
            "regime": r["regime"], "test_set": r["test_set"], "snr_db": r["snr_db"], "gain_db": r["psnr_db"],
            "ci95_db": r["psnr_ci95_db"], "met": r["psnr_db"] >= 1.5 and r["psnr_db"] - r["psnr_ci95_db"] > 0,
        }
        for r in rows if r["method"] == "kd_gain"
    ]  # fmt: skip
    out["kd_gain_met_in_cnn_or_binary"] = any(g["met"] for g in out["kd_gain"] if g["regime"] in ("cnn", "binary"))
    cnn = [r for r in rows if r["method"] == "cnn_nokd" and r["test_set"] == "in_distribution" and r["snr_db"] == 20.0]
    if cnn:
        bp = _pick(rows, "backprojection", "in_distribution", 20.0)[0]
        out["cnn_baseline_20db"] = {
            "cnn_nokd_psnr_db": cnn[0]["psnr_db"], "backprojection_psnr_db": bp["psnr_db"],
            "met": cnn[0]["psnr_db"] >= 18.0 and cnn[0]["psnr_db"] > bp["psnr_db"] + 3.0,
        }  # fmt: skip
    return out


def _grad_norms(cfg: DistillationBenchmark, png: Path) -> dict[str, Any]:
    """Plot the mask-gradient norm per step of the students with and without a teacher, one panel
    per regime; summary numbers (median over the first and last quarter of training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cfg.regimes), figsize=(4 * len(cfg.regimes), 3.6), squeeze=False)
    summary = {}
    for ax, regime in zip(axes[0], cfg.regimes, strict=True):
        for with_kd, colour in ((False, "tab:red"), (True, "tab:blue")):
            kind = regime_name(regime, with_kd)
            for seed in cfg.seeds:
                log = Path(cfg.out_dir) / f"{kind}_s{seed}" / "log.csv"
                with log.open() as fh:
                    rows = list(csv.DictReader(fh))
                steps = np.array([int(r["step"]) for r in rows])
                norms = np.array([float(r["mask_grad_norm"]) for r in rows])
                finite = np.isfinite(norms)  # skipped (non-finite) updates are left out
                steps, norms = steps[finite], norms[finite]
                window = min(20, len(norms))
                smooth = np.convolve(norms, np.ones(window) / window, mode="valid")
                label = ("with teacher (KD)" if with_kd else "alone (no KD)") if seed == cfg.seeds[0] else None
                ax.semilogy(steps[window - 1 :], smooth, color=colour, alpha=0.8, label=label)
                quarter = max(len(norms) // 4, 1)
                summary[f"{kind}_s{seed}"] = {
                    "regime": regime,
                    "median_first_quarter": float(np.median(norms[:quarter])),
                    "median_last_quarter": float(np.median(norms[-quarter:])),
                    "non_finite_steps": int((~finite).sum()),
                }
        ax.set_title(regime)
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("‖∂loss/∂mask‖ (20-step mean)")
    axes[0][0].legend()
    fig.suptitle("Gradient norm reaching the student's mask parameters")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return summary


def test_sets(cfg: DistillationBenchmark, system_cfg, train_sources: tuple[str, ...], ref_op) -> list[EvalSet]:
    """In-distribution (training sources, test split) and unseen-kind test sets with photons per SNR."""
    sets = []
    for name, sources, count in (
        ("in_distribution", train_sources, cfg.test_images),
        ("unseen_kind", cfg.unseen_sources, cfg.unseen_images_per_kind * len(cfg.unseen_sources)),
    ):
        spec = dataclasses.replace(system_cfg.data, sources=sources)
        phase, _ = batch(spec, "test", count, cfg.noise_seed)
        kinds = sources_of_test_items(spec, count)
        sets.append(EvalSet(name, phase, {snr: photons_for_snr(ref_op, phase, snr) for snr in cfg.snrs_db}, kinds))
    return sets


def run(cfg: DistillationBenchmark, png: Path, log=print) -> dict[str, Any]:
    """Train/load everything, evaluate, and return the benchmark document (rows, targets, extras).

    The main process uses ``cfg.threads`` CPU threads (1: on a shared CPU, extra threads only wait on each other)."""
    torch.set_num_threads(cfg.threads)
    teacher_cfg = teacher_config(cfg)
    system_cfg = teacher_cfg.system_config()
    geometry, camera = system_cfg.geometry(), system_cfg.camera
    ref_op = geometry.operator(reference_mask(geometry, system_cfg.slm))
    sets = test_sets(cfg, system_cfg, teacher_cfg.sources, ref_op)
    in_spec = dataclasses.replace(system_cfg.data, sources=teacher_cfg.sources)
    rows: list[dict] = []

    classical_done = False

    def classical() -> None:
        nonlocal classical_done
        log("classical solvers")
        rows.extend(classical_rows(cfg, sets, geometry, system_cfg.slm, camera, teacher_cfg.masks))
        classical_done = True

    start = time.perf_counter()
    if cfg.jobs == 1:  # one heavy job at a time
        classical()
    paths = train_all(cfg, while_training=classical if cfg.jobs > 1 else None, log=log)
    train_s = time.perf_counter() - start
    bundles = {name: load_bundle(path) for name, path in paths.items()}
    regimes = {name: regime for name, (regime, _) in _student_variants(cfg).items()}
    log("evaluating learned systems")
    evaluated = evaluate_all(cfg, paths, regimes, sets, camera, meanwhile=None if classical_done else classical)
    per_image: dict[str, dict] = {}
    seeded: dict[str, list[dict]] = {regime_name(r, kd): [] for r in cfg.regimes for kd in (True, False)}
    for name, (r, per_image[name]) in evaluated.items():
        kind = name.rsplit("_s", 1)[0]
        if kind in seeded:
            seeded[kind].extend(r)
        else:
            rows.extend(r)
    for regime in cfg.regimes:
        for with_kd in (True, False):
            kind = regime_name(regime, with_kd)
            names = [f"{kind}_s{s}" for s in cfg.seeds]
            rows.extend(_aggregate(seeded[kind], [per_image[n] for n in names], kind, sets, regime))
        for ts in sets:
            for snr in cfg.snrs_db:
                key = (ts.name, snr, "equal_total")
                diffs = [
                    float(per_image[f"{regime_name(regime, True)}_s{s}"][key].mean()
                          - per_image[f"{regime_name(regime, False)}_s{s}"][key].mean())
                    for s in cfg.seeds
                ]  # fmt: skip
                gain = _row("kd_gain", ts.name, snr, ts.photons[snr], "equal_total", torch.zeros(1), float("nan"))
                gain.update(psnr_db=float(np.mean(diffs)), psnr_ci95_db=_ci95(diffs), ssim=None, seed_diffs_db=diffs,
                            regime=regime)  # fmt: skip
                rows.append(gain)

    log("timing (one measurement at a time)")
    phase20 = sets[0].phase_rad
    photons20 = sets[0].photons[20.0]
    model_ms = {}
    for name, b in bundles.items():  # the decoder alone: the handover's RAAR iterations are added per row below
        op = b.system.operator()
        per_frame = photons20 / b.system.n_masks if name == "teacher" else photons20
        y = noisy_cdps(op, phase20, camera, per_frame, cfg.noise_seed)
        with without_handover(b.system):
            model_ms[name] = (
                ms_per_frame(b.system, op, y[:1], per_frame, 1), ms_per_frame(b.system, op, y, per_frame, 64)
            )  # fmt: skip
    g = torch.Generator().manual_seed(cfg.noise_seed)
    l_op = geometry.operator(torch.rand((teacher_cfg.masks, geometry.n, geometry.n), generator=g) * 2 * math.pi)
    raar_ms = {
        "classical_1": tuple(_raar_ms_per_iteration(ref_op, phase20, camera, photons20, b, 0) for b in (1, 64)),
        "classical_L": tuple(
            _raar_ms_per_iteration(l_op, phase20, camera, photons20 / teacher_cfg.masks, b, 0) for b in (1, 64)
        ),
    }

    for r in rows:  # a learned row: its decoder, plus the RAAR iterations its frames got on average
        if r["method"] in raar_ms:
            r["ms_per_frame"] = raar_ms[r["method"]][0] * r["iterations"]
            r["ms_per_frame_batch64"] = raar_ms[r["method"]][1] * r["iterations"]
        elif "runs" in r or r.get("run") in model_ms:
            runs = r.get("runs") or [r["run"]]
            per_it = raar_ms["classical_1" if bundles[runs[0]].system.n_masks == 1 else "classical_L"]
            for i, key in enumerate(("ms_per_frame", "ms_per_frame_batch64")):
                r[key] = float(np.mean([model_ms[n][i] for n in runs])) + per_it[i] * r["raar_iterations_per_frame"]

    models = {}
    for name, b in bundles.items():
        entry = {
            "regime": regimes.get(name),
            "parameters_decoder": parameter_count(b.system.decoder),
            "masks": b.system.n_masks,
            "mask_parameters": b.system.mask_rad.numel(),
            "slm_bitdepth": None if b.system.slm is None else b.system.slm.spec.bitdepth,
            "ms_per_frame": model_ms[name][0],
            "ms_per_frame_batch64": model_ms[name][1],
            "handover": {
                "photons_per_frame": b.system.decoder.cfg.handover_photons,
                "iterations": b.system.decoder.cfg.handover_iterations,
                "rescue_iterations": b.system.decoder.cfg.rescue_iterations,
            },
            "training": b.manifest.get("training"),
            "mask_point_antisymmetry": [float(v) for v in point_antisymmetry(torch.angle(b.system.operator().masks))],
        }
        if b.system.n_masks == 1 and geometry.macro_pixel == 1:
            entry["twin"] = twin_check(b.system, phase20, camera, photons20, cfg.noise_seed)
        models[name] = entry
    return {
        "config": {**dataclasses.asdict(cfg), "teacher_train_config": dataclasses.asdict(teacher_cfg)},
        "test_images": {ts.name: ts.phase_rad.shape[0] for ts in sets},
        "distinct_source_images": {
            "in_distribution": distinct_test_images(in_spec, cfg.test_images),
            "unseen_kind": {k: cfg.unseen_images_per_kind for k in cfg.unseen_sources},
        },
        "training_wall_s": train_s,
        "rows": rows,
        "targets": _targets(rows, sets, cfg.snrs_db),
        "models": models,
        "raar_ms_per_iteration": {k: {"batch1": v[0], "batch64_per_frame": v[1]} for k, v in raar_ms.items()},
        "grad_norm": _grad_norms(cfg, png),
    }


def markdown_table(doc: dict[str, Any], command: str) -> str:
    """Phase PSNR (dB) per method, regime, test set and SNR, with per-frame decode time, as Markdown;
    then the unseen set per kind."""
    snrs = doc["config"]["snrs_db"]
    head = " | ".join(["∞ dB" if s is None else f"{s:.0f} dB" for s in snrs])
    counts = ", ".join(f"{k}: {v}" for k, v in doc["test_images"].items())
    lines = [
        f"Produced by `{command}` (test images {counts}; phase PSNR in dB, mean ± 95 % half-width over images "
        "(KD gain: over seeds); ms per frame on this CPU, batch 1 / batch 64, shared with other jobs).",
        "",
        f"| method | regime | test set | budget | iters | {head} | ms/frame | ms/frame @64 |",
        "|---|---|---|---|---|" + "---|" * len(snrs) + "---|---|",
    ]

    def key(r: dict) -> tuple:
        return (r["method"], r.get("regime") or "", r["test_set"], r["budget"], r["iterations"])

    keys = list(dict.fromkeys(key(r) for r in doc["rows"]))
    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    for k in keys:
        cells, ms, ms64 = [], None, None
        for snr in snrs:
            match = [r for r in doc["rows"] if key(r) == k and r["snr_db"] == snr]
            if match:
                r = match[0]
                cells.append(f"{r['psnr_db']:.2f} ± {r['psnr_ci95_db']:.2f}")
                ms, ms64 = r["ms_per_frame"], r["ms_per_frame_batch64"]
            else:
                cells.append("–")
        method, regime, test_set, budget, iterations = k
        lines.append(
            f"| {method} | {regime} | {test_set} | {budget} | {iterations or ''} | {' | '.join(cells)} "
            f"| {fmt(ms)} | {fmt(ms64)} |"
        )
    kinds = list(doc["distinct_source_images"]["unseen_kind"])
    lines += ["", "Unseen kinds, phase PSNR (dB) per kind at 10 / 20 / 30 dB / ∞:", "",
              "| method | regime | budget | iters | " + " | ".join(kinds) + " |",
              "|---|---|---|---|" + "---|" * len(kinds)]  # fmt: skip
    for k in keys:
        if k[2] != "unseen_kind" or k[0] == "kd_gain":
            continue
        cells = []
        for kind in kinds:
            values = []
            for snr in snrs:
                match = [r for r in doc["rows"] if key(r) == k and r["snr_db"] == snr and r.get("kinds")]
                values.append(f"{match[0]['kinds'][kind]:.1f}" if match else "–")
            cells.append(" / ".join(values))
        lines.append(f"| {k[0]} | {k[1]} | {k[3]} | {k[4] or ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
