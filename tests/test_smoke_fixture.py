"""The shared trained_run fixture produces a complete run folder."""
import json


def test_trained_run_has_model_and_beats_random(trained_run):
    assert (trained_run / "model.pt").is_file()
    ev = json.loads((trained_run / "eval.json").read_text())["holdout"]
    assert ev["mP@5"] > ev["random_projection_mP@5"]
