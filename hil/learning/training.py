"""Training of teachers and students (with or without a teacher): config, step, loop, checkpoints.

Written to run later under ``torchrun``/DDP unchanged in spirit:

* :func:`loss_terms` is a pure function of (model, batch): the batch carries its own noise seed;
* batches are a pure function of (seed, step, rank, world), so resuming is exact and ranks shard
  one global batch (see :mod:`hil.learning.distributed`): N processes step like one with N times the batch;
* the device comes from the config (``device``); only :class:`RunWriter` touches the disk, and
  it is a no-op on every rank but 0.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from hil.common.metrics import phase_psnr
from hil.data.datasets import DataSpec, PhaseObjectDataset
from hil.learning.bundle import load_bundle
from hil.learning.coded_system import Budget, CodedSystem, photons_per_frame, without_handover
from hil.learning.distillation import (
    DistillConfig,
    FeatureAdapters,
    build_adapters,
    choose_cpm_mode,
    cpm_loss,
    leave_one_out_importance,
    reconstruction_loss,
)
from hil.learning.distributed import DistContext, any_rank, setup, shard, wrap
from hil.learning.train_config import TrainConfig
from hil.physics.camera import CameraSpec
from hil.physics.system import SystemConfig

LOG_FIELDS = (
    "step", "elapsed_s", "lr", "total", "recon", "cpm", "feature", "mask_grad_norm", "skipped", "val_psnr_db"
)  # fmt: skip


@dataclass
class Batch:
    """Objects, the single-snapshot photon budget per image (B,), and the seed of the noise draw."""

    phase_rad: torch.Tensor
    amplitude: torch.Tensor | None
    photons_per_pixel: torch.Tensor
    noise_seed: int
    # this process's rows of the global batch (photons and noise are drawn for the global batch)
    share: slice = field(default_factory=lambda: slice(None))
    global_size: int = 0  # images in the global batch (0: this batch is the whole batch)

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device`` (one explicit copy per step; nothing else crosses to the GPU)."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return dataclasses.replace(
            self, phase_rad=move(self.phase_rad), amplitude=move(self.amplitude),
            photons_per_pixel=move(self.photons_per_pixel),
        )  # fmt: skip


def make_batch(
    spec: DataSpec, cfg: TrainConfig, step: int, ctx: DistContext | None = None, split: str = "train"
) -> Batch:
    """This process's share of global batch ``step``: a pure function of (seed, step, rank, world).

    Photon levels and the noise seed are drawn for the whole global batch, so every image sees
    the same noise whatever the number of processes.
    """
    ctx = ctx or DistContext()
    global_items = range(step * cfg.batch_size * ctx.world, (step + 1) * cfg.batch_size * ctx.world)
    mine = shard(global_items, ctx)
    ds = PhaseObjectDataset(spec, split, global_items.stop, cfg.seed)
    items = [ds[i] for i in mine]
    phase = torch.stack([p for p, _ in items])
    amplitude = torch.stack([a for _, a in items]) if spec.amplitude_contrast > 0 else None
    g = torch.Generator().manual_seed(hash((cfg.seed, step)) & 0x7FFFFFFF)
    lo, hi = math.log(cfg.noise.photons_min), math.log(cfg.noise.photons_max)
    share = slice(mine.start - global_items.start, mine.stop - global_items.start)
    photons = torch.exp(lo + (hi - lo) * torch.rand(len(global_items), generator=g))[share]
    noise_seed = int(torch.randint(2**31 - 1, (1,), generator=g))
    return Batch(phase, amplitude, photons, noise_seed, share=share, global_size=len(global_items))


class TrainModel(nn.Module):
    """What one run optimises: the coded system, plus (for distillation) a frozen teacher and adapters."""

    def __init__(
        self,
        system: CodedSystem,
        camera: CameraSpec,
        budget: Budget,
        kd: DistillConfig,
        teacher: CodedSystem | None = None,
        teacher_budget: Budget = "per_snapshot",
    ) -> None:
        super().__init__()
        self.system, self.camera, self.budget, self.kd = system, camera, budget, kd
        self.teacher_budget = teacher_budget
        self.adapters: FeatureAdapters | None = None
        self.teacher_index = 0
        self.teacher_importance_db: list[float] = []
        self.cpm_mode = kd.cpm_mode  # 'auto' is resolved from the teacher's masks in attach_adapters
        self.teacher_mask_stats: dict[str, float] = {}
        if teacher is not None:
            # the teacher gives masks and features only; its classical handover and rescue (RAAR after the
            # `est` tap, no gradient) would cost most of a KD step for nothing
            teacher = copy.deepcopy(teacher)
            teacher.decoder.cfg = dataclasses.replace(teacher.decoder.cfg, handover_iterations=0, rescue_iterations=0)
            self.teacher = teacher.requires_grad_(False).eval()
        else:
            self.teacher = None

    def attach_adapters(self, probe: Batch) -> None:
        """Build the feature adapters, pick the most informative teacher mask on ``probe`` and resolve
        the ``auto`` CPM mode from the teacher's masks."""
        with torch.no_grad():
            _, out = _student_pass(self, probe)
            t_op, t_y, t_photons, t_out = _teacher_pass(self, probe)
            importance = leave_one_out_importance(self.teacher, t_y, t_photons, probe.phase_rad)
        self.adapters = build_adapters(out.features, t_out.features).to(probe.phase_rad.device)
        self.teacher_importance_db = [float(v) for v in importance]
        self.teacher_index = int(torch.argmax(importance))
        chosen, self.teacher_mask_stats = choose_cpm_mode(t_op.masks.detach().cpu(), importance.cpu())
        if self.kd.cpm_mode == "auto":
            self.cpm_mode = chosen

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """:func:`loss_terms`; a forward pass, so DistributedDataParallel can wrap the model."""
        return loss_terms(self, batch)


