"""Whole-folder replacement (spacy_dekd/files.py)."""
from spacy_dekd.files import replace_folder


def test_replace_folder_puts_the_new_folder_in_place_of_the_old(tmp_path):
    out = tmp_path / "model"
    new = tmp_path / "model.partial"
    new.mkdir()
    (new / "a.txt").write_text("new", encoding="utf8")
    replace_folder(new, out)  # nothing there before
    assert (out / "a.txt").read_text(encoding="utf8") == "new" and not new.exists()
    again = tmp_path / "model.partial"
    again.mkdir()
    (again / "b.txt").write_text("newer", encoding="utf8")
    replace_folder(again, out)  # the old folder goes, none of its files stay
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
