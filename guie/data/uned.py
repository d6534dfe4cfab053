"""Adapter for ``uned:ROOT``: the Universal Embedding Dataset (UnED) as its hosts publish it.

UnED ("Towards Universal Image Embeddings", Ypsilantis et al., ICCV 2023; cmp.felk.cvut.cz/univ_emb,
github.com/nikosips/Universal-Image-Embeddings) gives eight public datasets fixed splits. Layout
read (the official README's ``data/`` folder)::

    ROOT/info_files/<domain>/<split>.json   [{"path": "<relative to images/>", "class_id": 12}, ...]
    ROOT/images/cars/car_ims/...            and the other image folders of IMAGE_FOLDERS

``info_files/`` is ``info_files.zip`` from the project page unpacked; ROOT may also be a folder up to
two levels above ``data/`` (e.g. the repository's folder). To keep the two folders elsewhere, make a
folder holding two links named ``info_files`` and ``images``.

Each domain (``cars, sop, inshop, inat, met, gldv2, food2k, rp2k``, the official names) is a guie
domain; labels are per domain (``Record.class_key``). Splits are ``train``, ``val``, ``test`` for every
domain, plus ``index`` (inshop, gldv2, met), ``small_index`` and the optional ``small_train`` (met):
each record's split is its info file's name. ``class_id`` is an integer or, for some query images,
a list of them (the image belongs to each class): the record's label is the first, and
``SourceData.label_sets`` holds the whole list. ``uned:ROOT:cars+sop`` reads only those domains (``+``,
not a comma, which separates guie-train's ``--eval`` specs).

RP2K's file names are Chinese; the official converter (``convert_to_tfrecord_from_file.py``) opens
a path that does not exist under a second name, with each character from U+0080 to U+FFFF written as
``#U`` and four lower-case hex digits (``#U00e9`` for ``é``): both forms are read (:func:`escaped_name`;
guie escapes the part below ``images/`` only, the converter the whole joined path).
Entries whose image is in neither form, and malformed entries, are skipped and counted.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from guie.data.layout import Layout, find_layout
from guie.data.listfiles import IMAGE_NOT_FOUND, read_json_list
from guie.data.records import Record, SourceData, register_source
from guie.errors import GuieError, did_you_mean

PREFIX = "uned"
DOMAIN_SEPARATOR = "+"  # uned:ROOT:cars+sop
# The official order (dataset_infos.DATASET_INFO's domain ids 0-7).
DOMAINS = ("cars", "sop", "inshop", "inat", "met", "gldv2", "food2k", "rp2k")
BASE_SPLITS = ("train", "val", "test")
DOMAIN_SPLITS: dict[str, tuple[str, ...]] = {
    **{d: BASE_SPLITS for d in DOMAINS},
    "inshop": (*BASE_SPLITS, "index"),
    "gldv2": (*BASE_SPLITS, "index"),
    "met": (*BASE_SPLITS, "index", "small_index", "small_train"),
}
OPTIONAL_SPLITS = frozenset({("met", "small_train")})  # in the dataset's table, used by no protocol
# Where each domain's images lie under images/ (the official README's tree).
IMAGE_FOLDERS = {
    "cars": "cars/car_ims", "sop": "sop/<super>_final", "inshop": "deepfashion/inshop/img",
    "inat": "inat/iNaturalist/train_val2018", "met": "met/{MET,test_met,test_noart,test_other}",
    "gldv2": "gldv2/images/{train,index,test}", "food2k": "food2k/Food2k_complete", "rp2k": "rp2k/all/{train,test}",
}
LAYOUTS = (Layout("UnED's data/ folder", {"info": "info_files/", "images": "images/"}),)
FETCH = ("download info_files.zip from cmp.felk.cvut.cz/univ_emb and unpack it beside images/ "
         "(the official README's data/ folder)")
NO_PATH = "entry without a path"
BAD_CLASS = "class_id is neither an integer nor a non-empty list of integers"


def escaped_name(path: str) -> str:
    """``path`` as the official converter retries it for RP2K: every character from U+0080 to U+FFFF
    written ``#U`` and its code in four lower-case hex digits (``é`` -> ``#U00e9``).

    The rule is the converter's ``str(p.encode('unicode-escape'))`` with ``\\u`` replaced by ``#U`` and
    ``\\x`` by ``#U00``. ASCII is kept; characters the converter mangles otherwise (beyond U+FFFF,
    control characters, backslashes; none occur in RP2K) are kept too.
    Example: ``可口可乐`` -> ``#U53ef#U53e3#U53ef#U4e50``.
    """
    out = []
    for ch in path:
        code = ord(ch)
        if 0x80 <= code < 0x10000:
            out.append(f"#U{code:04x}")  # the same as #U00 + two digits below U+0100
        else:
            out.append(ch)
    return "".join(out)


def image_path(image_root: str, rel: str, domain: str) -> str | None:
    """The file of info-file path ``rel`` under ``image_root``: as written, else (RP2K only) its
    :func:`escaped_name`; None when neither exists."""
    path = f"{image_root}/{rel}"  # a string join: pathlib's is several times slower per entry (GLDv2: 2.3M)
    if os.path.isfile(path):
        return path
    if domain == "rp2k":
        escaped = f"{image_root}/{escaped_name(rel)}"
        if escaped != path and os.path.isfile(escaped):
            return escaped
    return None


def parse_root(text: str) -> tuple[str, tuple[str, ...]]:
    """``ROOT`` or ``ROOT:cars+sop`` as (ROOT, the domains to read, in the official order).

    A ROOT that exists as given keeps any colon it holds, and so does one whose last part holds more than
    letters, digits and ``+`` (``C:\\data``). Raises GuieError for an unknown domain name.
    """
    root, _, tail = text.rpartition(":")
    if os.path.isdir(text) or not root or not re.fullmatch(r"[\w+ ]+", tail):
        return text, DOMAINS
    names = [n.strip() for n in tail.split(DOMAIN_SEPARATOR)]
    for name in names:
        if name not in DOMAINS:
            raise GuieError(f"'{PREFIX}:{text}' names no UnED domain {name!r}{did_you_mean(name, DOMAINS)}; the domains are "
                            f"{', '.join(DOMAINS)} (uned:ROOT:cars+sop reads some of them)")
    return root, tuple(d for d in DOMAINS if d in names)


def find_folders(root: str) -> tuple[Path, Path]:
    """(info_files folder, images folder) under ROOT or a folder up to two levels below it."""
    found = find_layout(root, PREFIX, "UnED info_files/ and images/ folders", LAYOUTS, fix=FETCH)
    return found.path("info"), found.path("images")


def class_ids(value: object) -> tuple[str, ...] | None:
    """``12`` -> ("12",); ``[3, 7, 3]`` -> ("3", "7") (repeats once, in order); None when malformed."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return None
    return tuple(dict.fromkeys(str(v) for v in items))


