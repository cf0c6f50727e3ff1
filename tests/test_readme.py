"""The README's Python example runs and gives the figure it claims."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    exec(compile(code, str(README), "exec"), {})
    summary = eval(capsys.readouterr().out)  # the example prints a dict of plain floats
    assert 30 < summary["psnr_db"] < 37  # "~33 dB phase PSNR"
