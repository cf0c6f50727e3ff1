"""``hil benchmark ...``: benchmark scripts with their own command (never part of the unit tests)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hil.cli.options import OVERWRITE
from hil.cli.outputs import check_output, write_text
from hil.common.provenance import record

app = typer.Typer(help="Benchmarks; each writes JSON under benchmarks/ and prints a table.", no_args_is_help=True)


def _check_results(out: Path, overwrite: bool, *more: Path) -> None:
    """Before any work: the JSON, its Markdown table beside it and ``more`` may be written (committed
    results are replaced only with ``--overwrite``)."""
    for path in (out, out.with_suffix(".md"), *more):
        check_output(path, overwrite)


@app.command("classical")
def classical(
    out: Path = typer.Option(Path("benchmarks/classical.json"), help="JSON output."),
    images: int = typer.Option(8, min=1, help="Test objects."),
    max_iterations: int = typer.Option(2000, min=20, help="Largest iteration count (checkpoints 20, 50, 200, this)."),
    seed: int = typer.Option(0, help="Seed of objects, masks and noise."),
    repeats: int = typer.Option(3, min=1, help="Timed runs per curve after a warm-up (ms per frame: their median)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Classical solvers' quality versus iterations at 10/20/30 dB and noiseless, L = 1 and 4."""
    from dataclasses import asdict

    from hil.benchmarks.classical import ClassicalBenchmark, markdown_table, run

    console = Console()
    _check_results(out, overwrite)
    checkpoints = tuple(sorted({c for c in (20, 50, 200, max_iterations) if c <= max_iterations}))
    cfg = ClassicalBenchmark(images=images, checkpoints=checkpoints, seed=seed, repeats=repeats)
    rows = run(cfg, progress=lambda msg: console.log(msg))
    doc = {**record(asdict(cfg), seed=seed, command="hil benchmark classical"), "rows": rows}
    write_text(out, json.dumps(doc, indent=1), overwrite)
    table = Table(title="classical phase retrieval (phase PSNR dB, ms per frame)")
    for col in ("method", "L", "SNR dB", "photons/px", "iters", "PSNR", "±95%", "SSIM", "ms/frame"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["method"],
            str(r["masks"]),
            "∞" if r["snr_db"] is None else f"{r['snr_db']:.0f}",
            "-" if r["photons_per_pixel"] is None else f"{r['photons_per_pixel']:.1f}",
            str(r["iterations"]),
            f"{r['psnr_db']:.1f}",
            f"{r['psnr_ci95_db']:.1f}",
            f"{r['ssim']:.3f}",
            f"{r['ms_per_frame']:.1f}",
        )
    console.print(table)
    write_text(out.with_suffix(".md"), markdown_table(rows), overwrite)
    console.print(f"wrote {out} and {out.with_suffix('.md')}")


