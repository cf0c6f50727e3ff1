"""The README's Python example runs and gives the figure it claims."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    exec(compile(code, str(README), "exec"), {})
    summary = eval(capsys.readouterr().out)  # the example prints a dict of plain floats
    assert 30 < summary["psnr_db"] < 37  # "~33 dB phase PSNR"


def test_layout_table_matches_the_tree():
    """Every path in the README's layout table exists, and every package folder of the tree is in it."""
    text = README.read_text()
    table = text[text.index("## Layout") : text.index("## Conventions")]
    root = README.parent
    rows = re.findall(r"^\| `([^`]+)` \|(.*)$", table, flags=re.M)
    listed = {path for path, _ in rows}
    assert listed, "no layout table"
    missing = sorted(p for p in listed if not (root / p).exists())
    assert missing == [], f"layout table names paths that do not exist: {missing}"
    for folder, rest in rows:
        for name in re.findall(r"`([a-z_]+\.py)`", rest):
            assert (root / folder / name).is_file(), f"{folder}{name} is in the layout table but not in the tree"
    packages = {f"hil/{p.parent.name}/" for p in (root / "hil").glob("*/__init__.py")}
    assert packages - listed == set(), f"packages missing from the layout table: {sorted(packages - listed)}"
