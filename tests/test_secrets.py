"""Secrets never enter run folders, reports, exports, Kaggle folders, caches, W&B files or logs."""
import json
import os

import pytest

from guie.paths import torch_envs_root


@pytest.mark.slow
def test_planted_secrets_appear_in_no_file_and_no_log(cli_process, tmp_path):
    """In a fresh process: the secrets are in its environment (and W&B's service it starts) from the start."""
    secrets = {
        "KAGGLE_USERNAME": "planted-user-7f3a",
        "KAGGLE_KEY": "planted-kaggle-key-5e1b9c",
        "KAGGLE_API_TOKEN": "planted-kaggle-token-c0ffee42",
        "WANDB_API_KEY": "planted0wandb0key0" + "0" * 22,
    }
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    kaggle_json = json.dumps({"username": "planted-user-7f3a", "key": "planted-json-key-9d8e7f"})
    (home / ".kaggle" / "kaggle.json").write_text(kaggle_json)
    cache = tmp_path / "cache"
    # the demo checks its export in torch 1.11.0: the shared environment, not one built in the planted HOME
    env = {**secrets, "HOME": str(home), "GUIE_CACHE": str(cache), "GUIE_TORCH_ENVS": str(torch_envs_root())}
    res = cli_process("demo", "--out", str(tmp_path / "demo"), "--epochs", "2", "--wandb", "offline", env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "demo" / "run" / "wandb").is_dir()  # W&B did write its offline run there
    # the demo ends with the proof: the export checked in the host's torch, no packaging warning, the gallery
    assert "The export loads and matches in torch 1.11.0" in res.stdout and "warning:" not in res.stdout
    assert (tmp_path / "demo" / "report" / "gallery" / "index.html").is_file()

    needles = [*secrets.values(), "planted-json-key-9d8e7f"]
    written = [p for root in (tmp_path / "demo", cache) for p in root.rglob("*") if p.is_file()]
    assert len(written) > 20
    for path in written:
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, f"{needle} leaked into {path}"
    for needle in needles:
        assert needle not in res.stdout and needle not in res.stderr
    assert os.environ.get("KAGGLE_KEY") is None  # the fixture environment itself stays clean
