"""torchrun: 2 CPU processes (gloo) extract disjoint shares of the cache and train one model under DDP."""
import json
import os
import subprocess
import sys

import pytest
import torch
from cache_files import shards_in

from guie.model.model_file import read_model_file


def train_args(data, out, cache):
    return ["--data", f"imagefolder:{data}", "--backbone", "guie-tiny", "--pretrained", "none", "--classes", "6",
            "--epochs", "3", "--batch-size", "32", "--lr", "0.01", "--scale", "16", "--margin", "0.2",
            "--workers", "0", "--eval", "holdout", "--out", str(out), "--cache-dir", str(cache)]


@pytest.mark.slow
def test_two_process_run_matches_single_process(digits_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dist_run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "guie.train", *train_args(digits_dir, tmp_path / "ddp", tmp_path / "cache-ddp")],
        capture_output=True, text=True, env=env, timeout=300)
    assert dist_run.returncode == 0, dist_run.stderr[-3000:]
    assert dist_run.stdout.count("epoch 3/3") == 1  # only rank 0 prints

    # Both ranks wrote shards of their own into the one cache, covering all 240 images once.
    shards = shards_in(tmp_path / "cache-ddp")
    assert len(shards) == 2 and sum(s["rows"] for s in shards) == 240

    single = subprocess.run([sys.executable, "-m", "guie.train",
                             *train_args(digits_dir, tmp_path / "one", tmp_path / "cache-one")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = read_model_file(tmp_path / "ddp"), read_model_file(tmp_path / "one")
    for key, value in a["projection"]["state_dict"].items():
        assert torch.allclose(value, b["projection"]["state_dict"][key], atol=1e-4), key
    assert torch.allclose(a["head"]["state_dict"]["weight"], b["head"]["state_dict"]["weight"], atol=1e-4)
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
