"""Config precedence (defaults < TOML file < command line) and validation."""
import pytest

from guie.cli import resolve_train_config, train_command
from guie.config import TrainConfig, read_config_file
from guie.errors import GuieError


def resolve(args):
    ctx = train_command.make_context("guie-train", list(args))
    params = dict(ctx.params)
    config_file, resume = params.pop("config_file"), params.pop("resume")
    params.pop("overwrite")
    return resolve_train_config(ctx, params, config_file, resume)[0]


def test_defaults_then_file_then_command_line(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('data = ["imagefolder:imgs"]\nout = "runs/a"\nepochs = 7\nlr = 0.5\nbackbone = "guie-tiny"\n')
    cfg = resolve(["--config", str(cfg_file), "--epochs", "3"])
    assert cfg.epochs == 3  # command line beats file
    assert cfg.lr == 0.5  # file beats default
    assert cfg.batch_size == TrainConfig().batch_size  # default
    assert cfg.data == [f"imagefolder:{(tmp_path / 'imgs').resolve()}"]  # relative to the file


def test_command_line_default_values_do_not_override_file(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('data = ["demo:digits"]\nout = "o"\nhead = "subcenter"\n')
    assert resolve(["--config", str(cfg_file)]).head == "subcenter"


def test_unknown_key_suggests_the_right_one(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text("epoch = 3\n")
    with pytest.raises(GuieError, match="unknown key 'epoch'.*did you mean: epochs"):
        read_config_file(cfg_file)


def test_wrong_type_in_file(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('epochs = "many"\n')
    with pytest.raises(GuieError, match="'epochs' must be int"):
        read_config_file(cfg_file)


def test_train_table_and_kebab_keys(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('[train]\nbatch-size = 32\nmax_per_class = 5\n')
    assert read_config_file(cfg_file) == {"batch_size": 32, "max_per_class": 5}


@pytest.mark.parametrize("override, message", [
    ({"epochs": 0}, "--epochs"), ({"holdout_frac": 1.5}, "--holdout-frac"), ({"data": []}, "no data"),
    ({"out": None}, "no run folder"), ({"margin": -0.1}, "--margin"),
])
def test_validation(override, message):
    values = {"data": ["demo:digits"], "out": "x", **override}
    with pytest.raises(GuieError, match=message):
        TrainConfig(**values).validate()


def test_classes_sweep_from_command_line_and_file(tmp_path):
    ctx = train_command.make_context("guie-train", ["--data", "demo:digits", "--out", "o", "--classes", "3,5,8"])
    params = dict(ctx.params)
    cfg, sweep = resolve_train_config(ctx, {k: v for k, v in params.items()
                                            if k not in ("config_file", "resume", "overwrite")}, None, False)
    assert sweep == [3, 5, 8] and cfg.classes is None
    cfg_file = tmp_path / "s.toml"
    cfg_file.write_text('data = ["demo:digits"]\nout = "o"\nclasses = [10, 20]\n')
    ctx = train_command.make_context("guie-train", ["--config", str(cfg_file)])
    assert resolve_train_config(ctx, {k: v for k, v in ctx.params.items()
                                      if k not in ("config_file", "resume", "overwrite")}, str(cfg_file), False)[1] == [10, 20]
    assert resolve(["--data", "demo:digits", "--out", "o", "--classes", "7"]).classes == 7
    with pytest.raises(GuieError, match="comma-separated counts"):
        resolve(["--data", "demo:digits", "--out", "o", "--classes", "7,x"])
