"""The evidence document still tells the truth: ``showboat verify`` re-runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "evidence" / "pi-chat-page.md"
BIN = Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_evidence_document_verifies(tmp_path: Path) -> None:
    assert DOCUMENT.exists(), "build it with evidence/build.sh"
    text = DOCUMENT.read_text()
    images = re.findall(r"^!\[[^\]]*\]\(([^)/]+\.png)\)$", text, re.MULTILINE)
    assert len(images) >= 5
    for image in images:
        assert (DOCUMENT.parent / image).stat().st_size > 10_000, image

    env = dict(os.environ, PIBRIDGE_EVIDENCE_RUN=str(tmp_path / "run"))
    try:
        verified = subprocess.run(
            [str(BIN / "showboat"), "verify", str(DOCUMENT)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    finally:
        subprocess.run(
            [sys.executable, "evidence/demo.py", "down"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert verified.returncode == 0, verified.stdout + verified.stderr
