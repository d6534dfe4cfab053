"""What a later stage needs to know about a TorchScript file, from the export stage, in one call.

guie-package asks: the file's format version, whether this torch loads it (and if not why, in one
line), the guie-compat checks known for it, and whether PyTorch 1.11 (the GUIE host's) is known to
load it. The answers come from the archive itself (``guie.artifacts``), this torch, the compat
record kept by the file's sha256 and a verify.json beside it that describes this very file
(``guie.export.compat.checked_versions``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from guie.artifacts import TorchScriptLoadError, file_format_version, load_torchscript
from guie.export.compat import checked_versions
from guie.export.portable import HOST_MAX_FILE_VERSION
from guie.export.torch_envs import HOST_TORCH, parse_release
from guie.fileio import file_sha256


@dataclass(frozen=True)
class FileFacts:
    """One TorchScript file as the export stage knows it.

    ``checks`` are guie-compat rows (dicts with torch, device, loads, passed, max_abs_diff, error),
    sorted by release and device. ``load_error`` is None when this torch (``torch_version``) loads
    the file. ``host_torch`` is the GUIE host's release and ``host_max_format_version`` the newest
    format version it reads (9, PyTorch 1.11's kMaxSupportedFileFormatVersion).
    """

    path: Path
    sha256: str
    format_version: int | None
    torch_version: str
    load_error: str | None
    checks: tuple[dict[str, Any], ...]
    host_torch: str = HOST_TORCH
    host_max_format_version: int = HOST_MAX_FILE_VERSION

    def with_checks(self, more: Iterable[dict[str, Any]]) -> FileFacts:
        """These facts with the checks ``more`` added where no known check covers the same torch and device
        (the record kept by hash wins)."""
        checks = {(c["torch"], c["device"]): c for c in self.checks}
        for check in more:
            checks.setdefault((check["torch"], check["device"]), check)
        ordered = sorted(checks.values(), key=lambda c: (parse_release(c["torch"]), c["device"]))
        return replace(self, checks=tuple(ordered))

    @property
    def host_checks(self) -> list[dict[str, Any]]:
        """The known checks in the host's release."""
        return [c for c in self.checks if c["torch"] == self.host_torch]

    @property
    def too_new_for_host(self) -> bool:
        """The format version is known and above what the host's release reads."""
        return self.format_version is not None and self.format_version > self.host_max_format_version

    @property
    def loads_in_host(self) -> bool | None:
        """True when a CPU check in the host's release passed; False when the format is too new for it or
        its CPU checks there failed; None when it was not checked there on CPU (as the host ran it)."""
        if self.too_new_for_host:
            return False
        cpu = [c for c in self.host_checks if c["device"] == "cpu"]
        return any(c["passed"] for c in cpu) if cpu else None


def file_facts(path: str | Path) -> FileFacts:
    """The facts of the TorchScript file ``path`` (loaded once in this torch, on CPU). Raises GuieError
    when ``path`` is not a TorchScript file at all (``guie.artifacts.identify``)."""
    import torch

    path = Path(path)
    try:
        load_torchscript(path)
        load_error = None
    except TorchScriptLoadError as exc:
        load_error = exc.reason
    return FileFacts(path, file_sha256(path), file_format_version(path), torch.__version__, load_error,
                     tuple(checked_versions(path)))
