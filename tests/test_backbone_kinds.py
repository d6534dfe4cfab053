"""Backbones people use now: open_clip's local-dir: and hf-hub: schemas, timm image models, any input size.

All without network: local-dir: from a folder the test writes, hf-hub: from a Hugging Face cache the test
lays out (HF_HUB_OFFLINE=1, HF_HOME pointing at it), the hub's answers from a loopback server, timm from
shrunken configs (tests/model_configs/timm-tiny-*.json) with random weights.
"""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import open_clip
import pytest
import timm
import torch
from backbone_folders import write_hub_cache, write_local_dir
from conftest import tiny_train_config
from safetensors.torch import save_file

from guie.errors import GuieError
from guie.features.cache import FeatureCache
from guie.model.backbone import BackboneSpec, expected_preprocess, load_backbone, tower_family
from guie.model.backbone_names import describe_backbone
from guie.model.open_clip_folder import folder_weights

REPO = "guie-test/tiny-siglip"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face home, offline; returns its path."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf"


def tiny_clip(seed):
    """The guie-tiny CLIP as write_local_dir makes it with ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**open_clip.get_model_config("guie-tiny")).eval()


def outputs(visual, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return visual(x)


# --- local-dir: ---------------------------------------------------------------------------------

def test_local_dir_loads_the_folders_weights_and_preprocessing(tmp_path):
    folder = write_local_dir(tmp_path / "siglip-ish", seed=7)
    spec = BackboneSpec.resolve(f"local-dir:{folder}")
    assert (spec.name, spec.pretrained, spec.revision) == (f"local-dir:{folder}", "folder", None)
    backbone = load_backbone(spec)
    assert torch.allclose(outputs(backbone.visual, 32), outputs(tiny_clip(7).visual, 32), atol=1e-6)
    cfg = backbone.preprocess_cfg
    assert (cfg["mean"], cfg["interpolation"], cfg["resize_mode"]) == ([0.5] * 3, "bilinear", "squash")
    assert expected_preprocess(spec)["resize_mode"] == "squash" and backbone.feature_dim == 48
    assert tower_family(spec.name) == "open_clip:vit"


def test_a_relative_local_dir_is_made_absolute(tmp_path, monkeypatch):
    write_local_dir(tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path / "models")
    assert BackboneSpec.resolve("local-dir:tiny").name == f"local-dir:{tmp_path / 'models' / 'tiny'}"


def test_the_feature_cache_identity_follows_config_and_weights(tmp_path):
    a = BackboneSpec.resolve(f"local-dir:{write_local_dir(tmp_path / 'a', seed=1)}")
    same = BackboneSpec.resolve(f"local-dir:{write_local_dir(tmp_path / 'copy-of-a', seed=1)}")
    other = BackboneSpec.resolve(f"local-dir:{write_local_dir(tmp_path / 'b', seed=2)}")
    wider = BackboneSpec.resolve(f"local-dir:{write_local_dir(tmp_path / 'c', seed=1, width=96)}")
    bigger = BackboneSpec.resolve(f"local-dir:{tmp_path / 'a'}", image_size=48)
    prints = [s.fingerprint() for s in (a, same, other, wider, bigger)]
    assert prints[0] == prints[1] and len(set(prints)) == 4  # a copy shares features; nothing else does
    dirs = {FeatureCache.open(tmp_path / "cache", s, 0).dir.name for s in (a, other, wider, bigger)}
    assert len(dirs) == 4 and all(d.startswith("local-dir_") for d in dirs)


def test_the_weights_file_is_the_one_open_clip_picks(tmp_path):
    from open_clip.factory import _find_checkpoint_in_dir

    for names in [["open_clip_model.safetensors", "open_clip_pytorch_model.bin"], ["pytorch_model.bin", "x.safetensors"],
                  ["b.bin", "a.bin", "c.pth"], ["model.pth", "open_clip_pytorch_model.bin"], ["z.pth"]]:
        folder = tmp_path / "-".join(names)
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"x")
        assert str(folder_weights(folder)) == _find_checkpoint_in_dir(folder), names


def test_local_dir_problems_are_one_line_each(tmp_path):
    (tmp_path / "empty").mkdir()
    no_model = write_local_dir(tmp_path / "no-model-cfg")
    (no_model / "open_clip_config.json").write_text(json.dumps({"preprocess_cfg": {}}))
    no_weights = write_local_dir(tmp_path / "no-weights")
    (no_weights / "open_clip_model.safetensors").unlink()
    good = write_local_dir(tmp_path / "good")
    for backbone, pretrained, message in [
        (f"local-dir:{tmp_path / 'nope'}", None, "no such folder; a local-dir: folder holds open_clip_config.json"),
        (f"local-dir:{tmp_path / 'empty'}", None, "has no open_clip_config.json; a local-dir: folder holds"),
        (f"local-dir:{no_model}", None, "has no model_cfg with a vision_cfg; it is not an open_clip model config"),
        (f"local-dir:{no_weights}", None, "holds open_clip_config.json but no weights file"),
        (f"local-dir:{good}", "laion2b_s34b_b79k", "--pretrained laion2b_s34b_b79k does not apply to local-dir:"),
        ("local-dir:", None, "names nothing after 'local-dir:'"),
    ]:
        with pytest.raises(GuieError, match=message) as err:
            BackboneSpec.resolve(backbone, pretrained)
        assert "\n" not in str(err.value)


def test_a_run_whose_local_weights_changed_is_refused_by_export_and_eval(tmp_path, digits_dir, cli):
    """The features a run's projection was trained on came from the folder's weights then: other weights put
    in the same folder later (same size) are one line at export and at eval, not a silently other model."""
    folder = write_local_dir(tmp_path / "tiny", seed=1)
    run = tmp_path / "run"
    res = cli("train", "--data", f"imagefolder:{digits_dir}", "--backbone", f"local-dir:{folder}", "--epochs", "1",
              "--max-per-class", "4", "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(run))
    assert res.returncode == 0, res.stderr
    write_local_dir(tmp_path / "other", seed=2)
    (tmp_path / "other" / "open_clip_model.safetensors").replace(folder / "open_clip_model.safetensors")
    for args in (["export", str(run), "--out", str(tmp_path / "export")],
                 ["eval", str(run), "--task", f"imagefolder:{digits_dir}", "--cache-dir", str(tmp_path / "cache")]):
        res = cli(*args)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        (line,) = res.stderr.strip().splitlines()[-1:]
        assert line.startswith(f"error: the backbone weights of '{run}") and "changed since it was trained" in line
        assert line.endswith("put back the weights the run was trained on, or train a new run on these")
    assert not (tmp_path / "export").exists()


def test_a_malformed_hub_id_is_refused_before_asking_the_hub(tmp_path, online_hub):
    hub = online_hub()
    for name in ("hf-hub:notarepo", "hf-hub:org/repo/extra", "hf-hub:org/re po"):
        with pytest.raises(GuieError, match=r"is not a Hugging Face repo id \(ORG/REPO, "):
            BackboneSpec.resolve(name)
    assert hub.requests == []  # nothing was asked


def test_weights_that_do_not_fit_the_folders_config(tmp_path):
    folder = write_local_dir(tmp_path / "misfit")
    save_file({k: v.contiguous() for k, v in open_clip.create_model("guie-tiny-rn").state_dict().items()},
              folder / "open_clip_model.safetensors")
    with pytest.raises(GuieError, match=r"open_clip_model.safetensors' does not fit backbone local-dir:"):
        load_backbone(BackboneSpec.resolve(f"local-dir:{folder}"))


# --- hf-hub: ------------------------------------------------------------------------------------------

def test_hf_hub_from_an_offline_cache_is_pinned_to_its_commit(tmp_path, offline_hub):
    commit = write_hub_cache(offline_hub, REPO, write_local_dir(tmp_path / "v1", seed=3))
    spec = BackboneSpec.resolve(f"hf-hub:{REPO}")
    assert (spec.pretrained, spec.revision) == ("hub", commit) and spec.fingerprint().endswith(f"rev:{commit}")
    assert torch.allclose(outputs(load_backbone(spec).visual, 32), outputs(tiny_clip(3).visual, 32), atol=1e-6)
    # a new revision on main: a new identity; the pinned spec (a run's model.pt) still loads the old weights
    newer = write_hub_cache(offline_hub, REPO, write_local_dir(tmp_path / "v2", seed=4))
    moved = BackboneSpec.resolve(f"hf-hub:{REPO}")
    assert moved.revision == newer != commit and moved.fingerprint() != spec.fingerprint()
    assert torch.allclose(outputs(load_backbone(spec).visual, 32), outputs(tiny_clip(3).visual, 32), atol=1e-6)
    assert describe_backbone(spec.to_dict()) == f"open_clip `hf-hub:{REPO}` (hub revision `{commit[:12]}`)"


def test_hf_hub_not_in_the_offline_cache_is_one_line(tmp_path, offline_hub):
    with pytest.raises(GuieError) as err:
        BackboneSpec.resolve(f"hf-hub:{REPO}")
    text = str(err.value)
    assert text.startswith(f"hf-hub:{REPO} is not in the Hugging Face cache {offline_hub / 'hub'}") and "\n" not in text
    assert "HF_HUB_OFFLINE=1 forbids downloading" in text and f"hf download {REPO} open_clip_config.json" in text
    assert "--backbone local-dir:PATH" in text
    with pytest.raises(GuieError, match="--pretrained openai does not apply to hf-hub:"):
        BackboneSpec.resolve(f"hf-hub:{REPO}", "openai")


class FakeHub:
    """A loopback stand-in for huggingface.co's model-info API: ``answers`` maps a repo id to the JSON it
    returns (None: 404 RepoNotFound); ``silent`` accepts connections and never answers."""

    def __init__(self, answers=None, silent=False):
        self.requests = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                hub.requests.append(self.path)
                repo = next((r for r in (answers or {}) if f"/api/models/{r}" in self.path), None)
                answer = (answers or {}).get(repo)
                self.send_response(200 if answer else 404)
                if not answer:
                    self.send_header("X-Error-Code", "RepoNotFound")
                body = json.dumps(answer or {"error": "Repository not found"}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        if silent:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(8)
            self.port = self.sock.getsockname()[1]
        else:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.port = self.server.server_port
            threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        if hasattr(self, "server"):
            self.server.shutdown()
        else:
            self.sock.close()


@pytest.fixture
def online_hub(tmp_path, monkeypatch):
    """Online against a FakeHub made by the returned function, with an empty HF_HOME."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hubs = []

    def start(**kwargs):
        hubs.append(FakeHub(**kwargs))
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{hubs[-1].port}")
        return hubs[-1]

    yield start
    for hub in hubs:
        hub.close()


