"""kernel-metadata.json and dataset-metadata.json, read as the kaggle client reads them.

Whatever ``kaggle kernels push -p`` and ``kaggle datasets create -p`` accept, guie accepts with
the same meaning, and what they refuse guie refuses in one line before running anything. The
rules, from kaggle 2.x ``kaggle/api/kaggle_api_extended.py``:

- Both files are JSON objects read as UTF-8 with ``json.load``: a byte-order mark is refused
  ("Unexpected UTF-8 BOM"). The dataset's file may also carry the older name ``datapackage.json``
  (``get_dataset_metadata_file``).
- Booleans (``get_bool``): a JSON boolean, or the string ``"true"``/``"false"`` in any case (as
  ``kaggle kernels init`` writes them); anything else is refused. Absent: ``is_private`` true,
  ``enable_gpu``/``enable_tpu`` false, ``enable_internet`` **true**.
- Source lists: JSON lists of strings. A string is refused (the client walks it character by
  character, so ``"owner/slug"`` fails as ``"o"``); ``null`` is refused except for
  ``competition_sources`` (the request then carries none). ``competition_sources`` entries go to
  the server unchecked, as ``SLUG`` or as ``c/SLUG``, the form Kaggle's server returns and
  ``kaggle kernels pull -m`` writes; both name competition SLUG (:meth:`KernelMetadata.attaches_competition`). Dataset sources are ``owner/slug``
  or ``owner/slug/version`` (``validate_dataset_string``); kernel sources ``owner/slug[/version]``
  with a slug of at least 5 characters (``validate_kernel_string``); model sources
  ``owner/model/framework/instance/version`` (``validate_model_instance_version_string``).
- Kernel: ``id`` is ``owner/slug`` or a bare ``slug`` (the client adds the user name), never with a
  version, or absent when ``id_no`` is given; ``title`` (optional) at least 5 characters;
  ``code_file`` names a file in the folder; ``language`` python, r or rmarkdown; ``kernel_type``
  script or notebook (``kernels_push``).
- Dataset (``dataset_create_new``, the stricter of create and version): ``id`` ``owner/slug``
  (a third part is ignored), ``title``, and exactly one licence with a ``name``; slug and title
  6 to 50 characters; a subtitle, when given, 20 to 80.

What the client lets through but Kaggle's server or notebook URL would not like (a title over 50
characters, one that does not slugify to the notebook's slug, an unknown licence name) is
returned as a warning, not refused.
"""
from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slugify import slugify

from guie.artifacts import (
    DATASET_DIR,
    DATASET_METADATA,
    DATASET_METADATA_NAMES,
    KERNEL_DIR,
    KERNEL_METADATA,
)
from guie.errors import GuieError
from guie.ship.kaggle_ids import (
    DATASET_SLUG_LEN,
    DATASET_SUBTITLE_LEN,
    DATASET_TITLE_LEN,
    KERNEL_TITLE_LEN,
    LICENSES,
    KaggleRef,
)

LANGUAGES = ("python", "r", "rmarkdown")
KERNEL_TYPES = ("script", "notebook")
BOOL_DEFAULTS = {"is_private": True, "enable_gpu": False, "enable_tpu": False, "enable_internet": True}


