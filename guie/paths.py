"""Where guie keeps its caches: $GUIE_CACHE, else $XDG_CACHE_HOME/guie, else ~/.cache/guie."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The root folder for feature caches and the demo data."""
    if os.environ.get("GUIE_CACHE"):
        return Path(os.environ["GUIE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "guie"


def feature_cache_dir(override: str | Path | None = None) -> Path:
    """The feature cache folder guie-train and guie-eval share: ``override`` (their --cache-dir) when
    given, else the cache root's ``features``."""
    return Path(override) if override else cache_root() / "features"


def torch_envs_root() -> Path:
    """Where the per-release environments live: $GUIE_TORCH_ENVS, else the user cache's guie/torch-envs."""
    if os.environ.get("GUIE_TORCH_ENVS"):
        return Path(os.environ["GUIE_TORCH_ENVS"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "guie" / "torch-envs"
