"""Export: the submission module (raw images in, 64-D out), scripting, verification, submission.zip."""
from __future__ import annotations

from typing import Any

__all__ = ["export_ensemble", "export_run"]


def __getattr__(name: str) -> Any:
    # Lazy, so `guie --help` and the --tta parser do not pay for importing torch.
    if name in __all__:
        from guie.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'guie.export' has no attribute {name!r}")
