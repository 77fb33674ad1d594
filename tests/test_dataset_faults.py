"""Prepared dataset files gone bad: one error naming dataset, split, file and the rebuild command.

Real ArrayRecord shards of the tiny synthetic set, with bytes overwritten or cut short. (The
rebuild itself, `af-jax prepare --overwrite`: tests/commands/test_prepare.py.)
"""

import os
import shutil

import pytest

from af_jax import cli
from af_jax import input_pipeline
from conftest import corrupt_bytes
from tiny_config import tiny_config


@pytest.fixture
def broken_data(tiny_synthetic, tmp_path):
  """(data_dir copy, category, its test shard, its train shard)."""
  data_dir = shutil.copytree(tiny_synthetic[0], tmp_path / "data")
  name = tiny_synthetic[1][0]
  (version,) = (data_dir / "synthetic" / name).glob("*.*.*")
  return (data_dir, name, next(version.glob("*-test.array_record-*")),
          next(version.glob("*-train.array_record-*")))


def test_overwritten_bytes_name_the_dataset_split_file_and_rebuild_command(runs, broken_data,
                                                                           capsys):
  data_dir, name, test_shard, _ = broken_data
  corrupt_bytes(test_shard, 2000, 2048)
  with pytest.raises(input_pipeline.DatasetError) as error:
    list(input_pipeline.make_eval_dataset(str(data_dir), "synthetic", name))
  message = str(error.value)
  assert f"dataset synthetic/{name}, split 'test': file {test_shard} is corrupt" in message
  assert "chunk data hash mismatch" in message
  assert message.endswith(f"Rebuild it with `af-jax prepare --dataset synthetic --categories "
                          f"{name} --data_dir {data_dir} --overwrite`")
  code = cli.main(["evaluate", "--workdir", str(runs[0] / "blaze"), "--dataset", "synthetic",
                   "--categories", name, "--data_dir", str(data_dir)])
  err = capsys.readouterr().err
  assert code == 1 and "Traceback" not in err, err
  last = err.strip().splitlines()[-1]  # Above it: only the progress bar.
  assert last.startswith("af-jax evaluate: error: dataset") and str(test_shard) in last


def test_a_truncated_shard_stops_training_in_one_line(broken_data, tmp_path, capsys,
                                                       restore_logging):
  data_dir, name, _, train_shard = broken_data
  os.truncate(train_shard, train_shard.stat().st_size // 3)
  config = tiny_config("boot", data_dir, [name])
  with pytest.raises(input_pipeline.DatasetError,
                     match=rf"split 'train': file {train_shard} is corrupt or truncated"):
    next(input_pipeline.make_train_iterator(config.data, global_batch_size=4, seed=0))
  config_file = tmp_path / "config.py"
  config_file.write_text("from tiny_config import tiny_config\n\ndef get_config():\n"
                         f"  return tiny_config('boot', {str(data_dir)!r}, {[name]!r})\n")
  code = cli.main(["train", "--config", str(config_file), "--workdir", str(tmp_path / "run")])
  err = capsys.readouterr().err
  assert code == 1 and "Traceback" not in err, err
  last = err.strip().splitlines()[-1]  # Above it: the run's own log lines (train logs INFO).
  assert last.startswith("af-jax train: error: ") and err.count("af-jax train: error") == 1
  assert f"file {train_shard} is corrupt or truncated" in last
