"""Pair images with masks (or image volumes with label volumes) by rules beyond a shared name.

Three rules, shared by the folder and the volume datasets:

* ``pair_by="pattern"``: an image pattern and a mask pattern that each hold the shared id, as a
  template (``{id}_training`` / ``{id}_manual1``) or a regular expression with a named group
  ``id`` (``(?P<id>\\d+)_training``). A pattern matches a file's whole name without its
  extension (or, if it holds a dot, the whole file name).
* a manifest (``pairs=<file.csv|file.json>``): one row per pair, ``image``, ``mask`` (or
  ``label``) and an optional ``split``; relative paths resolve against the manifest's folder.
  A json is a list of such objects, or a Medical Segmentation Decathlon ``dataset.json``
  (``training: [{image, label}]``, its ``labels`` naming the classes).
* the shared name, with role suffixes (the datasets' own rule).

:func:`format_pairing` prints the pairing used, first rows and counts, so a wrong rule shows
before any training.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtune.data.sample import DataError

PAIR_BY = ("name", "pattern")
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "tr": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
TABLE_ROWS = 5


@dataclass(frozen=True)
class PairRow:
    """One pair: the shared id, the image file(s), the mask file(s), and the split if known."""

    id: str
    image: Path
    mask: Path
    split: str | None = None
    extra_images: tuple[Path, ...] = ()
    extra_masks: tuple[Path, ...] = ()


@dataclass
class Pairing:
    """How a dataset paired its files: the rule in words, the pairs, and the files left out."""

    rule: str
    rows: list[PairRow] = field(default_factory=list)
    unpaired: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For the check report: rule, counts and the first rows."""
        return {
            "rule": self.rule,
            "pairs": len(self.rows),
            "unpaired": self.unpaired,
            "first": [
                {"id": r.id, "image": str(r.image), "mask": str(r.mask), "split": r.split}
                for r in self.rows[:TABLE_ROWS]
            ],
        }


def check_pair_by(pair_by: str) -> str:
    """The ``pair_by`` value, checked.

    Raises:
        ValueError: not one of :data:`PAIR_BY`.
    """
    if pair_by not in PAIR_BY:
        raise ValueError(f"data.pair_by must be one of {PAIR_BY}, got {pair_by!r}")
    return pair_by


def compile_pattern(pattern: str, key: str) -> re.Pattern[str]:
    """A template (``{id}_training``) or a regex with a group ``(?P<id>...)`` as a regex.

    Raises:
        ValueError: ``pattern`` is empty, holds neither ``{id}`` nor a group named ``id``, or is
            not a valid regular expression; the message names ``key``.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{key} must be a pattern such as '{{id}}_training', got {pattern!r}")
    if "(?P<id>" in pattern:
        try:
            return re.compile(pattern)
        except re.error as err:
            raise ValueError(
                f"{key}={pattern!r} is not a valid regular expression: {err}"
            ) from None
    if "{id}" not in pattern:
        raise ValueError(
            f"{key}={pattern!r} must hold the shared id as {{id}} (e.g. '{{id}}_manual1') or as "
            "a regular expression group (?P<id>...)"
        )
    return _template_regex(pattern)


def _template_regex(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in pattern.split("{id}")]
    body = parts[0] + "(?P<id>.+)" + parts[1] + "".join("(?P=id)" + p for p in parts[2:])
    return re.compile(body)


def match_id(regex: re.Pattern[str], path: Path, stem: Callable[[Path], str]) -> str | None:
    """The id ``regex`` finds in the file's name without extension (or in its whole name)."""
    for name in (stem(path), path.name):
        found = regex.fullmatch(name)
        if found:
            return found.group("id")
    return None


def pair_by_pattern(
    images: Sequence[Path],
    masks: Sequence[Path],
    *,
    image_pattern: str,
    mask_pattern: str,
    stem: Callable[[Path], str] = lambda p: p.stem,
    mask_word: str = "mask",
) -> tuple[list[PairRow], list[tuple[str, str]]]:
    """Pair files whose names match the two patterns with the same id.

    Files matching neither pattern are passed over (so images and masks may share a folder);
    a file matching the image pattern without a mask of its id (or the reverse), and two files
    of one id and role, are problems.

    Returns:
        ``(rows sorted by id, problems)``; ``problems`` holds ``(file, message)``.

    Raises:
        ValueError: a bad pattern (see :func:`compile_pattern`).
        DataError: no file matches the image pattern, or none of the others matches the mask
            pattern (naming the folders and the pattern).
    """
    image_re = compile_pattern(image_pattern, "data.image_pattern")
    mask_re = compile_pattern(mask_pattern, f"data.{mask_word}_pattern")
    problems: list[tuple[str, str]] = []

    def by_id(files: Iterable[Path], regex: re.Pattern[str], role: str, skip: set[Path]):
        found: dict[str, Path] = {}
        twice: set[str] = set()
        for path in files:
            if path in skip:
                continue
            key = match_id(regex, path, stem)
            if key is None:
                continue
            if key in found:
                twice.add(key)
                problems.append(
                    (str(path), f"{path}: {found[key].name} and {path.name} are both the {role} "
                     f"of id {key!r} ({role} pattern {regex.pattern!r})")
                )  # fmt: skip
                continue
            found[key] = path
        return {k: v for k, v in found.items() if k not in twice}

    by_image = by_id(images, image_re, "image", set())
    by_mask = by_id(masks, mask_re, mask_word, set(by_image.values()))
    if not by_image:
        folders = sorted({str(p.parent) for p in images})
        raise DataError(
            f"{', '.join(folders) or 'the image folder'}: no file name matches "
            f"data.image_pattern={image_pattern!r}"
            + (f" (names there: {', '.join(p.name for p in list(images)[:3])})" if images else "")
        )
    if not by_mask:
        others = [p for p in masks if p not in set(by_image.values())]
        folders = sorted({str(p.parent) for p in others or masks})
        raise DataError(
            f"{', '.join(folders) or f'the {mask_word} folder'}: no file name matches "
            f"data.{mask_word}_pattern={mask_pattern!r}"
            + (f" (names there: {', '.join(p.name for p in others[:3])})" if others else "")
        )
    for key, path in sorted(by_image.items()):
        if key not in by_mask:
            problems.append(
                (str(path), f"{path}: image of id {key!r} has no {mask_word}: no file matches "
                 f"data.{mask_word}_pattern={mask_pattern!r} with that id")
            )  # fmt: skip
    for key, path in sorted(by_mask.items()):
        if key not in by_image:
            problems.append(
                (str(path), f"{path}: {mask_word} of id {key!r} has no image: no file matches "
                 f"data.image_pattern={image_pattern!r} with that id")
            )  # fmt: skip
    rows = [
        PairRow(id=key, image=by_image[key], mask=by_mask[key])
        for key in sorted(by_image)
        if key in by_mask
    ]
    return rows, problems


