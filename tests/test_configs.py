"""The shipped configs/ parse and validate; the demo config trains offline."""
from pathlib import Path

import pytest

from guie.config import TrainConfig, read_config_file
from guie.model.backbone import BackboneSpec

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    values = read_config_file(path)
    cfg = TrainConfig(**{"out": "runs/x", **values}).validate()
    BackboneSpec(cfg.backbone, cfg.pretrained).validate()  # name and tag exist in open_clip


def test_there_are_real_recipes():
    names = {p.name for p in CONFIGS}
    assert {"demo.toml", "vith14-laion2b-4000.toml"} <= names
