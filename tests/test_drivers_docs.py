"""The Python example of docs/devices.md runs on the default (realistic simulated) bench."""

import re

from conftest_devices import REPO, fresh_sim_devices  # noqa: F401


def test_devices_doc_example_runs(fresh_sim_devices, monkeypatch):  # noqa: F811
    (code,) = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "devices.md").read_text(), flags=re.S)
    monkeypatch.chdir(REPO)
    scope = {}
    exec(compile(code, "docs/devices.md", "exec"), scope)
    frame = scope["frame"]  # the camera's own (height, width), lit by the simulated shutter above the dark offset
    assert frame.shape == (40, 48) and frame.mean() > scope["bench"].spec.system.camera.dark_offset_adu + 10
    assert scope["bench"].serial == {}  # closed on exit
