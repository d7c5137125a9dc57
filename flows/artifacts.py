"""A report as Prefect artifacts: its markdown, and each figure as an image artifact the UI shows inline.

Prefect stores an image artifact as a URL. A run's figures are files on the machine that ran it, which the
Prefect UI (in a browser elsewhere) cannot open, so each PNG travels inside its URL as ``data:image/png;base64``
(tens of kB per figure). Every artifact of one report shares the key's stem: ``KEY`` for the markdown and
``KEY-FIGURE`` for each figure, so a scheduled job's reports line up run after run in the Artifacts page.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from prefect.artifacts import create_image_artifact, create_markdown_artifact

#: Figures above this size are linked by path instead of embedded (the artifact lives in Prefect's database).
MAX_EMBEDDED_BYTES = 2 * 2**20


def artifact_key(*parts: str) -> str:
    """Prefect's artifact keys allow lowercase letters, digits and dashes only: 'ntkdist', 'My_Run' → 'ntkdist-my-run'."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def png_data_url(path: str | Path) -> str:
    """The PNG at ``path`` as a ``data:`` URL."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def publish_report(key: str, markdown: str, figures: dict[str, str], description: str) -> dict[str, str]:
    """Create the markdown artifact ``key`` and one image artifact ``key-NAME`` per PNG figure; their keys."""
    create_markdown_artifact(markdown=markdown, key=key, description=description)
    keys = {"markdown": key}
    for name, path in figures.items():
        path = Path(path)
        if path.suffix.lower() != ".png" or not path.is_file():
            continue
        figure_key = artifact_key(key, name)
        url = png_data_url(path) if path.stat().st_size <= MAX_EMBEDDED_BYTES else path.resolve().as_uri()
        create_image_artifact(image_url=url, key=figure_key, description=f"{description}: {name} ({path.name})")
        keys[name] = figure_key
    return keys
