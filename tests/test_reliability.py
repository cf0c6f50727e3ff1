"""Reliability catalogue (issue 12), in process: every fault and bad input ends in one line and exit 2,
the bench safe, and no recorded frame lost. The subprocess cases (signals, ulimit) are in
tests/test_reliability_subprocess.py, the property-based fuzzing in tests/test_cli_fuzz.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest_devices import fresh_sim_devices, random_mask, sim_bench_document, write_bench  # noqa: F401

from drivers.errors import DeviceError
from drivers.serial_sim import simulated_device
from hil.bench import frame_log
from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, capture_cdp
from hil.bench.frame_log import CaptureError, FrameLog
from hil.bench.reconstruct import load_capture
from hil.cli import main
from hil.cli.inputs import load_mask
from hil.cli.outputs import _umask, save_npy, write_text
from hil.common.config import ConfigError, load_yaml
from hil.physics.registration import load_registration
from hil.physics.system import load_system

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args: object) -> tuple[int, str]:
    """``hil ARGS`` through the real entry point; returns (exit status, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def bench_file(tmp_path, fresh_sim_devices):  # noqa: F811
    state = tmp_path / "shutter.json"
    return write_bench(tmp_path, sim_bench_document(shutter_state=state)), state


def _is_safe(state: Path) -> bool:
    return json.loads(state.read_text()) == {"shutter": "CLOSED", "laser": "OFF", "power_mw": 0.0}


# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("camera:\n  photons_per_pixel: .nan\n", "key 'camera.photons_per_pixel': must be a finite number"),
        ("camera:\n  gain_adu_per_e: .inf\n", "key 'camera.gain_adu_per_e': must be a finite number"),
        ("optics:\n  n: 100000\n", "optics.n must lie in [2, 2048]"),
    ],
)
def test_non_finite_and_absurd_system_values_are_refused(tmp_path, edit, message):
    data = yaml.safe_load((REPO / "configs" / "system.yaml").read_text())
    for section, values in yaml.safe_load(edit).items():
        data[section].update(values)
    if "n" in data["optics"]:
        data["data"]["n"] = data["optics"]["n"]
    path = tmp_path / "system.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_system(path)


def test_duplicate_keys_and_negative_durations_are_refused(tmp_path):
    from hil.learning.train_config import load_train_config

    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'seed'"):
        load_yaml(path)
    train = yaml.safe_load((REPO / "configs" / "train_student_nokd.yaml").read_text())
    path.write_text(yaml.safe_dump({**train, "time_budget_s": -5}))
    with pytest.raises(ConfigError, match="key 'time_budget_s': a duration in seconds must be >= 0"):
        load_train_config(path)
    path.write_text(yaml.safe_dump({**train, "lr": float("nan")}))
    with pytest.raises(ConfigError, match="key 'lr': must be a finite number"):
        load_train_config(path)


def test_cli_config_error_is_one_line(tmp_path, capsys):
    bench = tmp_path / "bench.yaml"
    bench.write_text("seed: 1\nseed: 1\n")
    assert_one_line_error(*run_cli(capsys, "check", "--bench", bench, "--dry-run"), "duplicate key 'seed'")


def test_a_bug_keeps_its_traceback(monkeypatch):
    """KeyError, TypeError and the like are bugs: main() lets them through instead of exit 2."""

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("hil.cli.check.load_bench", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["check", "--dry-run"])


