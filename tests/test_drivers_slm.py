"""SLM helpers on any slmsuite SLM: ROI with macro-pixels, blanking, read-back, limits."""

import numpy as np
import pytest
from slmsuite.hardware.slms.simulated import SimulatedSLM

from drivers.errors import LimitError
from drivers.slm import SLMController, roi_slices


def test_roi_is_centred_like_the_forward_model_and_offsets_are_bounded():
    assert roi_slices((128, 100), (64, 64)) == (slice(32, 96), slice(18, 82))
    assert roi_slices((128, 100), (64, 64), (-32, 18)) == (slice(0, 64), slice(36, 100))
    with pytest.raises(LimitError, match=r"roi_offset_px\[1\] \(cols\) = 19: .* allows offsets in \[-18, 18\]"):
        roi_slices((128, 100), (64, 64), (0, 19))
    with pytest.raises(LimitError, match="ROI larger than the SLM"):
        roi_slices((32, 32), (64, 64))


def test_masks_with_macro_pixels_on_a_plain_slmsuite_slm():
    slm = SimulatedSLM((40, 30), bitdepth=8)  # (width, height): shape (30, 40)
    controller = SLMController(slm, (4, 4), macro_pixel=3, roi_offset_px=(2, -5), settle=False)
    assert controller.roi == (slice(11, 23), slice(9, 21))
    levels = np.arange(16).reshape(4, 4) * (2 * np.pi / 256) * 8  # exact gray levels
    controller.show(levels)
    shown = controller.realised_phase()
    np.testing.assert_allclose(shown, np.kron(levels, np.ones((3, 3))), atol=1e-5)
    outside = np.asarray(slm.get_realized_phase()).copy()
    outside[controller.roi] = 0
    assert np.all(outside == 0)  # zero phase outside the ROI
    controller.blank()
    assert np.all(slm.display == slm.display.flat[0])
    with pytest.raises(ValueError, match=r"mask must have shape \(4, 4\)"):
        controller.show(np.zeros((5, 4)))


def test_mask_bit_depth_and_settle():
    slm = SimulatedSLM((16, 16), bitdepth=8, settle_time_s=0.05)
    with pytest.raises(LimitError, match=r"slm.bitdepth = 10 of the masks exceeds the SLM's 8 bits; allowed \[1, 8\]"):
        SLMController(slm, (8, 8), mask_bitdepth=10)
    controller = SLMController(slm, (8, 8))
    assert controller.settle_time_s == 0.05
    import time

    start = time.perf_counter()
    controller.show(np.zeros((8, 8)))
    assert time.perf_counter() - start >= 0.05


def test_wavefront_correction_is_added_only_when_asked():
    slm = SimulatedSLM((8, 8), bitdepth=8)
    slm.source["phase"] = np.full(slm.shape, 2 * np.pi * 64 / 256)  # a quarter wave, on a gray level
    plain = SLMController(slm, (4, 4), settle=False)
    plain.show(np.zeros((4, 4)))
    assert np.allclose(plain.realised_phase(), 0, atol=1e-6)
    corrected = SLMController(slm, (4, 4), settle=False, phase_correct=True)
    corrected.show(np.zeros((4, 4)))
    assert np.allclose(corrected.realised_phase(), np.pi / 2, atol=1e-5)