def _split_of(value: Any, where: str) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    split = SPLIT_NAMES.get(str(value).strip().lower())
    if split is None:
        raise DataError(
            f"{where}: split {value!r} is not one of train, val, test (or training, valid, "
            "validation, testing)"
        )
    return split


def read_manifest(
    path: str | Path, *, stem: Callable[[Path], str] = lambda p: p.stem
) -> tuple[list[PairRow], list[tuple[str, str]], dict[int, str] | None]:
    """Read a pair manifest: a csv or json of ``image, mask|label[, split]`` rows, or MSD's
    ``dataset.json``.

    Relative paths resolve against the manifest's folder. A row whose file is missing is a
    problem (``(file, message)``, naming the manifest and the row) and is left out.

    Returns:
        ``(rows, problems, classes)``; ``classes`` is ``{value: name}`` from an MSD
        ``labels`` table (background left out), else None.

    Raises:
        DataError: the manifest is missing or unreadable, has no rows, or a row lacks its
            image or mask field (naming the manifest and the row).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pair manifest not found (data.pairs)")
    base = path.parent
    classes: dict[int, str] | None = None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: cannot read the pair manifest: {err}") from None
        if isinstance(data, dict) and "training" in data:
            entries = data["training"]
            labels = data.get("labels")
            if isinstance(labels, dict):
                classes = {int(k): str(v) for k, v in labels.items() if str(k) != "0"} or None
        elif isinstance(data, dict) and "pairs" in data:
            entries = data["pairs"]
        else:
            entries = data
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise DataError(
                f'{path}: expected a list of {{image, mask, split}} objects, a {{"pairs": [...]}} '
                'object or an MSD dataset.json with "training": [{image, label}]'
            )
    elif path.suffix.lower() in (".csv", ".tsv"):
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                sample = handle.read(4096)
                handle.seek(0)
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample else "excel"
                entries = [dict(row) for row in csv.DictReader(handle, dialect=dialect)]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{path}: cannot read the pair manifest: {err}") from None
    else:
        raise DataError(f"{path}: a pair manifest is a .csv or a .json file")
    if not entries:
        raise DataError(f"{path}: the pair manifest lists no pairs")
    rows: list[PairRow] = []
    problems: list[tuple[str, str]] = []
    seen: dict[Path, int] = {}
    for number, entry in enumerate(entries, start=1):
        entry = {str(k).strip().lower(): v for k, v in entry.items() if k is not None}
        where = f"{path}: row {number}"
        image = entry.get("image")
        mask = entry.get("mask", entry.get("label"))
        if not image or not mask:
            raise DataError(
                f"{where}: needs an image and a mask (or label) field, got {sorted(entry)}"
            )
        image_path, mask_path = ((base / str(v).strip()).resolve() for v in (image, mask))
        split = _split_of(entry.get("split"), where)
        missing = [p for p in (image_path, mask_path) if not p.exists()]
        if missing:
            problems.append((str(missing[0]), f"{where}: {missing[0]} does not exist"))
            continue
        if image_path in seen:
            problems.append(
                (str(image_path), f"{where}: {image_path} is listed again (first in row "
                 f"{seen[image_path]})")
            )  # fmt: skip
            continue
        seen[image_path] = number
        rows.append(PairRow(id=stem(image_path), image=image_path, mask=mask_path, split=split))
    return rows, problems, classes


def format_pairing(pairing: dict[str, Any] | None, *, split: str | None = None) -> list[str]:
    """The pairing table as printed lines: rule, counts, the first rows."""
    if not pairing:
        return []
    head = f"{split}: " if split else ""
    lines = [
        f"{head}pairing: {pairing['rule']}: {pairing['pairs']} pairs"
        + (f", {pairing['unpaired']} file(s) unpaired" if pairing.get("unpaired") else "")
    ]
    for row in pairing["first"]:
        split_note = f"  [{row['split']}]" if row.get("split") else ""
        lines.append(f"  {row['id']}: {row['image']}  <->  {row['mask']}{split_note}")
    if pairing["pairs"] > len(pairing["first"]):
        lines.append(f"  ... and {pairing['pairs'] - len(pairing['first'])} more")
    return lines