@dataclass(frozen=True)
class KernelMetadata:
    """kernel-metadata.json with every value as the client would send it."""

    path: Path
    id: str | None
    title: str | None
    code_file: str
    language: str
    kernel_type: str
    is_private: bool
    enable_gpu: bool
    enable_tpu: bool
    enable_internet: bool
    dataset_sources: list[str]
    competition_sources: list[str]
    kernel_sources: list[str]
    model_sources: list[str]
    warnings: list[str] = field(default_factory=list)
    id_no: Any = None

    @property
    def name(self) -> str:
        """The notebook as the client names it: ``owner/slug``, a bare slug, or its id_no."""
        return self.id or f"id_no {self.id_no}"

    def attaches(self, dataset: KaggleRef) -> bool:
        """Whether ``dataset_sources`` attaches ``dataset`` (any version of it)."""
        wanted = [dataset.owner.lower(), dataset.slug.lower()]
        return any(s.lower().split("/")[:2] == wanted for s in self.dataset_sources)

    @property
    def competitions(self) -> list[str]:
        """The competition slugs ``competition_sources`` attaches: ``c/SLUG`` and ``SLUG`` both name SLUG."""
        return [competition_slug(s) for s in self.competition_sources]

    def attaches_competition(self, slug: str) -> bool:
        """Whether ``competition_sources`` attaches competition ``slug`` (as ``slug`` or ``c/slug``)."""
        return slug.lower() in (c.lower() for c in self.competitions)


COMPETITION_PREFIX = "c/"  # how Kaggle's server (and so ``kaggle kernels pull -m``) writes a competition source


def competition_slug(source: str) -> str:
    """The competition a ``competition_sources`` entry names: ``c/google-universal-image-embedding`` and
    ``google-universal-image-embedding`` both give ``google-universal-image-embedding``."""
    source = source.strip()
    return source[len(COMPETITION_PREFIX):] if source.lower().startswith(COMPETITION_PREFIX) else source