# --- masks, registrations, captures ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "mask file has 0 bytes"),
        ("npz", "an .npz archive"),
        (np.ones((16, 16), dtype=np.complex128), "must hold real numbers"),
        (np.full((16, 16), np.nan), "NaN or infinite"),
        (np.full((16, 16), 1e300), "within ±10000 rad"),
        (np.zeros((8, 16)), "shape (16, 16)"),
        (np.array(["a"] * 256).reshape(16, 16), "must hold real numbers"),
    ],
)
def test_bad_masks_are_named(tmp_path, content, message):
    path = tmp_path / "m.npy"
    if content is None:
        path.write_bytes(b"")
    elif isinstance(content, str):
        np.savez(tmp_path / "m.npz", mask=np.zeros((16, 16)))
        (tmp_path / "m.npz").rename(path)
    else:
        np.save(path, content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_mask(path, 16)


def test_an_object_array_mask_is_never_unpickled(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable .npy array"):
        load_mask(path, 16)


def test_a_nan_or_singular_registration_is_refused(tmp_path):
    doc = {"camera_to_model": [[float("nan"), 0, 0], [0, 1, 0]], "model_shape": [32, 32], "camera_shape": [32, 32]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**doc, "correlation": 1.0}))
    with pytest.raises(ValueError, match="finite and invertible"):
        load_registration(path)
    doc["camera_to_model"] = [[1, 2, 0], [2, 4, 0]]
    path.write_text(json.dumps({**doc, "correlation": 1.0}))
    with pytest.raises(ValueError, match="finite and invertible"):
        load_registration(path)


@pytest.fixture(scope="module")
def capture_file(tmp_path_factory) -> Path:
    """One real capture of the simulated bench at n = 16."""
    folder = tmp_path_factory.mktemp("capture")
    bench = write_bench(folder, sim_bench_document())
    with Bench.from_config(bench) as b:
        capture_cdp(b, random_mask(16), CaptureSettings(frames=2, dark_frames=1), folder / "c.h5")
    return folder / "c.h5"


def _copy(capture_file: Path, tmp_path: Path) -> Path:
    out = tmp_path / "c.h5"
    out.write_bytes(capture_file.read_bytes())
    return out


def test_frames_carry_checksums_and_corruption_is_named(capture_file, tmp_path):
    assert load_capture(capture_file).y.shape == (1, 1, 32, 32)
    with h5py.File(capture_file, "r") as h5:
        assert all(h5[f"frames/{i:05d}"].fletcher32 for i in range(2)) and h5["cdp_adu"].fletcher32
        offset = h5["frames/00001"].id.get_offset()  # first byte of the stored (chunked) data
    if offset is None:  # chunked: find the chunk's address
        with h5py.File(capture_file, "r") as h5:
            offset = h5["frames/00001"].id.get_chunk_info(0).byte_offset
    path = _copy(capture_file, tmp_path)
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0xFF  # one flipped byte in the middle of a frame
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="frames/00001: unreadable, checksum or data damaged"):
        load_capture(path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda h5: h5.attrs.__setitem__("system_json", 5), "attribute system_json: expected a JSON string"),
        (lambda h5: h5.attrs.__setitem__("system_json", "[" * 5000 + "]" * 5000), "not valid JSON"),
        (lambda h5: h5.attrs.__setitem__("system_json", '{"a":' * 40 + "1" + "}" * 40), "nested more than 32"),
        (lambda h5: h5.attrs.__setitem__("system_json", "{"), "system_json: not valid JSON"),
        (lambda h5: h5.attrs.__setitem__("system_json", '{"optics": {"n": "x"}}'), "system_json: key 'optics.n'"),
        (lambda h5: (h5.__delitem__("cdp_adu"), h5.create_group("cdp_adu")), "cdp_adu: expected a dataset"),
        (lambda h5: h5["cdp_adu"].__setitem__((0, 0), np.nan), "cdp_adu: contains NaN"),
        (lambda h5: (h5.__delitem__("mask_rad"), h5.create_dataset("mask_rad", data=np.ones((16, 16)) * 1j)), "real"),
        (lambda h5: (h5.__delitem__("mask_rad"), h5.create_dataset("mask_rad", data=np.ones((8, 8)))), "optics.n"),
        (lambda h5: h5.__delitem__("cdp_adu"), "cdp_adu: missing"),
    ],
)
def test_malformed_captures_are_named(capture_file, tmp_path, damage, message):
    path = _copy(capture_file, tmp_path)
    with h5py.File(path, "a") as h5:
        damage(h5)
    with pytest.raises(CaptureError, match=message.replace("(", r"\(")):
        load_capture(path)


