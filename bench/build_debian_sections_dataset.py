"""Build the ``debian-sections`` dataset: real one-line package descriptions → the archive section they are filed in.

Source: the binary package index of Debian 12 "bookworm" (main, amd64) that apt keeps on every Debian
machine (``/var/lib/apt/lists/*_bookworm_main_binary-amd64_Packages*``; this project's machines carry the
2025-05-20 snapshot). Each package's ``Description`` line is a short text written by its maintainer
("Contacts manager for GNOME", "fetching, filtering and delivering emails"); its ``Section`` is the
label ("gnome", "mail"). The task is the one a software search box routes: which part of the archive is
this about. It is noisy the way real labels are: ``utils``, ``admin``, ``misc`` and ``net`` overlap, and
maintainers file similar packages differently.

Construction (deterministic):
- 18 topical sections are kept (``SECTIONS``); sections that a description's wording gives away by
  convention are left out (``libs``/``libdevel``/``doc``/``debug``, the per-language sections such as
  ``python`` or ``rust``, ``localization``);
- transitional and dummy packages are dropped; a description found in two sections is dropped (its label is
  ambiguous); identical descriptions within a section are kept once;
- at most ``PER_SOURCE`` descriptions per source package (one source often builds a dozen near-identical
  binaries) and at most ``PER_CLASS`` rows per section;
- the split is **by source package** (a hash of its name with a fixed seed: 60/20/20), so the binaries of
  one source never sit on both sides of a split.

The committed CSVs under ``corpora/debian-sections`` are this script's output::

    python -m bench.build_debian_sections_dataset --out corpora/debian-sections
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import lzma
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from bench.corpus_files import write_splits

SECTIONS = (
    "admin",
    "database",
    "devel",
    "editors",
    "fonts",
    "games",
    "gnome",
    "graphics",
    "kde",
    "mail",
    "math",
    "misc",
    "net",
    "science",
    "sound",
    "text",
    "utils",
    "web",
)
PER_SOURCE = 3
PER_CLASS = 600
SEED = 20261203
APT_LISTS = Path("/var/lib/apt/lists")
INDEX_GLOB = "*_bookworm_main_binary-amd64_Packages*"
DROPPED_WORDS = ("transitional", "dummy package")


def read_index(path: Path) -> str:
    """The text of a Packages index: plain, .gz, .xz, or .lz4 (apt's own format, read with apt-helper)."""
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    if path.suffix == ".lz4":
        helper = "/usr/lib/apt/apt-helper"
        return subprocess.run([helper, "cat-file", str(path)], check=True, capture_output=True).stdout.decode(
            "utf-8", errors="replace"
        )
    return path.read_text(encoding="utf-8", errors="replace")


def parse_packages(index: str) -> list[dict[str, str]]:
    """Stanzas of a Debian Packages index → their single-line fields (continuation lines skipped)."""
    records = []
    for stanza in index.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if not line or line[0] in " \t" or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key] = value.strip()
        if "Package" in fields:
            records.append(fields)
    return records


def split_of(source: str) -> str:
    bucket = int(hashlib.sha256(f"{SEED}:{source}".encode()).hexdigest(), 16) % 100
    return "train" if bucket < 60 else "eval" if bucket < 80 else "test"


def collect(records: list[dict[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Section → [(description, source package)], cleaned as the module docstring says."""
    sections_of_text: dict[str, set[str]] = defaultdict(set)
    rows: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)  # section → lowercase text → (text, source)
    for record in sorted(records, key=lambda r: r["Package"]):
        section = record.get("Section", "").rpartition("/")[2]
        text = " ".join(record.get("Description", "").split())
        if not text or any(word in text.lower() for word in DROPPED_WORDS):
            continue
        sections_of_text[text.lower()].add(section)
        if section in SECTIONS:
            source = record.get("Source", record["Package"]).split()[0]
            rows[section].setdefault(text.lower(), (text, source))
    kept: dict[str, list[tuple[str, str]]] = {}
    for section in SECTIONS:
        by_source: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for key, (text, source) in sorted(rows[section].items()):
            if len(sections_of_text[key]) == 1:
                by_source[source].append((text, source))
        kept[section] = [row for source in sorted(by_source) for row in by_source[source][:PER_SOURCE]]
    return kept


def build(index_path: Path, out_dir: Path) -> dict[str, int]:
    by_section = collect(parse_packages(read_index(index_path)))
    if not any(by_section.values()):
        raise SystemExit(f"error: {index_path} holds no packages of the sections {', '.join(SECTIONS)}")
    rng = random.Random(SEED)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "eval": [], "test": []}
    for section in SECTIONS:
        rows = list(by_section[section])
        rng.shuffle(rows)
        for text, source in rows[:PER_CLASS]:
            splits[split_of(source)].append((text, section))
    return write_splits(out_dir, splits, rng)


def find_index() -> Path:
    found = sorted(APT_LISTS.glob(INDEX_GLOB))
    if not found:
        raise SystemExit(f"error: no {INDEX_GLOB} under {APT_LISTS}; pass --packages PATH (a Debian Packages index)")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=Path, default=None, help="a Packages index (default: apt's bookworm list)")
    parser.add_argument("--out", type=Path, default=Path("corpora/debian-sections"))
    args = parser.parse_args(argv)
    index = args.packages or find_index()
    counts = build(index, args.out)
    print(f"wrote {args.out} from {index}: " + ", ".join(f"{split} {count}" for split, count in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
