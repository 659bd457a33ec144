"""README blocks that must equal generated files: the text between ``<!-- kdad:<tag> -->`` and
``<!-- /kdad:<tag> -->`` in README.md (``claims`` ↔ report/README_CLAIMS.md, ``table`` ↔
report/README_TABLE.md, ``offline-<part>-claims`` ↔ report/paper_offline/<part>/README_CLAIMS.md …), compared with surrounding blank lines and the staleness mark ignored."""

from __future__ import annotations

import re
from pathlib import Path

# the parts of the offline paper reproduction: one per config file, named by it
PARTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "config" / "paper_offline").glob("*.yaml"))
# tag → file under report/: the default run's, and each part's
BLOCKS = {"claims": "README_CLAIMS.md", "table": "README_TABLE.md",
          **{f"offline-{part}-{kind}": f"paper_offline/{part}/README_{kind.upper()}.md"
             for part in PARTS for kind in ("claims", "table")}}
STALE = re.compile(r"^(\*\*Stale: [^\n]*\*\*\n\n|- Stale: [^\n]*\n)", re.M)


def readme_block(text: str, tag: str) -> str | None:
    """The text between the tag's markers (None without them); two opening markers are an error."""
    opening, closing = f"<!-- kdad:{tag} -->", f"<!-- /kdad:{tag} -->"
    if opening not in text:
        return None
    if text.count(opening) != 1 or text.count(closing) != 1:
        raise AssertionError(f"README: markers {opening} … {closing} must appear exactly once each")
    start, end = text.index(opening) + len(opening), text.index(closing)
    if end < start:
        raise AssertionError(f"README: {closing} comes before {opening}")
    return text[start:end]


def normalise(text: str) -> str:
    """Blank lines around the block and the "Stale: …" mark (it changes with every code commit) removed."""
    text = STALE.sub("", text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def mismatches(readme: str, files: dict[str, str]) -> dict[str, str]:
    """``{tag: why}`` for every README block that differs from its generated file's text."""
    out = {}
    for tag, name in BLOCKS.items():
        block = readme_block(readme, tag)
        if block is None:
            continue
        if name not in files:
            out[tag] = f"report/{name} does not exist"
        elif normalise(block) != normalise(files[name]):
            out[tag] = f"README block kdad:{tag} differs from report/{name}; copy the file into the block"
    return out
