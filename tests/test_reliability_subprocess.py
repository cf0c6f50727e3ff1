"""Reliability cases that need a real process: signals during ``hil capture`` and a capture under a
file-size limit (``ulimit -f``). Each child is the real entry point, ``python -m hil``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest_devices import random_mask, sim_bench_document, write_bench

from hil.bench.frame_log import open_h5, verify_checksums

REPO = Path(__file__).resolve().parents[1]
SAFE = {"shutter": "CLOSED", "laser": "OFF", "power_mw": 0.0}


def _setup(folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir()
    state = folder / "shutter.json"
    bench = write_bench(folder, sim_bench_document(shutter_state=state))
    np.save(folder / "m.npy", random_mask(16))
    return bench, state, folder / "m.npy"


def _hil(folder: Path, *args: object, prefix: str = "") -> subprocess.Popen:
    command = " ".join([prefix, f"exec {sys.executable} -m hil", *(f"'{a}'" for a in args)])
    with open(folder / "out.txt", "w") as out, open(folder / "err.txt", "w") as err:
        return subprocess.Popen(["bash", "-c", command], cwd=REPO, stdout=out, stderr=err)


def _wait_open(state: Path, child: subprocess.Popen, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and child.poll() is None:
        if state.exists() and json.loads(state.read_text() or "{}").get("shutter") == "OPEN":
            return
        time.sleep(0.02)
    raise AssertionError(f"the capture never opened the shutter (exit {child.poll()})")


@pytest.mark.slow
def test_sighup_and_sigquit_during_a_capture_leave_the_bench_safe_and_the_frames_readable(tmp_path):
    children = {}
    for signum in (signal.SIGHUP, signal.SIGQUIT):
        bench, state, mask = _setup(tmp_path / signum.name)
        out = tmp_path / signum.name / "c.h5"
        children[signum] = (_hil(out.parent, "capture", "--out", out, "--mask", mask, "--bench", bench,
                                 "--frames", 100_000, "--dark-frames", 1), state, out)  # fmt: skip
    try:
        for signum, (child, state, _) in children.items():
            _wait_open(state, child)
            time.sleep(0.3)  # a few frames into the light frames
            child.send_signal(signum)
        for signum, (child, state, out) in children.items():
            child.wait(timeout=30)
            err = (out.parent / "err.txt").read_text()
            assert child.returncode == 128 + signum, err
            assert json.loads(state.read_text()) == SAFE and "Traceback" not in err
            with open_h5(out) as h5:  # every frame recorded before the signal is intact
                assert len(h5["frames"]) >= 1 and verify_checksums(h5) >= 3
    finally:
        for child, _, _ in children.values():
            if child.poll() is None:
                child.kill()


@pytest.mark.slow
def test_a_capture_under_a_file_size_limit_stops_cleanly_and_keeps_its_frames(tmp_path):
    bench, state, mask = _setup(tmp_path / "capture")
    out = tmp_path / "capture" / "c.h5"
    limit_kib = 400  # 32 x 32 float64 frames of 8 KiB, 256 KiB kept free: the limit is reached after ~15
    child = _hil(out.parent, "capture", "--out", out, "--mask", mask, "--bench", bench, "--frames", 200,
                 prefix=f"ulimit -f {limit_kib};")  # fmt: skip
    child.wait(timeout=120)
    err = (out.parent / "err.txt").read_text()
    assert child.returncode == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "KiB left (file-size limit or free disk space)" in err and "everything recorded so far is kept" in err
    assert json.loads(state.read_text()) == SAFE
    assert out.stat().st_size <= limit_kib * 1024
    with open_h5(out) as h5:
        assert verify_checksums(h5) >= 3 and len(h5["dark"]) == 4

    # a reconstruction output that cannot be written is an error, never "wrote"
    capture = tmp_path / "capture" / "ok.h5"
    child = _hil(out.parent, "capture", "--out", capture, "--mask", mask, "--bench", bench, "--frames", 1)
    assert child.wait(timeout=120) == 0, (out.parent / "err.txt").read_text()
    phase = tmp_path / "capture" / "p.npy"
    child = _hil(out.parent, "reconstruct", capture, "--iterations", 2, "--out", phase, prefix="ulimit -f 1;")
    child.wait(timeout=120)
    err, printed = (out.parent / "err.txt").read_text(), (out.parent / "out.txt").read_text()
    assert child.returncode == 2 and "p.npy: not written (File too large)" in err and "wrote" not in printed, err
    assert not phase.exists() and not list(phase.parent.glob(".p.npy.*"))