def test_a_hub_that_does_not_answer_is_a_bounded_wait_and_one_line(tmp_path, online_hub, monkeypatch):
    online_hub(silent=True)
    monkeypatch.setenv("GUIE_SERVICE_TIMEOUT", "1")
    logs = []
    started = time.monotonic()
    with pytest.raises(GuieError) as err:
        BackboneSpec.resolve(f"hf-hub:{REPO}", log=logs.append)
    assert time.monotonic() - started < 10
    assert logs == [f"checking hf-hub:{REPO} on the Hugging Face hub (up to 1 s) ..."]
    text = str(err.value)
    assert text.startswith(f"the Hugging Face hub did not answer about hf-hub:{REPO} within 1 s") and "\n" not in text
    assert "offline: set HF_HUB_OFFLINE=1 with a populated Hugging Face cache (HF_HOME)" in text
    # with a copy in the cache, the run goes on with it and says so
    commit = write_hub_cache(tmp_path / "hf", REPO, write_local_dir(tmp_path / "v1"))
    assert BackboneSpec.resolve(f"hf-hub:{REPO}", log=logs.append).revision == commit
    assert logs[-1].startswith("note: the Hugging Face hub did not answer (TimeoutError); using the cached")


def test_the_hubs_answers_name_what_is_missing(tmp_path, online_hub):
    files = [{"rfilename": n} for n in ("open_clip_config.json", "open_clip_model.safetensors")]
    hub = online_hub(answers={REPO: {"id": REPO, "sha": "b" * 40, "siblings": files},
                              "timm/not-open-clip": {"id": "timm/not-open-clip", "sha": "c" * 40,
                                                     "siblings": [{"rfilename": "model.safetensors"}]},
                              "guie-test/gone": None})
    commit = write_hub_cache(tmp_path / "hf", REPO, write_local_dir(tmp_path / "v1", seed=5))
    with pytest.raises(GuieError, match="has no readable repo guie-test/gone .*`hf auth login`"):
        BackboneSpec.resolve("hf-hub:guie-test/gone")
    with pytest.raises(GuieError, match="holds no open_clip_config.json, which hf-hub:timm/not-open-clip needs; "
                                        "it is not an open_clip model .*timm:NAME"):
        BackboneSpec.resolve("hf-hub:timm/not-open-clip")
    # the hub's current commit is the one pinned, even when the cache's main is older
    assert BackboneSpec.resolve(f"hf-hub:{REPO}").revision == "b" * 40 != commit
    assert any(path.startswith(f"/api/models/{REPO}") for path in hub.requests)


