"""deploy/basewatch.env.example and the README's configuration reference list every setting."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from core.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parent.parent.parent
NAMES = sorted(ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings))


def test_the_example_environment_file_has_every_setting() -> None:
    text = (ROOT / "deploy" / "basewatch.env.example").read_text()
    present = set(re.findall(r"^#?\s*(BASEWATCH_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert [n for n in NAMES if n not in present] == []
    assert sorted(present - set(NAMES)) == []  # nothing that is not a setting


def test_the_readme_configuration_reference_has_every_setting() -> None:
    text = (ROOT / "README.md").read_text()
    reference = text[text.index("## Configuration reference") :]
    missing = [n for n in NAMES if f"`{n}`" not in reference]
    assert missing == []
