"""The installed package: the twistd plugin is found, and the console scripts run."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_twistd_lists_pibridge_after_a_real_install(tmp_path: Path) -> None:
    """Build a wheel, install it into a clean environment, run ``twistd --help`` elsewhere.

    The clean environment sees the test environment's dependencies through a
    ``.pth`` line but not its editable pibridge, so only the wheel can provide
    the plugin: a packaging mistake (a missing ``twisted/plugins`` file, an
    ``__init__.py`` shadowing Twisted's) fails here although pytest runs from
    the repository root.
    """
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    [wheel] = wheels.glob("pibridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/pibridge_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "pibridge/agent/workspace_guard.js" in names, "pi refuses to start without its guard"

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    dependencies = sysconfig.get_paths()["purelib"]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), dependencies]))
    script = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, "--help"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "pibridge" in result.stdout
    found = subprocess.run(
        [sys.executable, "-S", "-c", "import pibridge; print(pibridge.__file__)"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert found.stdout.startswith(str(site)), "the wheel, not the checkout, must be tested"


def test_attach_command_has_real_help() -> None:
    attach = Path(sys.executable).with_name("pibridge-attach")
    result = subprocess.run([str(attach), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "usage: pibridge-attach" in result.stdout
    assert "--relay" in result.stdout
