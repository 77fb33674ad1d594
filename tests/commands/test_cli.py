"""One CLI convention: every verb in the README exists, and `--help` lists its own flags."""

import re

import pytest

from af_jax import cli
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