# --- timm: ---------------------------------------------------------------------------------------------

def test_timm_names_tags_and_defaults():
    assert BackboneSpec.resolve("timm:timm-tiny-dinov2").pretrained == "none"  # a guie timm config: random init
    for backbone, pretrained, message in [
        ("timm:vit_base_patch14_dinov3", None, r"unknown timm model 'vit_base_patch14_dinov3' \(did you mean: "),
        ("timm:vit_base_patch14_dinov2.lvd999", None, "unknown timm pretrained tag 'lvd999' for vit_base_patch14_"
                                                      "dinov2; known tags: lvd142m"),
        ("timm:vit_base_patch14_dinov2.lvd142m", "none", "names the timm weights 'lvd142m' and --pretrained 'none'"),
        ("timm:gcvit_tiny", None, "timm has no Hugging Face hub copy of gcvit_tiny.in1k"),
        ("timm:timm-tiny-dinov2", "/no/such.safetensors", "pretrained weights file '/no/such.safetensors' does not"),
        ("timm:timm-tiny-dinov2", None, "cannot run at --image-size 10"),
        ("timm:", None, "names nothing after 'timm:'"),
    ]:
        with pytest.raises(GuieError, match=message) as err:
            BackboneSpec.resolve(backbone, pretrained, image_size=10 if "image-size" in message else None)
        assert "\n" not in str(err.value)


