"""Data: the record type, one adapter per source (registered by prefix), class sampling, image loading."""
from guie.data import csv_manifest, demo, imagefolder  # noqa: F401 - registers the adapters
from guie.data.records import Record, SourceData, load_source, source_prefixes

__all__ = ["Record", "SourceData", "load_source", "source_prefixes"]