def test_reconstruct_refuses_to_overwrite_and_never_says_wrote_after_a_failed_write(capture_file, tmp_path, capsys):
    path = _copy(capture_file, tmp_path)
    out = tmp_path / "p.npy"
    out.write_bytes(b"earlier")
    assert_one_line_error(*run_cli(capsys, "reconstruct", path, "--iterations", 2, "--out", out), "--overwrite")
    assert out.read_bytes() == b"earlier"
    assert_one_line_error(*run_cli(capsys, "reconstruct", path, "--out", "/dev/full"), "not a regular file")
    code, _ = run_cli(capsys, "reconstruct", path, "--iterations", 2, "--out", out, "--overwrite")
    assert code == 0 and np.load(out).shape == (16, 16)


def test_a_failed_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "x.npy"
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"x.npy: not written \(No space left on device\)"):
        save_npy(target, np.zeros(3))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file
    write_text(target, "new")
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # permissions as open() gives them
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_text(target, "newer")


def test_a_full_disk_stops_the_log_before_the_file_is_torn(tmp_path, monkeypatch):
    path = tmp_path / "f.h5"
    log = FrameLog(path, "test", {})
    log.add("frames", np.ones((64, 64)))
    monkeypatch.setattr(frame_log, "room_left_bytes", lambda p: 40_000.0)  # less than a frame + headroom
    with pytest.raises(OSError, match="f.h5: only 39 KiB left .* for frame frames/00001"):
        log.add("frames", np.ones((64, 64)))
    log.close()
    with frame_log.open_h5(path) as h5:
        assert frame_log.verify_checksums(h5) == 1
        np.testing.assert_array_equal(frame_log.read_array(h5, "frames/00000", ndim=2), np.ones((64, 64)))


# --- devices and the bench's safe state --------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT])
def test_sighup_and_sigquit_leave_the_bench_safe(bench_file, signum):
    path, state = bench_file
    with pytest.raises(SystemExit) as info, Bench.from_config(path) as bench:
        bench.light_on()
        bench.show_mask(random_mask(16))
        slm = bench.slm.slm
        assert not _is_safe(state)
        os.kill(os.getpid(), signum)
    assert info.value.code == 128 + signum
    assert _is_safe(state) and np.all(slm.display == slm.display.flat[0])
    assert signal.getsignal(signum) is not Bench._on_signal  # handlers restored


def test_a_failing_blank_does_not_stop_the_others_and_is_reported(bench_file, monkeypatch):
    path, state = bench_file
    with pytest.raises(DeviceError, match="safe state not confirmed: slm: blank failed"):  # noqa: PT012
        with Bench.from_config(path) as bench:
            bench.light_on()
            bench.serial["trigger"].arm()

            def broken() -> None:
                raise RuntimeError("blank failed")

            monkeypatch.setattr(bench.slm, "blank", broken)
    assert _is_safe(state) and simulated_device("sim-trigger://").firmware.state["armed"] == 0


def test_a_failing_shutter_does_not_stop_the_slm_blanking(bench_file, monkeypatch):
    path, _ = bench_file
    with pytest.raises(DeviceError, match="serial.shutter: unplugged"):  # noqa: PT012
        with Bench.from_config(path) as bench:
            bench.show_mask(random_mask(16))
            slm = bench.slm.slm

            def broken(timeout_s=None) -> None:
                raise DeviceError("unplugged")

            monkeypatch.setattr(bench.serial["shutter"], "safe", broken)
    assert np.all(slm.display == slm.display.flat[0])


class ExplodingSLM:
    def __init__(self, **kwargs: object) -> None:
        raise RuntimeError("vendor SDK not found")


def test_a_constructor_that_raises_is_a_device_error(tmp_path, fresh_sim_devices, capsys):  # noqa: F811
    doc = sim_bench_document(shutter_state=tmp_path / "shutter.json")
    doc["slm"]["driver"] = "test_reliability:ExplodingSLM"
    doc["slm"]["kwargs"] = {}
    bench = write_bench(tmp_path, doc)
    assert_one_line_error(
        *run_cli(capsys, "check", "--bench", bench),
        "slm (test_reliability:ExplodingSLM): cannot be opened: RuntimeError: vendor SDK not found",
    )
    assert _is_safe(tmp_path / "shutter.json")