@dataclass(frozen=True)
class DatasetMetadata:
    """dataset-metadata.json (or datapackage.json): the values ``dataset_create_new`` reads."""

    path: Path
    ref: KaggleRef
    title: str
    license: str
    subtitle: str | None
    warnings: list[str] = field(default_factory=list)


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, refused as the client's ``json.load`` would refuse it."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        raise GuieError(f"{str(path)!r} starts with a byte-order mark, which the kaggle client cannot read "
                        "('Unexpected UTF-8 BOM'); save it as UTF-8 without one")
    try:
        meta = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise GuieError(f"{str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); the kaggle client "
                        "reads it as UTF-8") from None
    except ValueError as exc:
        raise GuieError(f"{str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise GuieError(f"{str(path)!r} holds a JSON {type(meta).__name__}, not an object of settings")
    return meta


def read_bool(meta: dict[str, Any], key: str, where: str) -> bool:
    """``get_bool``: true/false as JSON booleans or strings in any case; the client's default when absent."""
    if key not in meta:
        return BOOL_DEFAULTS[key]
    value = meta[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise GuieError(f"{where} {key} is {json.dumps(value)}; the kaggle client reads only true or false "
                    "(JSON booleans, or the strings \"true\" and \"false\")")


def _check_dataset_source(source: str) -> str | None:
    if source:
        parts = source.split("/")
        if "/" not in source:
            return "must be OWNER/SLUG"
        if not parts[0] or not parts[1] or len(parts) > 3:
            return "must be OWNER/SLUG or OWNER/SLUG/VERSION"
    return None


def _check_kernel_source(source: str) -> str | None:
    if source:
        parts = source.split("/")
        if "/" not in source or len(parts) > 3 or not parts[0] or not parts[1]:
            return "must be OWNER/SLUG or OWNER/SLUG/VERSION"
        if len(parts[1]) < 5:
            return "has a slug shorter than five characters"
        if len(parts) == 3 and not parts[2]:
            return "has an empty version"
    return None


def _check_model_source(source: str) -> str | None:
    if source:
        parts = source.split("/")
        if source.count("/") != 4:
            return "must be OWNER/MODEL/FRAMEWORK/INSTANCE/VERSION"
        if not all(parts):
            return "has an empty part"
        try:
            int(parts[4])
        except ValueError:
            return "has a version that is not a number"
    return None


_SOURCE_RULES = {"dataset_sources": _check_dataset_source, "kernel_sources": _check_kernel_source,
                 "model_sources": _check_model_source, "competition_sources": lambda s: None}


def read_sources(meta: dict[str, Any], key: str, where: str) -> list[str]:
    """A source list as the client sends it: absent is empty; a list of strings, each in the client's form."""
    value = meta.get(key, [])
    if value is None and key == "competition_sources":
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        shown = json.dumps(value)
        hint = f'; write it as a list: ["{value}"]' if isinstance(value, str) else ""
        raise GuieError(f"{where} {key} is {shown if len(shown) <= 80 else shown[:80] + '...'}; the kaggle client "
                        f"needs a list of strings{hint}")
    for source in value:
        problem = _SOURCE_RULES[key](source)
        if problem:
            raise GuieError(f"{where} {key} entry {source!r} {problem}, as the kaggle client requires")
    return list(value)


def _string(meta: dict[str, Any], key: str, where: str, default: Any = None) -> Any:
    value = meta.get(key, default)
    if value is not None and not isinstance(value, str):
        raise GuieError(f"{where} {key} is {json.dumps(value)}; the kaggle client needs a string")
    return value


def read_kernel_metadata(folder: Path) -> KernelMetadata:
    """``folder/kernel-metadata.json`` checked and read as ``kaggle kernels push -p folder`` reads it."""
    path = folder / KERNEL_METADATA
    if not path.is_file():
        raise GuieError(f"{str(path)!r} is missing; build the folders with guie-package first")
    where = KERNEL_METADATA
    meta = read_json_object(path)
    warnings: list[str] = []

    title = _string(meta, "title", where)
    if title and len(title) < KERNEL_TITLE_LEN[0]:
        raise GuieError(f"{where} title {title!r} is {len(title)} characters; the kaggle client needs at least "
                        f"{KERNEL_TITLE_LEN[0]}")
    code_file = _string(meta, "code_file", where, "")
    if not code_file:
        raise GuieError(f"{where} names no code_file; the kaggle client needs the notebook's file name")
    if not (folder / code_file).is_file():
        raise GuieError(f"the notebook {str(folder / code_file)!r} named by {where} is missing")

    kernel_id, id_no = _string(meta, "id", where), meta.get("id_no")
    if not kernel_id and not id_no:
        raise GuieError(f"{where} has neither id nor id_no; the kaggle client needs OWNER/SLUG in id")
    slug = None
    if kernel_id:
        parts = kernel_id.split("/")
        if "/" in kernel_id:
            problem = _check_kernel_source(kernel_id)
            if problem:
                raise GuieError(f"{where} id {kernel_id!r} {problem}, as the kaggle client requires")
            if len(parts) == 3:
                raise GuieError(f"{where} id {kernel_id!r} carries a version; the kaggle client refuses one there")
        slug = parts[1] if len(parts) > 1 else parts[0]
    if title and slug and slugify(title) != slug.lower():
        warnings.append(f"the notebook title {title!r} gives the URL slug {slugify(title)!r}, not {slug!r}: "
                        "Kaggle will file the notebook under the title's slug")
    if title and len(title) > KERNEL_TITLE_LEN[1]:
        warnings.append(f"the notebook title is {len(title)} characters; Kaggle's server refuses titles over "
                        f"{KERNEL_TITLE_LEN[1]} (with a misleading error)")

    language, kernel_type = _string(meta, "language", where, ""), _string(meta, "kernel_type", where, "")
    if language not in LANGUAGES:
        raise GuieError(f"{where} language {language!r} is not one the kaggle client accepts: {', '.join(LANGUAGES)}")
    if kernel_type not in KERNEL_TYPES:
        raise GuieError(f"{where} kernel_type {kernel_type!r} is not one the kaggle client accepts: "
                        f"{', '.join(KERNEL_TYPES)}")

    values = {key: read_bool(meta, key, where) for key in BOOL_DEFAULTS}
    sources = {key: read_sources(meta, key, where) for key in _SOURCE_RULES}
    return KernelMetadata(path, kernel_id, title, code_file, language, kernel_type, **values, **sources,
                          warnings=warnings, id_no=id_no)


def dataset_metadata_path(folder: Path) -> Path:
    """dataset-metadata.json, else the older datapackage.json, as the client looks for them."""
    for name in DATASET_METADATA_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise GuieError(f"{str(folder / DATASET_METADATA)!r} is missing; build the folders with guie-package first")


def _check_length(where: str, what: str, value: str, bounds: tuple[int, int]) -> None:
    lo, hi = bounds
    if not lo <= len(value) <= hi:
        raise GuieError(f"{where} {what} {value!r} is {len(value)} characters; the kaggle client needs {lo} to {hi}")


def read_dataset_metadata(folder: Path) -> DatasetMetadata:
    """``folder``'s dataset metadata checked and read as ``kaggle datasets create -p folder`` reads it."""
    path = dataset_metadata_path(folder)
    where = path.name
    meta = read_json_object(path)
    ref = _string(meta, "id", where)
    if not ref:
        raise GuieError(f"{where} has no id; Kaggle needs OWNER/SLUG there to create the dataset and mount it "
                        "at /kaggle/input/SLUG")
    parts = ref.split("/")
    if "/" not in ref or not parts[0] or not parts[1] or len(parts) > 3:
        raise GuieError(f"{where} id {ref!r} must be OWNER/SLUG, as the kaggle client requires")
    warnings = [f"{where} id {ref!r} carries a version ({parts[2]}), which the client ignores"] if len(parts) == 3 else []
    _check_length(where, "slug", parts[1], DATASET_SLUG_LEN)
    title = _string(meta, "title", where)
    if title is None:
        raise GuieError(f"{where} has no title; the kaggle client needs one")
    _check_length(where, "title", title, DATASET_TITLE_LEN)
    subtitle = _string(meta, "subtitle", where)
    if subtitle:
        _check_length(where, "subtitle", subtitle, DATASET_SUBTITLE_LEN)
    licenses = meta.get("licenses")
    if not isinstance(licenses, list) or len(licenses) != 1 or not isinstance(licenses[0], dict) \
            or not isinstance(licenses[0].get("name"), str):
        raise GuieError(f"{where} needs exactly one licence, as [{{\"name\": \"...\"}}]; found "
                        f"{json.dumps(licenses)}")
    license_name = licenses[0]["name"]
    if license_name.lower() not in {known.lower() for known in LICENSES}:
        warnings.append(f"{where} licence {license_name!r} is not one Kaggle lists; its server may refuse it")
    return DatasetMetadata(path, KaggleRef(parts[0], parts[1]), title, license_name, subtitle, warnings)


@dataclass(frozen=True)
class Build:
    """A guie-package BUILD folder: the two Kaggle folders and their metadata."""

    dataset_dir: Path
    kernel_dir: Path
    dataset: DatasetMetadata
    kernel: KernelMetadata

    @property
    def warnings(self) -> list[str]:
        return self.dataset.warnings + self.kernel.warnings


def read_build(build: Path) -> Build:
    """BUILD/dataset and BUILD/kernel read as the client reads them, plus what a competition notebook needs:
    the model dataset attached and internet off. Checked again on every use: they may have been edited."""
    dataset_dir, kernel_dir = build / DATASET_DIR, build / KERNEL_DIR
    dataset, kernel = read_dataset_metadata(dataset_dir), read_kernel_metadata(kernel_dir)
    if not kernel.attaches(dataset.ref):
        raise GuieError(f"{KERNEL_METADATA} dataset_sources {kernel.dataset_sources} lacks the model dataset "
                        f"{dataset.ref}; rebuild the folders with guie-package")
    if kernel.enable_internet:
        raise GuieError(f"{KERNEL_METADATA} must set enable_internet to false (the competition runs offline; "
                        "when it is absent the client's default is true)")
    return Build(dataset_dir, kernel_dir, dataset, kernel)