def test_a_timm_tag_comes_from_the_hub_cache(tmp_path, offline_hub):
    """``timm:ARCH.TAG`` and ``timm:ARCH --pretrained TAG`` are the same weights, fetched as timm would from the
    hub (here a prepared offline cache of timm/vit_small_patch14_reg4_dinov2.lvd142m holding tiny weights)."""
    with pytest.raises(GuieError, match=r"timm:vit_small_patch14_reg4_dinov2.lvd142m is not in the Hugging Face "
                                        r"cache .*pass the weights file \(model.safetensors of timm/"):
        BackboneSpec.resolve("timm:timm-tiny-dinov2", "lvd142m")
    tiny = timm.create_model("vit_small_patch14_reg4_dinov2", num_classes=0, embed_dim=32, depth=2, num_heads=2,
                             img_size=56).eval()
    (tmp_path / "w").mkdir()
    save_file(tiny.state_dict(), tmp_path / "w" / "model.safetensors")
    commit = write_hub_cache(offline_hub, "timm/vit_small_patch14_reg4_dinov2.lvd142m", tmp_path / "w")
    spec = BackboneSpec.resolve("timm:timm-tiny-dinov2", "lvd142m")
    assert (spec.name, spec.pretrained, spec.revision) == ("timm:timm-tiny-dinov2", "lvd142m", commit)
    assert torch.allclose(outputs(load_backbone(spec).visual, 56), outputs(tiny, 56), atol=1e-6)
    assert f"lvd142m@{commit}" in spec.fingerprint()


def test_timm_weights_file_classifier_dropped_misfit_refused(tmp_path):
    network = timm.create_model("convnext_atto", num_classes=10, depths=[1, 1, 1, 1], dims=[16, 24, 32, 48]).eval()
    path = tmp_path / "convnext.pth"
    torch.save(network.state_dict(), path)  # with its 10-class head, as a fine-tuned checkpoint has
    backbone = load_backbone(BackboneSpec.resolve("timm:timm-tiny-convnext", str(path)))
    network.reset_classifier(0)
    assert backbone.feature_dim == 48 and torch.allclose(outputs(backbone.visual, 64), outputs(network, 64), atol=1e-6)
    with pytest.raises(GuieError, match=r"convnext.pth' does not fit backbone timm:timm-tiny-dinov2"):
        load_backbone(BackboneSpec.resolve("timm:timm-tiny-dinov2", str(path)))