def test_swapped_serial_ports_are_an_error(tmp_path, fresh_sim_devices, capsys):  # noqa: F811
    doc = sim_bench_document()
    shutter, trigger = doc["serial"]["shutter"]["port"], doc["serial"]["trigger"]["port"]
    doc["serial"]["shutter"]["port"], doc["serial"]["trigger"]["port"] = trigger, shutter
    bench = write_bench(tmp_path, doc)
    assert_one_line_error(*run_cli(capsys, "check", "--bench", bench), "identifies as 'HIL-SIM,TRG-1", "swapped")


def test_a_bad_simulator_option_names_the_key(tmp_path, fresh_sim_devices):  # noqa: F811
    doc = sim_bench_document()
    doc["serial"]["shutter"]["port"] = "sim-shutter://?delay_s=abc"
    with pytest.raises(DeviceError, match="option delay_s must be a number of seconds"):
        Bench.from_config(write_bench(tmp_path, doc)).__enter__()


def test_saturation_is_one_line_and_frames_are_kept(tmp_path, fresh_sim_devices, capsys):  # noqa: F811
    doc = sim_bench_document(shutter_state=tmp_path / "shutter.json")
    doc["camera"]["kwargs"]["sensor"] = {"adc_bits": 8, "gain_adu_per_e": 4.0}  # 50 photons saturate 8 bits
    bench = write_bench(tmp_path, doc)
    np.save(tmp_path / "m.npy", random_mask(16))
    out = tmp_path / "c.h5"
    code, err = run_cli(capsys, "capture", "--out", out, "--mask", tmp_path / "m.npy", "--bench", bench)
    assert_one_line_error(code, err, "saturated", "frames kept in")
    assert _is_safe(tmp_path / "shutter.json")
    with frame_log.open_h5(out) as h5:
        assert frame_log.verify_checksums(h5) >= 8  # 4 dark + 4 light frames + the mask


def test_dry_run_does_not_import_plugin_modules(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "imported"
    (tmp_path / "sideeffect_plugin.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('module code ran')\nclass SLM: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = sim_bench_document()
    doc["slm"] = {"driver": "sideeffect_plugin:SLM", "kwargs": {"anything": 1}}
    bench = write_bench(tmp_path, doc)
    code, _ = run_cli(capsys, "check", "--dry-run", "--bench", bench)
    assert code == 0 and not marker.exists()
    doc["slm"]["driver"] = "no_such_plugin_module:SLM"
    code, err = run_cli(capsys, "check", "--dry-run", "--bench", write_bench(tmp_path, doc))
    assert_one_line_error(code, err, "key 'slm.driver': cannot find module 'no_such_plugin_module'")


def test_library_start_up_messages_only_with_verbose(tmp_path, fresh_sim_devices, capsys):  # noqa: F811
    bench = write_bench(tmp_path, sim_bench_document())
    for verbose in (False, True):
        with pytest.raises(SystemExit) as info:
            main(["-v"] * verbose + ["check", "--bench", str(bench)])
        printed = capsys.readouterr()
        assert info.value.code == 0
        assert ("Initialized SimulatedBenchSLM" in printed.out) == verbose, printed.out


def test_an_unwritable_capture_folder_is_refused_before_any_device_is_touched(tmp_path, monkeypatch, capsys):
    def forbidden(self):
        raise AssertionError("the bench was opened")

    monkeypatch.setattr(Bench, "__enter__", forbidden)
    np.save(tmp_path / "m.npy", random_mask(16))
    bench = write_bench(tmp_path, sim_bench_document())
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, err = run_cli(capsys, "capture", "--out", blocker / "c.h5", "--mask", tmp_path / "m.npy", "--bench", bench)
    assert_one_line_error(code, err, "not a writable folder")
