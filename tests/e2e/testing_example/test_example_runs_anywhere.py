"""The README's example is this directory's file, and it passes in an empty directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
EXAMPLE = HERE / "test_reservation_flow.py"
ROOT = HERE.parents[2]


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Testing your service with paysim", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_shows_the_example_file_as_it_is():
    conftest, example = _readme_blocks()
    assert conftest == 'pytest_plugins = ["paysim.testing"]\n'
    assert example == EXAMPLE.read_text()


def test_the_example_passes_in_an_empty_directory(tmp_path: Path):
    conftest, example = _readme_blocks()
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_reservation_flow.py").write_text(example)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the rootdir: nothing of this project
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # paysim itself, not the tests package
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout
