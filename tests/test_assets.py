"""The asset script fails cleanly when the registry is out of reach."""
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "fetch_assets.py"


def test_offline_fails_with_one_line_and_writes_nothing(tmp_path):
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "empty")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dest", str(tmp_path / "assets"), "--only", "movies"],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "vaderSentiment==3.3.2" in lines[0] and "offline" in lines[0]
    assert not (tmp_path / "assets" / "movies").exists()
    assert [p.name for p in (tmp_path / "assets").iterdir()] == [".downloads"]


def test_a_corrupt_cached_archive_is_not_used(tmp_path):
    cache = tmp_path / "assets" / ".downloads"
    cache.mkdir(parents=True)
    (cache / "vaderSentiment-3.3.2.tar.gz").write_bytes(b"corrupt")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "empty")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dest", str(tmp_path / "assets"), "--only", "movies"],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 1
    assert not (cache / "vaderSentiment-3.3.2.tar.gz").exists()  # dropped, not trusted
