"""The OpenCV VideoCapture camera, exercised on recorded image sequences and videos."""

import cv2
import numpy as np
import pytest

from drivers.errors import DeviceDisconnected, DeviceError
from drivers.opencv_camera import OpenCVCamera


@pytest.fixture
def sequence(tmp_path):
    """Three 8-bit frames (height 24, width 32) with distinct values and a gradient."""
    frames = [(np.arange(32)[None, :] + np.full((24, 1), 40 * i)).astype(np.uint8) for i in range(3)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), frame)
    return str(tmp_path / "frame_%03d.png"), frames


def test_image_sequence_plays_back_exactly_and_loops(sequence):
    pattern, frames = sequence
    cam = OpenCVCamera(pattern)
    assert cam.shape == (24, 32) and cam.frame_count == 3 and cam.dtype == np.uint8
    got = [cam.get_image() for _ in range(5)]
    for image, expected in zip(got, frames + frames[:2], strict=True):
        np.testing.assert_array_equal(image, expected)
    cam.close()


def test_end_of_recording_without_loop_is_an_error(sequence):
    pattern, _ = sequence
    cam = OpenCVCamera(pattern, loop=False, capture_attempts=1)
    for _ in range(3):
        cam.get_image()
    with pytest.raises(DeviceDisconnected, match="end of recording"):
        cam.get_image()
    cam.close()


def test_colour_video_is_converted_to_grayscale_and_exposure_is_stored(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for level in (30, 90, 150, 210):
        writer.write(np.full((24, 32, 3), level, np.uint8))
    writer.release()
    cam = OpenCVCamera(path, exposure_s=0.02)
    means = [float(cam.get_image().mean()) for _ in range(4)]
    assert np.allclose(means, [30, 90, 150, 210], atol=3)  # lossy codec
    assert cam.exposure_s == 0.02
    cam.set_exposure(0.05)
    assert cam.get_exposure() == 0.05
    cam.close()


def test_missing_source_is_reported(tmp_path):
    with pytest.raises(DeviceError, match="OpenCV cannot open"):
        OpenCVCamera(str(tmp_path / "nothing_%03d.png"))
