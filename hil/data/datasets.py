"""Phase-object data: offline image sources, deterministic splits, augmentation.

Source names (``DataSpec.sources``):

* ``skimage``: the grayscale sample images bundled with scikit-image (random crops);
* ``lfw``: scikit-image's bundled 200 face crops (25 x 25);
* ``fashion_mnist``: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), 60k train + 10k test;
* ``cells``, ``phase_screen``, ``resolution_target``: synthetic (see :mod:`hil.data.objects`);
* ``folder:PATH``: every image file in a folder (read with OpenCV, grayscale);
* ``npz:PATH[:KEY]`` and ``h5:PATH:DATASET``: stacks of maps ``(K, height, width)``.

Nothing is downloaded. Splits are deterministic: finite sources assign each stored image to
train/val/test by a hash of its index (``DataSpec.split_fractions``, 70/10/20 by default, 50/10/40
in ``configs/system.yaml``; Fashion-MNIST keeps its own test file), synthetic sources draw from
disjoint seed streams per split. A finite source with no image in the requested split is an error
(never a fallback that would leak training images into the test set). Item ``i`` of a split is a
pure function of ``(seed, split, i)``. The test split shows every stored test image once before any
repeats: items are dealt to the sources in turn, a finite source whose test images have all been
shown sitting out while another finite source still has unshown ones (with one finite source, its
images simply cycle). The other splits draw their images at random.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from hil.data.objects import SYNTHETIC_KINDS

SPLITS = ("train", "val", "test")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_SKIMAGE_NAMES = (
    "astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
    "logo", "microaneurysms", "moon", "page", "retina", "rocket", "text",
)  # fmt: skip


@dataclass(frozen=True)
class DataSpec:
    """Which objects to draw and how.

    Attributes:
        sources: source names (see module docstring), drawn round-robin.
        n: object size in pixels (n x n).
        phi_max_rad: phase range [0, phi_max_rad] of the objects.
        amplitude_contrast: 0 for phase-only objects; c > 0 gives amplitude in [1 - c, 1].
        augment: random flips and 90° rotations on the train split.
        split_fractions: train/val/test shares of every finite source's stored images.
        train_subset: fraction of each finite source's training images kept (the first ones; 1: all).
    """

    sources: tuple[str, ...] = ("skimage", "cells", "phase_screen")
    n: int = 64
    phi_max_rad: float = math.pi
    amplitude_contrast: float = 0.0
    augment: bool = True
    split_fractions: tuple[float, float, float] = field(default=(0.7, 0.1, 0.2))
    train_subset: float = 1.0

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("DataSpec.sources must name at least one source")
        if self.n < 4:
            raise ValueError(f"DataSpec.n must be >= 4, got {self.n}")
        if self.phi_max_rad <= 0:
            raise ValueError(f"DataSpec.phi_max_rad must be > 0, got {self.phi_max_rad}")
        if not 0 <= self.amplitude_contrast < 1:
            raise ValueError(f"DataSpec.amplitude_contrast must be in [0, 1), got {self.amplitude_contrast}")
        if min(self.split_fractions) < 0 or not math.isclose(sum(self.split_fractions), 1.0):
            raise ValueError(f"DataSpec.split_fractions must be >= 0 and sum to 1, got {self.split_fractions}")
        if not 0 < self.train_subset <= 1:
            raise ValueError(f"DataSpec.train_subset must be in (0, 1], got {self.train_subset}")


def _split_of(index: int, fractions: tuple[float, float, float]) -> str:
    u = (zlib.crc32(index.to_bytes(8, "little")) % 10_000) / 10_000
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def split_indices(count: int, split: str, fractions: tuple[float, float, float], source: str) -> np.ndarray:
    """Indices of a finite source's ``count`` stored images that belong to ``split``; an empty split raises."""
    idx = np.array([i for i in range(count) if _split_of(i, fractions) == split], dtype=np.int64)
    if idx.size == 0:
        raise ValueError(
            f"data source {source!r} has no image in split {split!r} ({count} images, fractions {fractions}): "
            "add images or change DataSpec.split_fractions"
        )
    return idx