@app.command("distillation")
def distillation(
    out: Path = typer.Option(Path("benchmarks/distillation.json"), help="JSON output (table .md and PNG beside it)."),
    runs: Path = typer.Option(Path("runs/distill"), help="Training runs (reused when their bundle exists)."),
    teacher_config: Path = typer.Option(Path("configs/train_teacher.yaml")),
    student_config: Path = typer.Option(Path("configs/train_student.yaml")),
    seed_count: int = typer.Option(3, "--seed-count", min=1, help="Student training seeds 0..N-1 (KD and no-KD each)."),
    teacher_steps: int = typer.Option(None, min=1, help="Override the teacher's step budget."),
    student_steps: int = typer.Option(None, min=1, help="Override the students' step budget."),
    regime_steps: int = typer.Option(
        None, min=1, help="Steps of the cnn/binary/lowdata students (default: as product)."
    ),
    ablation_steps: int = typer.Option(None, min=1, help="Steps of the loss ablations (default: as product)."),
    regimes: str = typer.Option("product,cnn,binary,lowdata", help="Comma-separated regimes (product required)."),
    test_images: int = typer.Option(64, min=2, help="In-distribution test objects."),
    unseen_images: int = typer.Option(16, min=2, help="Test objects per unseen kind."),
    max_iterations: int = typer.Option(2000, min=50, help="Largest classical RAAR iteration count."),
    max_l_iterations: int = typer.Option(200, min=20, help="Largest RAAR iteration count on the teacher's L masks."),
    l_budgets: str = typer.Option("equal_total,per_snapshot", help="Photon budgets of the classical L-mask rows."),
    jobs: int = typer.Option(1, min=1, help="Training runs in parallel (one CPU thread each)."),
    ablations: str = typer.Option(
        "cpm_gram,cpm_none,feature_none,unet_backprojection", help="Comma-separated ablation runs."
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Teacher, students with/without a teacher over seeds, ablations and classical RAAR on the same
    test images and noise draws; writes JSON, a Markdown table and the mask-gradient-norm plot."""
    import sys

    from hil.benchmarks.distillation import DistillationBenchmark, markdown_table, run

    console = Console()
    png = out.with_name(out.stem + "_grad_norm.png")
    _check_results(out, overwrite, png)
    cfg = DistillationBenchmark(
        teacher_config=str(teacher_config),
        student_config=str(student_config),
        out_dir=str(runs),
        seeds=tuple(range(seed_count)),
        teacher_steps=teacher_steps,
        student_steps=student_steps,
        regime_steps=regime_steps,
        ablation_steps=ablation_steps,
        regimes=tuple(r for r in regimes.split(",") if r),
        test_images=test_images,
        unseen_images_per_kind=unseen_images,
        classical_iterations=tuple(sorted({c for c in (20, 50, 200, max_iterations) if c <= max_iterations})),
        classical_l_iterations=tuple(c for c in (20, 50, 200) if c <= max_l_iterations),
        classical_l_budgets=tuple(b for b in l_budgets.split(",") if b),
        jobs=jobs,
        ablations=tuple(a for a in ablations.split(",") if a),
    )
    command = "hil benchmark distillation " + " ".join(sys.argv[3:])
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = run(cfg, png, log=lambda msg: console.log(msg))
    doc = {**record(doc.pop("config"), seed=0, command=command), **doc}
    write_text(out, json.dumps(doc, indent=1, default=float), overwrite)
    table = markdown_table(doc, command)
    write_text(out.with_suffix(".md"), table, overwrite)
    console.print(table)
    console.print(f"wrote {out}, {out.with_suffix('.md')}, {png}")


@app.command("throughput")
def throughput(
    out: Path = typer.Option(Path("benchmarks/throughput.json"), help="JSON output (Markdown table beside it)."),
    sizes: list[int] = typer.Option([64, 128], help="Object sizes n (n x n)."),
    configs: list[str] = typer.Option(
        ["configs/train_student_nokd.yaml", "configs/train_teacher.yaml"], help="Training configs to time."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    processes: int = typer.Option(2, min=1, help="Processes of the torchrun case (1 thread each)."),
    threads: int = typer.Option(2, min=1, help="Threads of the single-process case."),
    steps: int = typer.Option(6, min=3, help="Training steps per case (the first is not timed)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Samples per second of `hil train`, one process and under torchrun, per config and size."""
    from hil.benchmarks.throughput import ThroughputCase, markdown_table, measure

    console = Console()
    _check_results(out, overwrite)
    header = record(
        {"device": device, "steps": steps, "configs": configs, "sizes": sizes}, command="hil benchmark throughput"
    )
    rows: list[dict] = []
    for config in configs:
        for n in sizes:
            for procs, thr in sorted({(1, 1), (1, threads), (processes, 1)}):
                rows.append(measure(ThroughputCase(config, n, procs, thr, device, steps)))
                console.log(f"{config} n={n} {procs}x{thr}: {rows[-1]['samples_per_s']:.1f} samples/s")
                write_text(out, json.dumps({**header, "rows": rows}, indent=1), True)  # partial results survive
                write_text(out.with_suffix(".md"), markdown_table(rows), True)
    console.print(markdown_table(rows))


@app.command("pipeline")
def pipeline(
    out: Path = typer.Option(Path("benchmarks/pipeline.json"), help="JSON output (Markdown table beside it)."),
    sizes: list[int] = typer.Option([64, 128], help="Object sizes n (n x n)."),
    frames: int = typer.Option(100, min=10, help="Live frames per size."),
    threads: int = typer.Option(1, min=1, help="CPU threads of the decoder."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Decode rates (batch 1 and 64) and the live pipeline at the simulated camera's rate, per size."""
    import torch

    from hil.benchmarks.pipeline import markdown_table, measure

    console = Console()
    _check_results(out, overwrite)
    torch.set_num_threads(threads)
    header = record({"sizes": sizes, "frames": frames, "threads": threads}, command="hil benchmark pipeline")
    rows = [measure(n, frames, progress=console.log) for n in sizes]
    write_text(out, json.dumps({**header, "rows": rows}, indent=1), overwrite)
    write_text(out.with_suffix(".md"), markdown_table(rows), overwrite)
    console.print(markdown_table(rows))
    console.print(f"wrote {out}, {out.with_suffix('.md')}")


@app.command("calibration")
def calibration(
    out: Path = typer.Option(Path("benchmarks/calibration.json"), help="JSON output (Markdown table beside it)."),
    bundle: Path = typer.Option(Path("models/student_fixture"), help="Student bundle of the fixture system."),
    benches: list[str] = typer.Option(["default", "varied"], help="Fixture benches (default, varied)."),
    samples: int = typer.Option(8, min=2, help="Held-out samples per SNR level."),
    finetune_samples: int = typer.Option(4, min=1, help="Fine-tuning samples per SNR level."),
    iterations: int = typer.Option(100, min=10, help="RAAR iterations."),
    finetune_steps: int = typer.Option(60, min=1, help="Fine-tuning steps."),
    finetune_simulated: int = typer.Option(
        8, min=0, help="Simulated pairs per fine-tuning step through the calibrated model (0: consistency only)."
    ),
    work: Path = typer.Option(Path("runs/calibration_benchmark"), help="Scratch folder (benches, frames, bundles)."),
    jobs: int = typer.Option(1, min=1, help="Benches run at once (one process and one CPU thread each)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Student and RAAR at each calibration stage (ideal, uncalibrated, calibrated, finetuned), two fixture benches."""
    from dataclasses import asdict

    from hil.benchmarks.calibration import CalibrationBenchmark, markdown, run

    console = Console()
    _check_results(out, overwrite)
    unknown = sorted(set(benches) - {"default", "varied"})
    if unknown:
        raise ValueError(f"--benches: unknown bench {unknown[0]!r}; allowed: default, varied")
    if work.exists() and any(work.iterdir()):
        raise ValueError(f"--work {work}: not empty; the benchmark calibrates fresh copies of the benches there")
    cfg = CalibrationBenchmark(
        bundle=str(bundle), benches=tuple(benches), samples=samples, finetune_samples=finetune_samples,
        iterations=iterations, finetune_steps=finetune_steps, finetune_simulated=finetune_simulated,
    )  # fmt: skip
    rows = run(cfg, work, progress=console.log, jobs=jobs)
    header = record({**asdict(cfg), "jobs": jobs}, seed=cfg.seed, command="hil benchmark calibration")
    write_text(out, json.dumps({**header, "rows": rows}, indent=1), overwrite)
    write_text(out.with_suffix(".md"), markdown(rows), overwrite)
    console.print(markdown(rows))
    console.print(f"wrote {out}, {out.with_suffix('.md')}")
