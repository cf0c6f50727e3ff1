"""OpenCV ``VideoCapture`` camera as an slmsuite ``Camera``: a live device, or playback of a
recorded video file or image sequence (``frames/frame_%04d.png``), so the OpenCV path runs in
tests without a camera.

Frames are returned as (height, width) grayscale arrays (colour converted with OpenCV's BGR
weights). For playback the exposure is a stored value (frames were recorded at a fixed
exposure), and the recording rewinds at its end when ``loop`` is true. OpenCV's exposure unit
depends on the backend (V4L2: 100 µs, i.e. ``exposure_units_per_s: 10000``); a live camera's
exposure is sent only when ``exposure_units_per_s`` is given, otherwise it is stored.
"""

from __future__ import annotations

import cv2
import numpy as np
from slmsuite.hardware.cameras.camera import Camera

from drivers.errors import DeviceDisconnected, DeviceError


class OpenCVCamera(Camera):
    """Live camera (``source`` = device index) or playback (``source`` = file path or pattern)."""

    def __init__(
        self,
        source: int | str = 0,
        loop: bool = True,
        exposure_s: float = 0.01,
        exposure_units_per_s: float | None = None,
        **kwargs: object,
    ) -> None:
        self.source = source
        self.exposure_units_per_s = exposure_units_per_s
        self.loop = loop
        self.live = isinstance(source, int)
        self._stored_exposure_s = float(exposure_s)
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            raise DeviceError(f"OpenCV cannot open {source!r} (device index, video file or image pattern)")
        ok, frame = self.cap.read()
        if not ok:
            self.cap.release()
            raise DeviceError(f"OpenCV opened {source!r} but could not read a frame")
        height, width = frame.shape[:2]
        bitdepth = 16 if frame.dtype == np.uint16 else 8
        kwargs.setdefault("name", str(source))
        super().__init__((width, height), bitdepth=bitdepth, **kwargs)
        self._rewind()  # the constructor probed frames; playback starts at the first

    def _rewind(self) -> None:
        if not self.live:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    @property
    def frame_count(self) -> int | None:
        """Frames in the recording (None for a live camera)."""
        return None if self.live else int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))

    def close(self) -> None:
        self.cap.release()

    @staticmethod
    def info(verbose: bool = True) -> list[str]:
        """OpenCV cannot list cameras portably; open indices 0, 1, ... instead."""
        return []

    @property
    def _sends_exposure(self) -> bool:
        return self.live and self.exposure_units_per_s is not None

    def _get_exposure_hw(self) -> float:
        if self._sends_exposure:
            return float(self.cap.get(cv2.CAP_PROP_EXPOSURE)) / self.exposure_units_per_s
        return self._stored_exposure_s

    def _set_exposure_hw(self, exposure_s: float) -> None:
        self._stored_exposure_s = float(exposure_s)
        if self._sends_exposure:
            self.cap.set(cv2.CAP_PROP_EXPOSURE, float(exposure_s) * self.exposure_units_per_s)

    def _get_image_hw(self, timeout_s: float) -> np.ndarray:
        ok, frame = self.cap.read()
        if not ok and self.loop and not self.live:
            self._rewind()
            ok, frame = self.cap.read()
        if not ok:
            what = "camera stopped delivering frames" if self.live else "end of recording (loop is off)"
            raise DeviceDisconnected(f"OpenCV source {self.source!r}: {what}")
        if frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return frame