def distinct_test_images(spec: DataSpec, count: int) -> dict[str, int]:
    """How many distinct stored images the first ``count`` test items come from, per finite source
    (synthetic sources: one new object per item)."""
    ds = PhaseObjectDataset(spec, "test", count)
    shown: dict[str, set[int]] = {s: set() for s in spec.sources}
    for source, k in ds._plan:
        shown[source].add(k % len(ds._indices[source]) if source in ds._indices else k)
    return {s: len(v) for s, v in shown.items()}


def sources_of_test_items(spec: DataSpec, count: int) -> tuple[str, ...]:
    """The source of each of the first ``count`` test items (see ``_test_plan`` for the order)."""
    return tuple(source for source, _ in PhaseObjectDataset(spec, "test", count)._plan)


def _test_plan(sources: tuple[str, ...], stored: dict[str, int], size: int) -> list[tuple[str, int]]:
    """(source, k) for each test item: the k-th test image of a finite source (``stored`` counts its
    test images; k wraps around), the k-th object of a synthetic one. Sources take turns; a finite
    source that has shown all its images sits out until every finite source has (one round)."""
    plan: list[tuple[str, int]] = []
    shown = dict.fromkeys(sources, 0)
    while len(plan) < size:
        rounds = {s: shown[s] // stored[s] for s in stored}
        current = min(rounds.values(), default=0)
        for source in sources:
            if len(plan) < size and rounds.get(source, current) == current:
                plan.append((source, shown[source]))
                shown[source] += 1
    return plan


def _to_unit(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=-1)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">i4")
    if magic != 2051:
        raise ValueError(f"{path} is not an IDX image file (magic {magic})")
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(count, rows, cols)


@cache
def _load_stack(source: str) -> tuple[np.ndarray, ...]:
    """All images of a finite source as unit-range float32 maps (cached per process)."""
    kind, _, arg = source.partition(":")
    if kind == "skimage":
        import skimage.data

        return tuple(_to_unit(getattr(skimage.data, name)()) for name in _SKIMAGE_NAMES)
    if kind == "lfw":
        import skimage.data

        return tuple(_to_unit(im) for im in skimage.data.lfw_subset())
    if kind == "folder":
        folder = Path(arg)
        if not folder.is_dir():
            raise FileNotFoundError(f"data source {source!r}: folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"data source {source!r}: no image files ({sorted(IMAGE_SUFFIXES)}) in {folder}")
        images = []
        for p in files:
            im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            if im is None:
                raise ValueError(f"data source {source!r}: OpenCV cannot read {p}")
            images.append(_to_unit(im))
        return tuple(images)
    if kind in ("npz", "h5"):
        path_str, _, key = arg.partition(":")
        path = Path(path_str)
        if not path.is_file():
            raise FileNotFoundError(f"data source {source!r}: file {path} does not exist")
        if kind == "npz":
            with np.load(path, allow_pickle=False) as npz:
                key = key or npz.files[0]
                if key not in npz.files:
                    raise KeyError(f"data source {source!r}: no array {key!r} in {path} (has {npz.files})")
                stack = npz[key]
        else:
            import h5py

            with h5py.File(path, "r") as h5:
                if key not in h5:
                    raise KeyError(f"data source {source!r}: no dataset {key!r} in {path}")
                stack = h5[key][()]
        if stack.ndim != 3:
            raise ValueError(f"data source {source!r}: expected (K, height, width), got shape {stack.shape}")
        return tuple(_to_unit(im) for im in stack)
    raise ValueError(f"unknown data source {source!r}")


@cache
def _fashion_mnist(part: str) -> np.ndarray:
    name = "train-images-idx3-ubyte.gz" if part == "train" else "t10k-images-idx3-ubyte.gz"
    path = FASHION_MNIST_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"data source 'fashion_mnist' needs {path}: install the Debian package dataset-fashion-mnist"
        )
    return _read_idx_images(path)


