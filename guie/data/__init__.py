"""Data: the record type, one adapter per source (registered by prefix), class sampling, image loading."""
from guie.data import (  # noqa: F401 - importing the adapters registers their source prefixes
    csv_manifest,
    deepfashion,
    demo,
    food101,
    gldv2,
    imagefolder,
    met,
    objectnet,
    products10k,
    sop,
    uned,
)
from guie.data.records import Record, SourceData, load_source, source_prefixes

__all__ = ["Record", "SourceData", "load_source", "source_prefixes"]
