"""The Hugging Face hub, checked before any work starts: the files an ``hf-hub:`` backbone or a timm
pretrained tag needs, found in the local cache or on the hub within a bounded wait.

What is needed is named as groups of alternative file names (``open_clip_config.json``, then
``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``): the first name of each group
the repo holds is the one used, in the order open_clip and timm themselves try them. The answer is
a :class:`HubFiles`: the repo's commit hash (what a feature cache and a model file pin) and the
file names. Nothing is downloaded here; :func:`fetch` does that, once the run is under way.

Offline (``HF_HUB_OFFLINE=1``) only the cache counts. Online the hub is asked for the current
commit, in a thread given ``timeout`` seconds (a DNS or proxy hang is bounded too), after a
progress line; when it does not answer, a cached copy is used with a note, and without one the
error says so in one line with the offline alternatives. Both switches are read from the
environment at call time, by huggingface_hub's own rules (``HF_HUB_OFFLINE`` or
``TRANSFORMERS_OFFLINE``; the cache at ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``), so a test or a notebook
that sets them after import is obeyed.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guie.errors import GuieError
from guie.services import call_within, service_timeout

COMMIT = re.compile(r"^[0-9a-f]{40}$")
LOCAL_FILES = "bring the files as --backbone local-dir:PATH or --pretrained FILE"


def hub_offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to 1/true/yes/on, as
    huggingface_hub reads them, read now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "on", "yes", "true")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder by huggingface_hub's rules (module docstring), read now."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[variable])))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


@dataclass(frozen=True)
class HubFiles:
    """A hub repo at one commit and the file chosen from each group of alternatives."""

    repo_id: str
    commit: str  # 40 hex digits
    files: tuple[str, ...]


def split_hub_id(hub_id: str) -> tuple[str, str | None]:
    """``ORG/REPO`` or ``ORG/REPO@REVISION`` (timm's spelling) -> (repo id, revision or None)."""
    repo, _, revision = hub_id.partition("@")
    return repo, revision or None


def cached_files(repo_id: str, wanted: Sequence[Sequence[str]], revision: str | None) -> HubFiles | None:
    """The files in the local cache for ``revision`` (None: the cached ``main``), or None when any group
    has no cached file."""
    from huggingface_hub import try_to_load_from_cache

    chosen, commit = [], None
    for group in wanted:
        for name in group:
            path = try_to_load_from_cache(repo_id, name, cache_dir=hub_cache_dir(), revision=revision)
            if isinstance(path, str):
                chosen.append(name)
                commit = Path(path).parent.name
                break
        else:
            return None
    return HubFiles(repo_id, commit, tuple(chosen)) if commit and COMMIT.match(commit) else None


def ask_hub(repo_id: str, revision: str | None, timeout: float) -> Any:
    """``HfApi().model_info`` within ``timeout`` seconds (guie.services.call_within). Returns the info, or
    raises what it raised, or TimeoutError when it did not answer in time."""
    from huggingface_hub import HfApi

    # httpx's own limits, past the bounded wait: the wait is the one bound (a DNS hang included)
    return call_within(lambda: HfApi().model_info(repo_id, revision=revision, timeout=2 * timeout), timeout,
                       name=f"guie-hub-{repo_id}")


def find_files(repo_id: str, wanted: Sequence[Sequence[str]], what: str, *, revision: str | None = None,
               timeout: float | None = None, log: Callable[[str], None] | None = None,
               local: str = LOCAL_FILES) -> HubFiles:
    """The commit and the files ``wanted`` (groups of alternatives) of hub repo ``repo_id``, ``what`` naming
    it in messages (e.g. ``hf-hub:timm/ViT-B-16-SigLIP2``) and ``local`` the way to do without the hub. A
    pinned ``revision`` (a commit hash) found in the cache needs no network. ``timeout`` defaults to
    :func:`guie.services.service_timeout`. Raises GuieError, one line: not cached while offline, no answer in time and
    nothing cached, no such repo or revision (or gated), files missing."""
    timeout = service_timeout() if timeout is None else timeout
    pinned = revision is not None and bool(COMMIT.match(revision))
    cached = cached_files(repo_id, wanted, revision)
    if cached is not None and (pinned or hub_offline()):
        return cached
    needs = " and ".join(" or ".join(group) for group in wanted)
    offline_hint = f"offline: set HF_HUB_OFFLINE=1 with a populated Hugging Face cache (HF_HOME), or {local}"
    if hub_offline():
        raise GuieError(
            f"{what} is not in the Hugging Face cache {hub_cache_dir()} (needs {needs}"
            f"{' at revision ' + revision if revision else ''}) and HF_HUB_OFFLINE=1 forbids downloading; download "
            f"it once where the hub is reachable (hf download {repo_id} {' '.join(g[0] for g in wanted)}"
            f"{' --revision ' + revision if revision else ''}, with the same HF_HOME), or {local}")
    if log:
        log(f"checking {what} on the Hugging Face hub (up to {timeout:g} s) ...")
    try:
        info = ask_hub(repo_id, revision, timeout)
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and httpx report failures many ways
        kind = type(exc).__name__
        if kind in ("RepositoryNotFoundError", "GatedRepoError"):
            raise GuieError(f"the Hugging Face hub has no readable repo {repo_id} for {what} (missing, private or "
                            "gated: `hf auth login` with a token that may read it); check the name at "
                            f"https://huggingface.co/{repo_id}") from None
        if kind == "RevisionNotFoundError":
            raise GuieError(f"{repo_id} on the Hugging Face hub has no revision {revision} ({what}); "
                            "pass a revision it has") from None
        if cached is not None:
            if log:
                log(f"note: the Hugging Face hub did not answer ({kind}); using the cached {repo_id} revision "
                    f"{cached.commit[:12]} (set HF_HUB_OFFLINE=1 to skip this check)")
            return cached
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else kind
        answer = f"did not answer about {what} within {timeout:g} s" if isinstance(exc, TimeoutError) else \
            f"could not be asked about {what}"
        raise GuieError(f"the Hugging Face hub {answer} ({kind}: {detail}) and nothing is cached in "
                        f"{hub_cache_dir()}; {offline_hint}") from None
    present = {s.rfilename for s in (info.siblings or [])}
    chosen = []
    for group in wanted:
        name = next((n for n in group if n in present), None)
        if name is None:
            raise GuieError(f"{repo_id} on the Hugging Face hub holds no {' or '.join(group)}, which {what} needs"
                            + ("; it is not an open_clip model (for a timm model use --backbone timm:NAME)"
                               if "open_clip_config.json" in group else ""))
        chosen.append(name)
    return HubFiles(repo_id, info.sha, tuple(chosen))


def fetch(files: HubFiles, name: str) -> Path:
    """The local path of ``name`` of ``files`` at its commit: from the cache, else downloaded (huggingface_hub
    shows its progress bar). Raises GuieError when offline and not cached, or the download fails."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(files.repo_id, name, revision=files.commit, cache_dir=hub_cache_dir(),
                                    local_files_only=hub_offline()))
    except Exception as exc:  # noqa: BLE001 - network, disk and cache errors come many ways
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise GuieError(f"could not get {name} of {files.repo_id} at revision {files.commit[:12]} "
                        f"({type(exc).__name__}: {detail}); offline: set HF_HUB_OFFLINE=1 with a populated Hugging "
                        f"Face cache (HF_HOME), or {LOCAL_FILES}") from None


def snapshot_folder(files: HubFiles) -> Path:
    """Every file of ``files`` fetched; the cache's snapshot folder that holds them
    (``models--ORG--REPO/snapshots/<commit>``)."""
    paths = [fetch(files, name) for name in files.files]
    return paths[0].parent
