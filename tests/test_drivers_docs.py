"""The Python example of docs/devices.md runs on the simulated bench."""

import re

from conftest_devices import REPO, fresh_sim_devices  # noqa: F401


def test_devices_doc_example_runs(fresh_sim_devices, monkeypatch):  # noqa: F811
    (code,) = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "devices.md").read_text(), flags=re.S)
    monkeypatch.chdir(REPO)
    scope = {}
    exec(compile(code, "docs/devices.md", "exec"), scope)
    assert scope["frame"].shape == (128, 128) and scope["frame"].mean() > 0  # lit by the simulated shutter
    assert scope["bench"].serial == {}  # closed on exit
