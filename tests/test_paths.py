"""The cache folder rules: $GUIE_CACHE / $GUIE_TORCH_ENVS first, else the platform's user cache (platformdirs)."""
from __future__ import annotations

import sys

import pytest

from guie.paths import cache_root, torch_envs_root, user_cache_root

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG rules are Linux's")


@pytest.fixture
def bare_env(monkeypatch, tmp_path):
    """No guie or XDG variables, HOME in tmp_path."""
    for name in ("GUIE_CACHE", "GUIE_TORCH_ENVS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@linux_only
def test_default_is_dot_cache_guie(bare_env):
    assert user_cache_root() == bare_env / ".cache" / "guie"
    assert cache_root() == bare_env / ".cache" / "guie"
    assert torch_envs_root() == bare_env / ".cache" / "guie" / "torch-envs"
    assert not (bare_env / ".cache").exists()  # nothing is created by asking


@linux_only
def test_xdg_cache_home_moves_both(bare_env, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "guie"
    assert torch_envs_root() == tmp_path / "xdg" / "guie" / "torch-envs"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: a relative path is ignored
    assert cache_root() == bare_env / ".cache" / "guie"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert torch_envs_root() == bare_env / ".cache" / "guie" / "torch-envs"


def test_guie_cache_wins_and_leaves_the_torch_envs_in_the_user_cache(bare_env, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("GUIE_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert torch_envs_root() == user_cache_root() / "torch-envs" != tmp_path / "mine" / "torch-envs"
    monkeypatch.setenv("GUIE_CACHE", "~/caches/guie")
    assert cache_root() == bare_env / "caches" / "guie"
    monkeypatch.setenv("GUIE_CACHE", "")  # empty means unset
    assert cache_root() == user_cache_root()


def test_guie_torch_envs_wins(bare_env, monkeypatch, tmp_path):
    monkeypatch.setenv("GUIE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("GUIE_TORCH_ENVS", str(tmp_path / "envs"))
    assert torch_envs_root() == tmp_path / "envs" and cache_root() == tmp_path / "mine"
    monkeypatch.setenv("GUIE_TORCH_ENVS", "~/envs")
    assert torch_envs_root() == bare_env / "envs"


def test_the_feature_cache_and_demo_data_follow_the_rule(monkeypatch, tmp_path):
    """The callers take the folder from paths.py at call time, not from a copy of the rule."""
    from guie.data.demo import demo_root

    monkeypatch.setenv("GUIE_CACHE", str(tmp_path / "c"))
    root = demo_root("digits")
    assert root == tmp_path / "c" / "demo" / "digits" and any(root.rglob("*.png"))
