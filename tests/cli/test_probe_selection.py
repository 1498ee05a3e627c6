"""scripts/probe_selection.py: what the selectors pick from a pool of copies."""
import subprocess
import sys
from pathlib import Path

from ..conftest import toy_rows

REPO = Path(__file__).parent.parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from probe_selection import near_duplicate_share  # noqa: E402


def test_near_duplicate_share_counts_texts_with_a_close_copy():
    texts = ["a good film", "a good movie", "a good film indeed", "terrible acting throughout"]
    # Jaccard: 1-2 2/4, 1-3 3/4, 2-3 2/5; the fourth shares nothing.
    assert near_duplicate_share(texts, 0.5) == 0.75
    assert near_duplicate_share(texts, 0.8) == 0.0


def test_the_probe_finds_fewer_copies_among_diverse_picks(models, tmp_path):
    pool = tmp_path / "pool.txt"
    lines = [row["text"] for row in toy_rows(50, seed=9)]
    pool.write_text("".join(line + "\n" for line in lines * 4), encoding="utf8")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "probe_selection.py"), str(models["teacher"]), str(pool),
         "--k", "12", "--sample", "200", "--prefilters", "4", "--overlap", "1"],
        capture_output=True, text=True, check=True,
    )
    rows = {line[:24].strip(): line[24:].split() for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"entropy", "diverse, prefilter 4", "random"}
    # Four copies of each text (toy texts share words, so only the same word
    # set counts): entropy picks copies of a few texts; diverse, 12 texts.
    assert float(rows["entropy"][0]) == 1.0
    assert float(rows["diverse, prefilter 4"][0]) == 0.0
