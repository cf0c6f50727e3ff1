"""What made an artifact: versions, git commit, config and its hash, host, time."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "hil-phase",
    "torch",
    "numpy",
    "slmsuite",
    "opencv-python",
    "pyserial",
    "scikit-image",
    "safetensors",
    "h5py",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results (``"missing"`` when absent)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def git_commit(path: Path = REPO_ROOT) -> str:
    """HEAD commit of the source tree, with ``+dirty`` when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def config_hash(config: Any) -> str:
    """SHA-256 of the canonical JSON of a config mapping."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def record(config: Any, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance record for an artifact or run."""
    return {
        "uid": uuid.uuid4().hex,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "config": config,
        "config_sha256": config_hash(config),
        "seed": seed,
        **extra,
    }