def _measure(system: CodedSystem, op, batch: Batch, camera: CameraSpec, budget: Budget, offset: int):
    device = batch.phase_rad.device
    generator = torch.Generator(device=device).manual_seed(batch.noise_seed + offset)
    photons = photons_per_frame(batch.photons_per_pixel, system.n_masks, budget)
    rows = batch.global_size or batch.phase_rad.shape[0]
    shape = (rows, system.n_masks, *op.geometry.detector_shape)
    noise = torch.randn(shape, generator=generator, device=device, dtype=op.masks.real.dtype)[batch.share]
    return system.measure(op, batch.phase_rad, batch.amplitude, photons, camera, noise=noise), photons


def _student_pass(model: TrainModel, batch: Batch):
    """The trained system on ``batch``: its operator and decoder output."""
    op = model.system.operator()
    y, photons = _measure(model.system, op, batch, model.camera, model.budget, 0)
    return op, model.system(op, y, photons)


def _teacher_pass(model: TrainModel, batch: Batch):
    """The teacher on ``batch`` (its own noise draw): operator, CDPs, photons per frame, output."""
    t_op = model.teacher.operator()
    t_y, t_photons = _measure(model.teacher, t_op, batch, model.camera, model.teacher_budget, 1)
    return t_op, t_y, t_photons, model.teacher(t_op, t_y, t_photons)


def loss_terms(model: TrainModel, batch: Batch) -> dict[str, torch.Tensor]:
    """Loss terms of one batch (``total`` is what is minimised): a pure function of (model, batch)."""
    kd = model.kd
    op, out = _student_pass(model, batch)
    terms = {"recon": reconstruction_loss(out.x, batch.phase_rad, batch.amplitude)}
    total = kd.recon_weight * terms["recon"]
    if model.teacher is not None:
        with torch.no_grad():
            t_op, _, _, t_out = _teacher_pass(model, batch)
        terms["cpm"] = cpm_loss(op.masks, t_op.masks, model.cpm_mode, model.teacher_index)
        terms["feature"] = model.adapters(out.features, t_out.features)
        total = total + kd.cpm_weight * terms["cpm"] + kd.feature_weight * terms["feature"]
    terms["total"] = total
    return terms


@torch.no_grad()
def validation_psnr(system: CodedSystem, camera: CameraSpec, budget: Budget, val: Batch) -> float:
    """Mean phase PSNR (dB) of ``system``'s decoder (without its classical hand-over and rescue, which
    training does not use) on a fixed validation batch with a fixed noise draw."""
    system.eval()
    op = system.operator()
    y, photons = _measure(system, op, val, camera, budget, 0)
    with without_handover(system):
        psnr = float(phase_psnr(system(op, y, photons).phase_rad, val.phase_rad).mean())
    system.train()
    return psnr


class RunWriter:
    """All disk output of a run (CSV log, checkpoints); does nothing when ``enabled`` is False."""

    def __init__(self, out_dir: Path, enabled: bool = True) -> None:
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.log_path = self.out_dir / "log.csv"
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def load_checkpoint(self, device: str) -> dict | None:
        if not self.checkpoint_path.is_file():
            return None
        return torch.load(self.checkpoint_path, map_location=device, weights_only=True)

    def save_checkpoint(self, state: dict) -> None:
        if self.enabled:
            tmp = self.checkpoint_path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(self.checkpoint_path)

    def start_log(self, resume_step: int) -> None:
        """Create the CSV log, or keep its rows up to ``resume_step`` when resuming."""
        if not self.enabled:
            return
        rows = []
        if resume_step > 0 and self.log_path.is_file():
            with self.log_path.open() as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        with self.log_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, row: dict) -> None:
        if self.enabled:
            with self.log_path.open("a", newline="") as fh:
                csv.DictWriter(fh, LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})


@dataclass
class TrainResult:
    model: TrainModel
    steps: int
    elapsed_s: float
    best_val_psnr_db: float
    stopped: str


