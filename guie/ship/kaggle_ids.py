"""Kaggle ids, slugs, titles and licences, checked by the rules the kaggle client and server apply.

Checked before any folder is written, so a later ``kaggle datasets create``/``kernels push``
never fails on them. Where each rule comes from (kaggle 2.2.5, ``kaggle/api/kaggle_api_extended.py``):

- ``OWNER/SLUG`` with both parts non-empty: ``validate_dataset_string``/``validate_kernel_string``;
  a third part is a version, which ``kernels_push`` refuses in a kernel id ("cannot contain a
  version") and which metadata ids must not carry (``dataset_create_new`` ignores it silently).
- Slug syntax (lowercase letters, digits, single inner hyphens; owners may also use underscores):
  ``_validate_slug_syntax``, the client's slug rule (it applies it to model slugs; dataset and
  notebook URLs follow the same form).
- Dataset slug and title 6 to 50 characters, subtitle 20 to 80, exactly one licence:
  ``dataset_create_new`` / ``dataset_create_version``.
- Licence names: the list in the client's docs/datasets_metadata.md (the server rejects others).
- Kernel slug at least 5 characters: ``validate_kernel_string``. Kernel title at least 5
  characters: ``kernels_push``; at most 50: longer titles fail at the server with a misleading
  HTTP 500 (Kaggle/kaggle-api PR #179, Kaggle/learntools PR #48). ``kernels_push`` warns when
  ``slugify(title)`` differs from the kernel slug; guie refuses instead.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from slugify import slugify

from guie.errors import GuieError

GUIE_COMPETITION = "google-universal-image-embedding"

_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_OWNER_RE = re.compile(r"^[a-z0-9]+(?:[_-][a-z0-9]+)*$")

DATASET_SLUG_LEN = (6, 50)
DATASET_TITLE_LEN = (6, 50)
DATASET_SUBTITLE_LEN = (20, 80)
KERNEL_SLUG_LEN = (5, 50)
KERNEL_TITLE_LEN = (5, 50)

# The licence names Kaggle accepts in dataset-metadata.json (kaggle client docs/datasets_metadata.md).
LICENSES = (
    "CC0-1.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "GPL-2.0", "ODbL-1.0", "DbCL-1.0",
    "copyright-authors", "other", "unknown", "CC-BY-4.0", "CC-BY-NC-4.0", "PDDL", "CC-BY-3.0",
    "CC-BY-3.0-IGO", "US-Government-Works", "CC-BY-NC-SA-3.0-IGO", "CDLA-Permissive-1.0",
    "CDLA-Sharing-1.0", "CC-BY-ND-4.0", "CC-BY-NC-ND-4.0", "ODC-BY-1.0", "LGPL-3.0", "AGPL-3.0",
    "FDL-1.3", "EU-ODP-Legal-Notice", "apache-2.0", "GPL-3.0",
)


@dataclass(frozen=True)
class KaggleRef:
    """``owner/slug`` of a Kaggle dataset or notebook."""

    owner: str
    slug: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.slug}"


def _check_length(what: str, value: str, bounds: tuple[int, int]) -> None:
    lo, hi = bounds
    if not lo <= len(value) <= hi:
        raise GuieError(f"{what} {value!r} is {len(value)} characters; Kaggle needs {lo} to {hi}")


def parse_ref(value: str, what: str, slug_len: tuple[int, int]) -> KaggleRef:
    """Split and check ``OWNER/SLUG``; ``what`` names the option in messages (e.g. ``--dataset``)."""
    parts = value.split("/")
    if len(parts) == 3 and all(parts):
        raise GuieError(f"{what} {value!r} carries a version ({parts[2]!r}); pass OWNER/SLUG without it")
    if len(parts) != 2 or not all(parts):
        raise GuieError(f"{what} {value!r} must be OWNER/SLUG, e.g. your-kaggle-name/guie-model")
    owner, slug = parts
    if not _OWNER_RE.match(owner):
        raise GuieError(f"{what} owner {owner!r} is not a Kaggle user name: lowercase letters, digits, "
                        "inner '-' or '_'")
    if not _SLUG_RE.match(slug):
        raise GuieError(f"{what} slug {slug!r} must be lowercase letters and digits with single inner "
                        f"hyphens (as Kaggle URLs are), e.g. {slugify(slug) or 'guie-model'!r}")
    _check_length(f"{what} slug", slug, slug_len)
    return KaggleRef(owner, slug)


def parse_dataset_id(value: str, what: str = "--dataset") -> KaggleRef:
    return parse_ref(value, what, DATASET_SLUG_LEN)


def parse_kernel_id(value: str, what: str = "--kernel") -> KaggleRef:
    return parse_ref(value, what, KERNEL_SLUG_LEN)


def title_from_slug(slug: str) -> str:
    """A readable title that slugifies back to ``slug``: 'guie-vit-h' -> 'Guie Vit H'."""
    return " ".join(word.capitalize() for word in slug.split("-"))


def check_dataset_title(title: str, what: str = "dataset title") -> str:
    _check_length(what, title, DATASET_TITLE_LEN)
    return title


def check_dataset_subtitle(subtitle: str, what: str = "dataset subtitle") -> str:
    _check_length(what, subtitle, DATASET_SUBTITLE_LEN)
    return subtitle


def check_kernel_title(title: str, kernel: KaggleRef, what: str = "notebook title") -> str:
    """Length 5-50 and ``slugify(title) == slug``: Kaggle derives the notebook URL from the title."""
    _check_length(what, title, KERNEL_TITLE_LEN)
    if slugify(title) != kernel.slug.lower():
        raise GuieError(f"{what} {title!r} gives the URL slug {slugify(title)!r}, not the notebook's "
                        f"{kernel.slug!r}; use a title such as {title_from_slug(kernel.slug)!r}")
    return title


def check_license(name: str) -> str:
    """The licence's canonical spelling (case is forgiven); unknown names are refused."""
    canonical = {known.lower(): known for known in LICENSES}
    if name.lower() in canonical:
        return canonical[name.lower()]
    close = [canonical[c] for c in difflib.get_close_matches(name.lower(), list(canonical), n=3, cutoff=0.5)]
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    raise GuieError(f"unknown Kaggle dataset licence {name!r}{hint}; known: {', '.join(LICENSES)}")


def check_licenses(licenses: list) -> str:
    """The one licence name of a metadata ``licenses`` list."""
    if not isinstance(licenses, list) or len(licenses) != 1 or not isinstance(licenses[0], dict) \
            or "name" not in licenses[0]:
        raise GuieError("dataset-metadata.json needs exactly one licence, as [{\"name\": \"...\"}]")
    return check_license(licenses[0]["name"])


def check_competition(slug: str) -> str:
    if not _SLUG_RE.match(slug):
        raise GuieError(f"--competition {slug!r} is not a competition slug (as in its URL), "
                        f"e.g. {GUIE_COMPETITION!r}")
    return slug
