"""Rewrite a few keys of one section of a YAML config in place, keeping its comments and layout."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any


def update_section_keys(
    path: str | Path,
    section: str,
    values: dict[str, Any],
    validate: Callable[[Path], object] | None = None,
    add_missing: bool = False,
) -> None:
    """Set ``section.key: value`` for each of ``values`` in the YAML file ``path``.

    Only lines ``  key: value  # comment`` directly under the top-level ``section:`` are edited
    (values written as JSON, which is valid YAML); a key that is not there is an error naming it,
    unless ``add_missing``: then it is appended to the section (indented two spaces), and a missing
    section is appended to the file. ``validate(path)`` is called on the new text (written to a
    sibling file) before ``path`` is replaced, so a bad value never reaches the config.
    """
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    header = rf"^{re.escape(section)}:\s*(#.*)?$"
    if add_missing and not any(re.match(header, line) for line in lines):
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"{section}:\n")
    try:
        start = next(i for i, line in enumerate(lines) if re.match(header, line))
    except StopIteration:
        raise ValueError(f"{path}: no top-level section {section!r}") from None
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\S", lines[i])), len(lines))
    left = dict(values)
    for i in range(start + 1, end):
        match = re.match(r"^(\s+)([A-Za-z_]\w*):\s*([^#\n]*?)(\s*#.*)?(\n?)$", lines[i])
        if match and match.group(2) in left:
            indent, key, _, comment, newline = match.groups()
            value = json.dumps(left.pop(key))
            lines[i] = f"{indent}{key}: {value}{'  ' + comment.strip() if comment else ''}{newline}"
    if left and not add_missing:
        raise ValueError(f"{path}: section {section!r} has no keys {sorted(left)} to update")
    while end > start + 1 and not lines[end - 1].strip():  # new keys go after the section's last line
        end -= 1
    if end > 0 and not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    lines[end:end] = [f"  {key}: {json.dumps(value)}\n" for key, value in left.items()]
    candidate = path.with_name(path.name + ".new")
    candidate.write_text("".join(lines))
    try:
        if validate is not None:
            validate(candidate)
    except BaseException:
        candidate.unlink()
        raise
    candidate.replace(path)
