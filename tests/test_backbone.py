"""The backbone: guie-tiny is a registered open_clip config; frozen image tower; weights by tag, file or none."""
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from guie.errors import GuieError
from guie.model.backbone import BackboneSpec, eval_transform, load_backbone


def test_guie_tiny_is_an_open_clip_model_name():
    assert "guie-tiny" in open_clip.list_models()
    assert open_clip.get_model_config("guie-tiny")["embed_dim"] == 48


def test_frozen_visual_tower_only():
    b = load_backbone(BackboneSpec("guie-tiny"))
    assert not b.visual.training
    assert all(not p.requires_grad for p in b.visual.parameters())
    assert not hasattr(b.visual, "transformer") or b.visual.__class__.__name__ == "VisionTransformer"
    assert b.visual(torch.zeros(2, 3, 32, 32)).shape == (2, b.feature_dim)


def test_preprocessing_comes_from_open_clip():
    b = load_backbone(BackboneSpec("guie-tiny"))
    assert b.preprocess_cfg["mean"] == open_clip.OPENAI_DATASET_MEAN
    assert tuple(b.preprocess_cfg["size"]) == (32, 32)
    assert "CenterCrop" in repr(eval_transform(b.preprocess_cfg))


def test_random_init_is_fixed_by_seed():
    x = torch.randn(1, 3, 32, 32)
    a = load_backbone(BackboneSpec("guie-tiny", seed=0)).visual(x)
    b = load_backbone(BackboneSpec("guie-tiny", seed=0)).visual(x)
    c = load_backbone(BackboneSpec("guie-tiny", seed=1)).visual(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_weights_file(tmp_path, suffix):
    source = open_clip.create_model("guie-tiny")  # a different random init than seed 0
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    loaded = load_backbone(BackboneSpec("guie-tiny", str(path)))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.visual(x), source.eval().visual(x), atol=1e-6)
    assert "/file:" in BackboneSpec("guie-tiny", str(path)).fingerprint()


def test_fingerprint_changes_with_the_architecture(tmp_path):
    import json

    base = BackboneSpec("guie-tiny").fingerprint()
    cfg = open_clip.get_model_config("guie-tiny")
    cfg["vision_cfg"]["layers"] = 3
    (tmp_path / "guie-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "guie-tiny.json")  # same name, different architecture
    try:
        assert BackboneSpec("guie-tiny").fingerprint() != base
    finally:
        from guie.model.backbone import MODEL_CONFIG_DIR
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    assert BackboneSpec("guie-tiny").fingerprint() == base


def test_weights_file_that_does_not_fit(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(open_clip.create_model("RN50", pretrained=None).state_dict(), path)
    with pytest.raises(GuieError, match="does not fit backbone guie-tiny"):
        load_backbone(BackboneSpec("guie-tiny", str(path)))


def test_unknown_names_and_tags():
    with pytest.raises(GuieError, match="did you mean: ViT-B-32"):
        BackboneSpec("ViT-B-31").validate()
    with pytest.raises(GuieError, match="known tags: .*laion2b_s32b_b79k"):
        BackboneSpec("ViT-H-14", "laion2b").validate()
