"""One CLI convention: every verb in the README exists, and `--help` lists its own flags; the
shipped configs are found from any folder; `--version` and `info` describe the install."""

import json
import logging
import re

import jax
import pytest

import af_jax
from af_jax import cli
from af_jax.commands import configs
from af_jax.commands import train
from conftest import REPO

README_VERBS = sorted(set(re.findall(r"af-jax (\w[\w-]*)", (REPO / "README.md").read_text())))


def test_the_readme_names_only_verbs_that_exist():
  assert set(README_VERBS) == set(cli.COMMANDS)
  assert all(f"af-jax {verb}" in cli.__doc__ for verb in cli.COMMANDS)


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_help_exits_0_and_lists_the_verbs_flags(verb, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main([verb, "--help"])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert f"af-jax {verb}" in out and "--" in out
  if verb == "train":
    assert "--workdir" in out and "--config.FIELD=VALUE" in out


def test_train_config_overrides(tmp_path):
  config = train.parse_config(str(REPO / "configs" / "demo.py") + ":blaze",
                              ["--config.batch_size=4", "--config.blaze.normal_fraction=0.25",
                               "--config.model.compute_dtype", "bfloat16"])
  assert (config.stage, config.batch_size, config.blaze.normal_fraction,
          config.model.compute_dtype) == ("blaze", 4, 0.25, "bfloat16")
  with pytest.raises(ValueError, match="'blaze_normal_fraction' is now 'blaze.normal_fraction'"):
    train.parse_config(str(REPO / "configs" / "blaze.py"), ["--config.blaze_normal_fraction=1"])
  with pytest.raises(ValueError, match="nonexistent"):
    train.parse_config(str(REPO / "configs" / "blaze.py"), ["--config.nonexistent=1"])
  with pytest.raises(ValueError, match="unrecognized argument --bogus"):
    train.parse_config(str(REPO / "configs" / "blaze.py"), ["--bogus=1"])
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["train", "--config", str(REPO / "configs" / "boot.py"), "--workdir",
              str(tmp_path), "--config.blaze_change_scale=0.1"])
  assert exit_info.value.code == 2


def test_version(capsys):
  assert cli.main(["--version"]) == 0
  assert capsys.readouterr().out.strip() == f"af_jax {af_jax.__version__}"


def test_configs_lists_the_shipped_configs_with_their_first_docstring_line(capsys):
  assert cli.main(["configs"]) == 0
  out = capsys.readouterr().out
  assert configs.shipped() == sorted(p.name for p in (REPO / "configs").glob("[!_]*.py"))
  for name in configs.shipped():
    first_line = (REPO / "configs" / name).read_text().split('"""')[1].splitlines()[0]
    assert f"configs/{name}" in out and first_line in out, name


def test_a_missing_configs_file_is_the_shipped_one_and_a_users_own_wins(tmp_path, monkeypatch,
                                                                         caplog):
  """`--config configs/NAME.py` works from any folder, as from a checkout (configs.resolve)."""
  monkeypatch.chdir(tmp_path)
  caplog.set_level(logging.INFO, logger=configs.__name__)
  config = train.parse_config("configs/demo.py:flare", ["--config.batch_size=3"])
  assert (config.stage, config.batch_size) == ("flare", 3)
  assert f"config: {configs.SHIPPED / 'demo.py'} (shipped with af_jax" in caplog.text
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "boot.py").write_text(
      "from af_jax.configs import boot\n\n\ndef get_config():\n"
      "  config = boot.get_config()\n  config.batch_size = 7\n  return config\n")
  assert train.parse_config("configs/boot.py", []).batch_size == 7
  with pytest.raises(ValueError, match=r"config file configs/nope.py not found .* configs/boot.py"):
    train.parse_config("configs/nope.py", [])
  with pytest.raises(ValueError, match=r"config file mine/boot.py not found"):
    train.parse_config("mine/boot.py", [])


def test_info_prints_one_key_value_a_line_and_json(capsys):
  assert cli.main(["info"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  report = dict(line.split(": ", 1) for line in lines)
  assert len(report) == len(lines)
  assert report["af_jax"].startswith(af_jax.__version__)
  assert report["platform"] == jax.default_backend() and " x " in report["device kinds"]
  assert report["pidinet weights"].startswith("loads (table5_pidinet.npz")
  assert {"jax", "jaxlib", "flax", "orbax-checkpoint", "tensorflow-datasets", "grain", "numpy",
          "python", "jax plugins", "tensorflow"} <= set(report)
  assert cli.main(["info", "--json"]) == 0
  assert json.loads(capsys.readouterr().out) == report
