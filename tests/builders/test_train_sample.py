"""Building only a seeded draw of the training images (`train_per_category`)."""

import pytest
import tensorflow_datasets as tfds

from af_jax.commands import prepare
from af_jax.data_builders import common
from af_jax.data_builders import folder
from af_jax.data_builders import train_sample
from af_jax.data_builders.mvtec_ad import MvtecAd


def test_a_draw_is_seeded_in_listed_order_and_keeps_all_when_asked_for_more():
  items = list(range(50))
  drawn = train_sample.draw(items, 10, seed=0)
  assert drawn == train_sample.draw(items, 10, seed=0) == sorted(drawn)
  assert len(set(drawn)) == 10 and set(drawn) <= set(items)
  assert train_sample.draw(items, 10, seed=1) != drawn
  assert train_sample.draw(items, None, seed=0) == train_sample.draw(items, 99, seed=0) == items


def test_a_draw_is_named_by_its_size_and_seed_and_names_read_back():
  config = common.config_for(MvtecAd, "bottle", train_per_category=5, sample_seed=2)
  assert config.name == "bottle-sample5-sampleseed2"
  assert common.parse_config_name(config.name) == (
      "bottle", {"train_per_category": 5, "sample_seed": 2})
  assert folder.parse_config_name("my-widget-64px-sample7") == (
      "my-widget", {"size": 64, "train_per_category": 7})
  with pytest.raises(ValueError, match="give train_per_category too"):
    common.config_for(MvtecAd, "bottle", sample_seed=2)
  with pytest.raises(ValueError, match="at least 1"):
    common.config_for(MvtecAd, "bottle", train_per_category=0)


def test_prepare_builds_only_the_drawn_training_images_and_records_the_draw(bottle_dir, tmp_path,
                                                                           capsys):
  manual = tmp_path / "mvtec"
  manual.mkdir()
  (manual / "bottle").symlink_to(bottle_dir)
  argv = ["--dataset", "mvtec_ad", "--manual_dir", str(manual), "--data_dir",
          str(tmp_path / "out"), "--size", "32", "--edges", "canny",
          "--train_per_category", "5", "--sample_seed", "1"]
  assert prepare.main(argv) == 0
  name = "mvtec_ad/bottle-32px-canny-sample5-sampleseed1"
  assert name in capsys.readouterr().out
  builder = tfds.builder(name, data_dir=str(tmp_path / "out"))
  assert builder.info.metadata["train_sample"] == {"per_category": 5, "seed": 1, "listed": 209}
  splits = tfds.data_source(name, data_dir=str(tmp_path / "out"), download=False)
  listed = sorted(f"bottle/train/good/{p.name}"
                  for p in (bottle_dir / "train" / "good").iterdir())
  drawn = train_sample.draw(listed, 5, seed=1)
  assert sorted(example["file_name"].decode() for example in splits["train"]) == drawn
  assert len(splits["test"]) == 83  # Test splits stay whole.
  _, _, (config,) = prepare.plan(["--dataset", "mvtec_ad", "--manual_dir", str(manual),
                                  "--data_dir", str(tmp_path / "out"),
                                  "--categories", name.split("/")[1]])
  assert config.name == name.split("/")[1]  # The printed name plans that very build.
