"""Write the project's configs/ from the configs shipped in the package
(spacy_dekd/configs/): the two written by hand and every variant merged from
its override file in spacy_dekd/configs/variants/.
Run it after editing spacy_dekd/configs/; `tests/test_configs.py` checks
that configs/ matches.

    python scripts/make_configs.py
"""
import sys
from pathlib import Path

from spacy_dekd.configs import config_text, names

CONFIGS = Path(__file__).parent.parent / "configs"


def main() -> int:
    for name in names():
        (CONFIGS / f"{name}.cfg").write_text(config_text(name), encoding="utf8")
        print(f"✔ configs/{name}.cfg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
