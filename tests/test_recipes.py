"""Options from the top GUIE 2022 solutions: EMA weights, dynamic margin, CosFace."""
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_train_config

from guie.errors import GuieError
from guie.model.heads import CosFaceHead, margin_at_epoch, parse_margin_schedule
from guie.model.model_file import read_model_file
from guie.train.run import run_training


def test_cosface_subtracts_the_margin_from_the_target_cosine_only():
    head = CosFaceHead(8, 5, scale=10.0, margin=0.35)
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    cos = head.cosine(x)
    expected = 10.0 * (cos - 0.35 * F.one_hot(y, 5))
    assert torch.allclose(head(x, y), expected, atol=1e-6)


def test_margin_schedule_parsing_and_values():
    schedule = parse_margin_schedule("0.1:0.1:0.8")
    assert [round(margin_at_epoch(schedule, 0.3, e), 6) for e in range(10)] == \
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.8, 0.8]
    assert margin_at_epoch(None, 0.3, 5) == 0.3
    with pytest.raises(GuieError, match="START:STEP:CAP"):
        parse_margin_schedule("0.1-0.8")


def test_training_follows_the_margin_schedule(digits_dir, tmp_path):
    res = run_training(tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "r", epochs=4,
                                         margin_schedule="0.1:0.15:0.3", head="cosface"), log=lambda _: None)
    margins = [json.loads(line)["margin"] for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [round(m, 6) for m in margins] == [0.1, 0.25, 0.3, 0.3]


def test_ema_weights_differ_from_raw_and_are_the_ones_saved(digits_dir, tmp_path):
    data = [f"imagefolder:{digits_dir}"]
    res = run_training(tiny_train_config(data, tmp_path / "ema", epochs=3, ema=0.9), log=lambda _: None)
    model = read_model_file(res.run_dir)
    ema_w = model["projection"]["state_dict"]["linear.weight"]
    raw_w = model["raw_weights"]["projection"]["linear.weight"]
    assert not torch.allclose(ema_w, raw_w)
    plain = read_model_file(run_training(tiny_train_config(data, tmp_path / "plain", epochs=3),
                                         log=lambda _: None).run_dir)
    # Same seed, same steps: the raw weights are the plain run's; the saved ones are the average.
    assert torch.allclose(raw_w, plain["projection"]["state_dict"]["linear.weight"], atol=1e-6)
    assert "raw_weights" not in plain


def test_domain_classifier_trains_on_the_embedding(digits_dir, tmp_path):
    import shutil

    # Two domains: the digits as they are, and their mirror images as a second source.
    from PIL import Image, ImageOps
    mirror = tmp_path / "mirror"
    for label_dir in sorted(digits_dir.iterdir())[:5]:
        (mirror / label_dir.name).mkdir(parents=True)
        for img in sorted(label_dir.iterdir())[:20]:
            ImageOps.mirror(Image.open(img)).save(mirror / label_dir.name / img.name)
    data = [f"imagefolder:{digits_dir}", f"imagefolder:{mirror}"]
    with_domain = run_training(tiny_train_config(data, tmp_path / "d", epochs=3, domain_loss=1.0), log=lambda _: None)
    rows = [json.loads(line) for line in (with_domain.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["domain_acc"] <= 1.0 for r in rows) and rows[-1]["domain_acc"] > 0.6
    without = run_training(tiny_train_config(data, tmp_path / "n", epochs=3), log=lambda _: None)
    a = read_model_file(with_domain.run_dir)["projection"]["state_dict"]["linear.weight"]
    b = read_model_file(without.run_dir)["projection"]["state_dict"]["linear.weight"]
    assert not torch.allclose(a, b)  # the auxiliary loss shapes the embedding
    shutil.rmtree(mirror)


def test_per_domain_class_caps(tmp_path):
    from guie.data.records import Record
    from guie.data.sampling import sample_classes

    recs = [Record(f"/{d}/{c}/{i}.png", c, d) for d in ("shop", "landmark") for c in "ab" for i in range(10)]
    kept, _ = sample_classes(recs, None, max_per_class=8, domain_max_per_class={"landmark": 3})
    per = {(r.domain, r.label): 0 for r in kept}
    for r in kept:
        per[(r.domain, r.label)] += 1
    assert per == {("shop", "a"): 8, ("shop", "b"): 8, ("landmark", "a"): 3, ("landmark", "b"): 3}
    from guie.config import TrainConfig
    with pytest.raises(GuieError, match="DOMAIN=N"):
        TrainConfig(data=["demo:digits"], out="o", domain_max_per_class=["gldv2:20"]).validate()


def test_stage2_changes_only_the_unfrozen_blocks_and_the_head(digits_dir, tmp_path):
    from guie.model.backbone import BackboneSpec, load_backbone
    from guie.model.embedder import load_embedder

    data = [f"imagefolder:{digits_dir}"]
    base = run_training(tiny_train_config(data, tmp_path / "base", epochs=2, classes=4), log=lambda _: None)
    lines = []
    staged = run_training(tiny_train_config(data, tmp_path / "s2", epochs=2, classes=4, stage2_blocks=1,
                                            stage2_lr_scale=0.5, stage2_epochs=1), log=lines.append)
    assert any(line.startswith("stage 2 epoch 1/1") for line in lines)
    before = load_backbone(BackboneSpec("guie-tiny")).visual.state_dict()
    embedder, _ = load_embedder(staged.run_dir)
    after = embedder.visual.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("transformer.resblocks.1.") for k in changed)
    a, b = read_model_file(base.run_dir), read_model_file(staged.run_dir)
    for key, value in a["projection"]["state_dict"].items():  # the projection stayed frozen
        assert torch.equal(value, b["projection"]["state_dict"][key]), key
    assert not torch.equal(a["head"]["state_dict"]["weight"], b["head"]["state_dict"]["weight"])
    assert set(b["backbone_finetuned"]) == {k for k in before if k.startswith("transformer.resblocks.1.")}
    assert 0.0 <= staged.eval["holdout"]["mP@5"] <= 1.0