def read_uned(text: str, spec: str, splits: Mapping[str, Sequence[str]] | None = None) -> SourceData:
    """The records of ``uned:TEXT`` (TEXT is ``ROOT`` or ``ROOT:domain,...``): one per info-file entry whose
    image exists, domain and split as named by the info file; ``label_sets`` for multi-class entries.

    ``splits`` (domain -> split names) reads only those info files (guie-eval reads its protocol's
    splits, never the 2.8M training entries); None reads every split of DOMAIN_SPLITS. Raises GuieError
    when a needed info file is missing or is not a JSON list.
    """
    root, domains = parse_root(text)
    info_dir, image_dir = find_folders(root)
    image_root = str(image_dir)
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    label_sets: dict[int, tuple[str, ...]] = {}
    for domain in domains:
        for split in (splits[domain] if splits is not None else DOMAIN_SPLITS[domain]):
            info = info_dir / domain / f"{split}.json"
            if not info.is_file():
                if (domain, split) in OPTIONAL_SPLITS and splits is None:
                    continue
                raise GuieError(f"UnED info file {str(info)!r} not found; {FETCH}")
            for i, entry in enumerate(read_json_list(info, "UnED info file")):
                loc = f"{domain}/{info.name}:entry {i}"
                rel = entry.get("path") if isinstance(entry, dict) else None
                if not isinstance(rel, str) or not rel:
                    skipped.append((loc, NO_PATH))
                    continue
                labels = class_ids(entry.get("class_id"))
                if labels is None:
                    skipped.append((loc, BAD_CLASS))
                    continue
                path = image_path(image_root, rel, domain)
                if path is None:
                    skipped.append((loc, IMAGE_NOT_FOUND))
                    continue
                if len(labels) > 1:
                    label_sets[len(records)] = labels
                records.append(Record(path, labels[0], domain, split))
    return SourceData(spec, PREFIX, records, skipped, label_sets)


@register_source(PREFIX, "UnED (the GUIE hosts' benchmark): info_files/<domain>/<split>.json + images/ (its data/ "
                         "folder); uned:ROOT:cars+sop for some domains")
def load_uned(root: str, spec: str) -> SourceData:
    return read_uned(root, spec)