def test_timm_at_another_size_resamples_the_position_embedding_once():
    from timm.layers import resample_abs_pos_embed

    base = load_backbone(BackboneSpec.resolve("timm:timm-tiny-dinov2"))
    bigger = load_backbone(BackboneSpec.resolve("timm:timm-tiny-dinov2", image_size=70))
    assert base.visual.pos_embed.shape == (1, 16, 32) and bigger.visual.pos_embed.shape == (1, 25, 32)
    expected = resample_abs_pos_embed(base.visual.pos_embed, new_size=(5, 5), old_size=(4, 4), num_prefix_tokens=0)
    assert torch.allclose(bigger.visual.pos_embed, expected)
    assert bigger.image_size == (70, 70) and bigger.preprocess_cfg["crop_pct"] == 1.0
    assert outputs(bigger.visual, 70).shape == (2, 32)
    spec = BackboneSpec.resolve("timm:timm-tiny-dinov2", image_size=70)
    assert spec.fingerprint().endswith("/size70") and spec.to_dict()["image_size"] == 70
    assert describe_backbone(spec.to_dict()) == "timm `timm-tiny-dinov2` (`none`) at 70 px"


@pytest.mark.parametrize("name, family, crop", [
    ("timm:timm-tiny-dinov2", "timm:vision_transformer:direct", (1.0, "center", "shortest")),
    ("timm:timm-tiny-convnext", "timm:convnext:direct", (0.875, "center", "shortest")),
    ("timm:timm-tiny-eva", "timm:eva:direct", (0.9, "squash", "squash")),
])
def test_timm_preprocessing_is_the_models_own_data_config(name, family, crop):
    spec = BackboneSpec.resolve(name)
    cfg = expected_preprocess(spec)
    assert (cfg["crop_pct"], cfg["crop_mode"], cfg["resize_mode"]) == crop
    assert load_backbone(spec).preprocess_cfg == cfg and tower_family(name) == family


def test_train_refuses_a_timm_crop_export_cannot_reproduce_before_any_folder(tmp_path, digits_dir, monkeypatch):
    from guie.train.run import run_training

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "timm-bordered.json").write_text(json.dumps(
        {"timm": {"model": "convnext_atto", "kwargs": {"depths": [1, 1, 1, 1], "dims": [16, 24, 32, 48]},
                  "pretrained_cfg": {"input_size": [3, 64, 64], "crop_mode": "border"}}}))
    monkeypatch.setenv("GUIE_MODEL_CONFIGS", str(tmp_path / "configs"))
    with pytest.raises(GuieError, match="backbone timm:timm-bordered uses timm crop_mode 'border'; guie-export "
                                        "reproduces timm's center and squash crops only; choose another --backbone"):
        run_training(tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", backbone="timm:timm-bordered"),
                     log=lambda _: None)
    assert not (tmp_path / "run").exists()


# --- guie-train: a wrong schema, path or tag is one line and writes nothing -----------------------------

@pytest.mark.slow
def test_wrong_backbones_are_one_line_and_write_nothing(tmp_path, digits_dir, cli):
    out = tmp_path / "run"
    offline = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    for args, message in [
        (["--backbone", "hf-hub:guie-test/not-cached"], "error: hf-hub:guie-test/not-cached is not in the Hugging "
                                                        "Face cache"),
        (["--backbone", f"local-dir:{tmp_path / 'nope'}"], f"error: local-dir:{tmp_path / 'nope'}: no such folder"),
        (["--backbone", "timm:vit_base_patch14_dinov2.lvd999"], "error: unknown timm pretrained tag 'lvd999'"),
        (["--backbone", "hf-hub:guie-test/x", "--pretrained", "openai", "--image-size", "0"],
         "error: --image-size must be 1 to 4096 pixels"),
    ]:
        res = cli("train", "--data", f"imagefolder:{digits_dir}", "--out", str(out), *args, env=offline)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        (line,) = res.stderr.strip().splitlines()
        assert line.startswith(message), line
        assert not out.exists()


def test_model_card_backbone_line(tmp_path):
    from guie.ship.folders import PackageSpec, model_card
    from guie.ship.source import ModelSource

    spec = BackboneSpec.resolve(f"local-dir:{write_local_dir(tmp_path / 'secret-place' / 'siglip2')}", image_size=48)
    card = model_card(PackageSpec.create("guie-tester/guie-backbones", "guie-tester/guie-backbones-inference"),
                      ModelSource(tmp_path / "m.pt", "run folder", tmp_path,
                                  config={"backbone": spec.name, "backbone_spec": spec.to_dict(), "dim": 64}),
                      "0" * 64, 1000)
    assert "- Backbone: open_clip `local-dir:.../siglip2` (the folder's weights) at 48 px, frozen" in card
    assert "secret-place" not in card
