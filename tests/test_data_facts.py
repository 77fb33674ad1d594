"""Data facts: written at prepare time, read from every category, checked, recorded by a run."""

import json
import shutil

import numpy as np
import pytest

from af_jax import checkpoint
from af_jax import data_facts
from af_jax import input_pipeline
from af_jax.configs import mix82


def _facts(name, **changes):
  return dict(dict(edge_method="canny", image_size=32, max_regions=8, name=name,
                   version="1.0.0"), **changes)


def test_combine_names_the_two_datasets_that_disagree():
  combined = data_facts.combine([_facts("a/x"), _facts("b/y")])
  assert combined == dict(edge_method="canny", image_size=32, max_regions=8,
                          datasets=[dict(name="a/x", version="1.0.0"),
                                    dict(name="b/y", version="1.0.0")])
  for fact, value in (("edge_method", "pidinet"), ("image_size", 64), ("max_regions", 4)):
    with pytest.raises(ValueError, match=f"a/x and c/z disagree on {fact}"):
      data_facts.combine([_facts("a/x"), _facts("b/y"), _facts("c/z", **{fact: value})])


def _data_config(data_dir, names):
  return mix82.get_data_config(data_dir=str(data_dir), image_size=32,
                               sources=mix82.sources_for("synthetic", names))


def test_prepared_data_records_its_facts(tiny_synthetic):
  data_dir, names = tiny_synthetic
  facts = input_pipeline.read_data_facts(_data_config(data_dir, names))
  assert facts == dict(edge_method="canny", image_size=32, max_regions=8,
                       datasets=[dict(name=f"synthetic/{n}", version="1.0.0") for n in names])


def test_a_run_records_the_facts_of_its_data(runs):
  root, data_dir, names = runs
  recorded = json.loads((root / "boot" / checkpoint.CONFIG_FILE).read_text())["data_facts"]
  assert recorded == input_pipeline.read_data_facts(_data_config(data_dir, names))


def test_data_prepared_without_facts_is_refused_with_the_fix(tiny_synthetic, tmp_path):
  data_dir, names = tiny_synthetic
  copy = tmp_path / "old"
  shutil.copytree(data_dir / "synthetic" / names[0], copy / "synthetic" / names[0])
  metadata = next((copy / "synthetic" / names[0]).glob("*/metadata.json"))
  metadata.unlink()
  with pytest.raises(ValueError, match="prepared before af_jax recorded.*re-run `af-jax prepare`"):
    input_pipeline.read_data_facts(_data_config(copy, names[:1]))


def test_region_labels_above_max_regions_stop_training():
  features = input_pipeline._TrainFeatures(0, "synthetic/circuit", max_regions=2)  # pylint: disable=protected-access
  example = dict(image=np.zeros((4, 4, 3), np.uint8), edges=np.zeros((4, 4, 1), np.uint8),
                 regions=np.full((4, 4, 1), 2, np.uint8), mask=np.zeros((4, 4, 1), np.uint8),
                 label=0)
  assert features(7, example)["regions"].max() == 2
  example["regions"][0, 0] = 3
  with pytest.raises(ValueError, match="synthetic/circuit holds region label 3 above its "
                                       "max_regions 2"):
    features(7, example)