def _crop_resize(image: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape
    side_max = min(h, w)
    side_min = min(side_max, n)
    side = int(round(math.exp(rng.uniform(math.log(side_min), math.log(max(side_min, side_max // 2) + 1)))))
    side = min(max(side, side_min), side_max)
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    patch = image[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side >= n else cv2.INTER_CUBIC
    return _to_unit(cv2.resize(patch, (n, n), interpolation=interp))


class PhaseObjectDataset(Dataset):
    """``size`` phase objects of one split; item -> (phase_rad (n, n), amplitude (n, n)) float32."""

    def __init__(self, spec: DataSpec, split: str, size: int, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.spec, self.split, self.size, self.seed = spec, split, size, seed
        self._indices: dict[str, np.ndarray] = {}
        for source in spec.sources:
            if source in SYNTHETIC_KINDS or source == "fashion_mnist":
                continue
            stack = _load_stack(source)
            idx = split_indices(len(stack), split, spec.split_fractions, source)
            if split == "train":
                idx = idx[: max(1, math.ceil(spec.train_subset * idx.size))]
            self._indices[source] = idx
        stored = {s: len(idx) for s, idx in self._indices.items()}
        self._plan = _test_plan(spec.sources, stored, size) if split == "test" else None

    def __len__(self) -> int:
        return self.size

    def _unit_map(self, source: str, rng: np.random.Generator, k: int) -> np.ndarray:
        """Unit-range map from ``source``; in the test split ``k`` picks its stored image (see ``_test_plan``)."""
        n = self.spec.n
        if source in SYNTHETIC_KINDS:
            return SYNTHETIC_KINDS[source](n, rng)
        if source == "fashion_mnist":
            images = _fashion_mnist("test" if self.split == "test" else "train")
            if self.split == "test":
                choice = rng.integers(len(images))
            else:  # last 10 % of the train file is validation
                cut = int(0.9 * len(images))
                choice = rng.integers(cut) if self.split == "train" else rng.integers(cut, len(images))
            im = images[choice].astype(np.float32) / 255.0
            return cv2.resize(im, (n, n), interpolation=cv2.INTER_CUBIC if n > im.shape[0] else cv2.INTER_AREA).clip(
                0, 1
            )
        stack = _load_stack(source)
        indices = self._indices[source]
        if self.split == "test":
            choice = indices[k % len(indices)]
        else:
            choice = rng.choice(indices)
        return _crop_resize(stack[int(choice)], n, rng)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.size:
            raise IndexError(i)
        spec = self.spec
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), i])
        source, k = self._plan[i] if self._plan is not None else (spec.sources[i % len(spec.sources)], i)
        phase = self._unit_map(source, rng, k)
        amplitude = np.ones_like(phase)
        if spec.amplitude_contrast > 0:
            amplitude = 1 - spec.amplitude_contrast * self._unit_map(source, rng, k)
        if spec.augment and self.split == "train":
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            phase, amplitude = (np.rot90(a, turns) for a in (phase, amplitude))
            if flip:
                phase, amplitude = phase[:, ::-1], amplitude[:, ::-1]
        phase_rad = np.ascontiguousarray(phase, dtype=np.float32) * np.float32(spec.phi_max_rad)
        return torch.from_numpy(phase_rad), torch.from_numpy(np.ascontiguousarray(amplitude, dtype=np.float32))


def batch(spec: DataSpec, split: str, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` items of a split stacked: (phase_rad, amplitude), each (count, n, n)."""
    ds = PhaseObjectDataset(spec, split, count, seed)
    items = [ds[i] for i in range(count)]
    return torch.stack([p for p, _ in items]), torch.stack([a for _, a in items])
