"""The built wheel carries the gin files and the package data, not only the source tree."""

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_ships_every_gin_file(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("gqa_t5-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"gqa_t5/gin/{p.relative_to(ROOT / 'gin')}" for p in (ROOT / "gin").rglob("*.gin")}
    assert expected and expected <= names
    assert "tasks/__init__.py" in names and "gqa_t5/network.py" in names
