"""`af-jax prepare --mix`: a root of two real datasets, resuming, the training draw, bad input."""

import pathlib
import re
import sys

import pytest

from af_jax import input_pipeline
from af_jax.commands import prepare
from af_jax.commands import prepare_mix
from af_jax.configs import mix82
from mix_root import real_mix_root  # pylint: disable=unused-import
from mix_root import TEST_BAD, TEST_GOOD, TRAIN


def _mix(root, mix, out, *extra) -> int:
  return prepare.main(["--mix", str(mix), "--manual_root", str(root), "--data_dir", str(out),
                       "--size", "32", "--edges", "canny", *map(str, extra)])


def _row(printed: str, dataset: str, build: str, train: int, test: int, status: str) -> bool:
  return bool(re.search(rf"^{dataset}\s+{build}\s+{train}\s+{test}\s+[\d.]+\s+\S+\s+{status}$",
                        printed, re.M))


def test_mix_builds_what_is_there_lists_what_is_not_and_is_ready_to_train(real_mix_root,
                                                                           tmp_path, capsys):
  root, mix = real_mix_root
  out = tmp_path / "tfds"
  assert _mix(root, mix, out, "--train_per_category", "mix") == 0
  printed = capsys.readouterr().out
  assert f"visa: 1 category (not in {root / 'visa'}): pcb2" in printed
  test = TEST_GOOD + TEST_BAD
  assert _row(printed, "mvtec_ad", "bottle-32px-canny", TRAIN, test, "built")
  assert _row(printed, "visa", "pcb1-32px-canny-sample3", 3, test, "built")
  # Training finds each build by its category's name, as the mix lists it.
  train = input_pipeline.open_split(str(out), "visa", "pcb1", "train")
  assert len(train) == 3
  assert train.dataset_info.metadata["train_sample"] == {"per_category": 3, "seed": 0,
                                                         "listed": TRAIN}
  assert len(input_pipeline.open_split(str(out), "mvtec_ad", "bottle", "train")) == TRAIN

  assert _mix(root, mix, out, "--train_per_category", "mix") == 0  # Nothing left to build.
  printed = capsys.readouterr().out
  assert _row(printed, "visa", "pcb1-32px-canny-sample3", 3, test, "already built")
  assert "0 built, 2 already built" in printed


def test_an_interrupted_mix_resumes_and_never_shows_a_half_built_category(real_mix_root,
                                                                          tmp_path, capsys):
  root, mix = real_mix_root
  out = tmp_path / "tfds"
  bad = root / "visa" / "pcb1" / "Data" / "Images" / "Anomaly" / "001.png"
  image = bad.resolve()
  bad.unlink()
  bad.write_bytes(b"not a png")  # Read after the whole train split is written.
  assert _mix(root, mix, out) == 1
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error.startswith("af-jax prepare: error: ") and str(bad) in error
  assert not (out / "visa").exists() or not list((out / "visa").rglob("dataset_info.json"))
  with pytest.raises(FileNotFoundError, match="is not prepared"):
    input_pipeline.open_split(str(out), "visa", "pcb1", "train")

  bad.unlink()
  bad.symlink_to(image)
  assert _mix(root, mix, out) == 0
  printed = capsys.readouterr().out
  assert _row(printed, "mvtec_ad", "bottle-32px-canny", TRAIN, 4, "already built")
  assert _row(printed, "visa", "pcb1-32px-canny", TRAIN, 4, "built")


def test_a_root_without_any_dataset_names_it_and_what_belongs_there(tmp_path, real_mix_root,
                                                                    capsys):
  _, mix = real_mix_root
  (tmp_path / "empty" / "photos").mkdir(parents=True)
  assert _mix(tmp_path / "empty", mix, tmp_path / "out") == 1
  (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
  assert f"{tmp_path / 'empty'} holds none of the datasets of {mix}" in line
  assert f"{tmp_path / 'empty' / 'visa'}" in line


def test_a_dataset_folder_in_another_layout_names_it_and_the_layout(tmp_path, real_mix_root,
                                                                   capsys):
  root, mix = real_mix_root
  (root / "mvtec_ad").rename(tmp_path / "aside")
  (root / "mvtec_ad").mkdir()
  (tmp_path / "aside").rename(root / "mvtec_ad" / "mvtec_anomaly_detection")  # One level deep.
  assert _mix(root, mix, tmp_path / "out") == 1
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert f"{root / 'mvtec_ad'} holds no mvtec_ad category" in line
  assert f"{root / 'mvtec_ad'}/<category>/train/good/000.png" in line
  assert not (tmp_path / "out" / "visa").exists()  # Stopped before building anything.


@pytest.mark.parametrize("extra, message", [
    (["--beam_pipeline_options", "direct_num_workers=2"],
     "--beam_pipeline_options needs apache-beam, which is not installed: pip install "
     "'af_jax[beam]'"),
    (["--sample_seed", "3"], "--sample_seed seeds the --train_per_category draw"),
    (["--train_per_category", "0"], "--train_per_category must be a positive number or mix"),
    (["--categories", "bottle"], "--categories does not go with --mix"),
])
def test_usage_errors_exit_2_naming_the_option(real_mix_root, tmp_path, capsys, monkeypatch,
                                               extra, message):
  root, mix = real_mix_root
  for module in ("apache_beam", "apache_beam.options"):  # As where it is not installed.
    monkeypatch.setitem(sys.modules, module, None)
  with pytest.raises(SystemExit) as exit_:
    _mix(root, mix, tmp_path / "out", *extra)
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err


def test_a_mix_file_without_sources_is_a_usage_error(real_mix_root, tmp_path, capsys):
  root, _ = real_mix_root
  empty = tmp_path / "nomix.py"
  empty.write_text("X = 1\n")
  with pytest.raises(SystemExit):
    _mix(root, empty, tmp_path / "out")
  assert f"--mix {empty} defines neither get_data_config() nor get_config()" in \
      capsys.readouterr().err


def test_a_shipped_mix_is_found_from_any_folder(tmp_path, monkeypatch):
  """`--mix configs/mix82.py`, as the README gives it, works where no configs/ folder is."""
  monkeypatch.chdir(tmp_path)
  sources, is_training_config = prepare_mix.load_sources(pathlib.Path("configs/mix82.py"))
  assert sources == mix82.paper_sources() and not is_training_config
  with pytest.raises(ValueError, match="config file configs/mix83.py not found"):
    prepare_mix.load_sources(pathlib.Path("configs/mix83.py"))