def build_model(cfg: TrainConfig, system_cfg: SystemConfig, teacher: CodedSystem | None = None) -> TrainModel:
    """The coded system of ``cfg`` (student: through the SLM model), wrapped with its teacher if any."""
    geometry = system_cfg.geometry()
    system = CodedSystem(
        geometry,
        cfg.masks,
        cfg.decoder,
        slm=system_cfg.slm if cfg.role == "student" else None,
        seed=cfg.seed,
    )
    teacher_budget = "per_snapshot"
    if cfg.distillation.teacher:
        loaded = load_bundle(cfg.distillation.teacher)
        teacher = loaded.system
        teacher_budget = loaded.train_config.noise.budget
    return TrainModel(system, system_cfg.camera, cfg.noise.budget, cfg.distillation, teacher, teacher_budget)


def train(
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool = True,
    progress: bool = True,
    teacher: CodedSystem | None = None,
    ctx: DistContext | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (log.csv, checkpoint.pt); returns the best-validation model.

    ``teacher`` (an in-memory teacher) overrides ``cfg.distillation.teacher`` (a bundle path).
    ``ctx``: this process's place in a torchrun job (default: read from the environment, see
    :func:`hil.learning.distributed.setup`); every rank trains, rank 0 alone writes.
    """
    ctx = ctx or setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = ctx.device
    system_cfg = cfg.system_config()
    spec = cfg.data_spec(system_cfg)
    model = build_model(cfg, system_cfg, teacher).to(device)
    val = make_batch(spec, dataclasses.replace(cfg, batch_size=cfg.val_images), 0, split="val")
    val.photons_per_pixel = torch.logspace(0.7, 2.7, cfg.val_images)  # 5 .. 500 photons per pixel
    val = val.to(device)
    if model.teacher is not None:
        model.attach_adapters(val)
    mask_params = [model.system.mask_rad]
    other = [p for n, p in model.named_parameters() if n != "system.mask_rad" and p.requires_grad]
    optimizer = torch.optim.Adam([{"params": mask_params, "lr": cfg.mask_lr}, {"params": other, "lr": cfg.lr}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    writer = RunWriter(out_dir, enabled=ctx.is_main)
    state = writer.load_checkpoint(device) if resume else None
    start, elapsed0, best, best_state, stale, skipped = 0, 0.0, -math.inf, None, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, elapsed0, best, stale = state["step"], state["elapsed_s"], state["best_val_psnr_db"], state["stale"]
        skipped = state["skipped"]
        best_state = state["best_model"]
    engine = wrap(model, ctx)  # after loading: every rank starts from the same checkpoint
    writer.start_log(start)
    clock = time.perf_counter()
    stopped = "steps"
    step = start
    show = progress and ctx.is_main
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not show, desc=cfg.role)
    for step in bar:
        elapsed = elapsed0 + time.perf_counter() - clock
        if any_rank(cfg.time_budget_s is not None and elapsed > cfg.time_budget_s, ctx):
            stopped = "time_budget"
            break
        batch = make_batch(spec, cfg, step, ctx).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            terms = engine(batch)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        mask_grad = float(model.system.mask_rad.grad.norm())
        # clipped per group, so a mask-gradient spike cannot starve the decoder; a non-finite
        # gradient (rare, at near-zero photon counts) skips the update instead of poisoning Adam
        norms = [torch.nn.utils.clip_grad_norm_(g["params"], cfg.grad_clip) for g in optimizer.param_groups]
        finite = all(bool(torch.isfinite(v)) for v in norms) and bool(torch.isfinite(terms["total"]))
        if finite:
            optimizer.step()
        else:
            skipped += 1
        scheduler.step()
        row = {k: float(v.detach()) for k, v in terms.items()} | {
            "step": step + 1,
            "elapsed_s": round(elapsed, 2),
            "lr": scheduler.get_last_lr()[1],
            "mask_grad_norm": mask_grad,
            "skipped": skipped,
        }
        done = step + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            row["val_psnr_db"] = validation_psnr(model.system, model.camera, model.budget, val)
            if row["val_psnr_db"] > best:
                best, stale = row["val_psnr_db"], 0
                best_state = {k: v.detach().clone() for k, v in model.system.state_dict().items()}
            else:
                stale += 1
            bar.set_postfix(loss=f"{row['total']:.4f}", val_db=f"{row['val_psnr_db']:.2f}")
        writer.log(row)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            writer.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": done,
                    "elapsed_s": elapsed0 + time.perf_counter() - clock,
                    "best_val_psnr_db": best,
                    "best_model": best_state,
                    "stale": stale,
                    "skipped": skipped,
                }
            )
        if cfg.patience and any_rank(stale >= cfg.patience, ctx):
            stopped = "early_stop"
            step = done
            break
    else:
        step = cfg.steps
    if best_state is not None:
        model.system.load_state_dict(best_state)
    return TrainResult(model, step, elapsed0 + time.perf_counter() - clock, best, stopped)
