"""Where guie keeps its caches: one rule, through platformdirs.

``cache_root()`` is ``$GUIE_CACHE``, else the platform's user cache folder for ``guie``
(platformdirs' ``user_cache_path``: ``$XDG_CACHE_HOME/guie``, else ``~/.cache/guie`` on Linux;
``~/Library/Caches/guie`` on macOS; ``%LOCALAPPDATA%\\guie\\Cache`` on Windows).
``torch_envs_root()`` is ``$GUIE_TORCH_ENVS``, else ``torch-envs`` in that same user cache folder,
never under ``$GUIE_CACHE``: test and feature caches may be thrown away, a 2-5 GB environment should not be.
"""
from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_path

APP_NAME = "guie"


def user_cache_root() -> Path:
    """The platform's user cache folder for guie (ignores ``$GUIE_CACHE``), e.g. ``~/.cache/guie`` on Linux.

    platformdirs reads ``$XDG_CACHE_HOME`` at each call (a relative value is ignored, as the XDG
    spec says); the folder is not created here.
    """
    return user_cache_path(APP_NAME, appauthor=False)


def cache_root() -> Path:
    """The root folder for feature caches, the demo data and compat results: ``$GUIE_CACHE`` (``~`` expanded),
    else ``user_cache_root()``. Read at each call; the folder is not created here."""
    if os.environ.get("GUIE_CACHE"):
        return Path(os.environ["GUIE_CACHE"]).expanduser()
    return user_cache_root()


def feature_cache_dir(override: str | Path | None = None) -> Path:
    """The feature cache folder guie-train and guie-eval share: ``override`` (their --cache-dir) when
    given, else the cache root's ``features``."""
    return Path(override) if override else cache_root() / "features"


def torch_envs_root() -> Path:
    """Where the per-release torch environments live: ``$GUIE_TORCH_ENVS`` (``~`` expanded), else
    ``user_cache_root() / "torch-envs"`` (``~/.cache/guie/torch-envs`` on Linux). Read at each call."""
    if os.environ.get("GUIE_TORCH_ENVS"):
        return Path(os.environ["GUIE_TORCH_ENVS"]).expanduser()
    return user_cache_root() / "torch-envs"
