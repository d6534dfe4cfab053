"""Backbones on disk as users bring them, made from guie-tiny with random weights: a ``local-dir:`` folder
(open_clip_config.json + open_clip_model.safetensors, as open_clip.push_to_hf_hub writes them) and a
Hugging Face hub cache holding the same files in the hub's own layout
(``models--ORG--REPO/{refs/main, snapshots/<commit>/...}``), for tests without network."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

import guie.model.backbone  # noqa: F401 - registers guie-tiny with open_clip


def write_local_dir(folder: Path, name: str = "guie-tiny", seed: int = 7, **vision: object) -> Path:
    """``folder`` holding open_clip model ``name``'s config (``vision`` overriding vision_cfg keys) and random
    weights from ``seed``, with SigLIP-style preprocessing (mean/std 0.5, bilinear, squash)."""
    config = open_clip.get_model_config(name)
    config["vision_cfg"].update(vision)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
                  "resize_mode": "squash"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**config)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


def write_hub_cache(hf_home: Path, repo_id: str, source: Path) -> str:
    """The files of ``source`` as revision ``main`` of ``repo_id`` in the hub cache under ``hf_home``
    (what ``huggingface-cli download`` leaves there); returns the commit hash."""
    files = sorted(p for p in source.iterdir() if p.is_file())
    commit = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for path in files:
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit
