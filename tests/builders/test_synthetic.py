"""The built-in synthetic data set: rendering, exact masks, and the TFDS builder."""

import itertools
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from af_jax.data_builders import config as config_lib
from af_jax.data_builders import synthetic
from af_jax.data_builders.synthetic import render

REPO = pathlib.Path(__file__).resolve().parents[2]
SIZE = 48
SMALL_BUILD = dict(size=32, edges="canny", num_train=4, num_test_normal=3, num_test_anomalous=10)
ALL_DEFECTS = [(c, d) for c in render.CATEGORIES for d in render.DEFECTS[c]]


def _rng(seed):
  return np.random.default_rng(seed)


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("category,defect", ALL_DEFECTS)
def test_mask_is_exactly_what_the_anomaly_changed(category, defect):
  for seed in range(3):
    image, mask = render.render_anomalous(_rng(seed), category, SIZE, defect)
    normal = render.render_normal(_rng(seed), category, SIZE)
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    assert mask.dtype == bool and mask.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(mask, np.any(image != normal, axis=-1))
    # Visible but not trivial: at least a few pixels, at most a fifth of the image.
    assert 4 <= mask.sum() <= 0.2 * SIZE * SIZE, (seed, mask.mean())


@pytest.mark.parametrize("category", render.CATEGORIES)
def test_anomalies_cover_a_few_percent_on_average(category):
  areas = [render.render_anomalous(_rng(seed), category, 64, defect)[1].mean()
           for seed, defect in itertools.product(range(3), render.DEFECTS[category])]
  assert 0.004 < np.mean(areas) < 0.05, np.mean(areas)


def test_misplaced_part_marks_old_and_new_place():
  for seed in range(4):
    _, mask = render.render_anomalous(_rng(seed), "circuit", 128, "misplaced")
    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    assert count - 1 >= 2, seed  # the part's old footprint and its new one


@pytest.mark.parametrize("defect", ["missing", "extra"])
def test_gear_missing_tooth_and_extra_hole_show_the_dark_table(defect):
  for seed in range(3):
    image, mask = render.render_anomalous(_rng(seed), "gear", 64, defect)
    normal = render.render_normal(_rng(seed), "gear", 64)
    assert image[mask].mean() < normal[mask].mean() - 20


@pytest.mark.parametrize("category", render.CATEGORIES)
def test_normal_images_vary(category):
  images = [render.render_normal(_rng(seed), category, 64).astype(np.float32)
            for seed in range(4)]
  # Beyond sensor noise: blurred images differ too (pose, light, colour).
  blurred = [cv2.GaussianBlur(image, (0, 0), 2) for image in images]
  for a, b in itertools.combinations(blurred, 2):
    assert np.abs(a - b).mean() > 2


@pytest.mark.parametrize("category", render.CATEGORIES)
@pytest.mark.parametrize("size", [16, 31, 256])
def test_any_size_renders(category, size):
  image = render.render_normal(_rng(0), category, size)
  _, mask = render.render_anomalous(_rng(0), category, size, render.DEFECTS[category][0])
  assert image.shape == (size, size, 3) and mask.shape == (size, size) and mask.any()
  assert image.std() > 5  # a picture, not a flat field


def test_same_generator_state_same_image():
  for category in render.CATEGORIES:
    np.testing.assert_array_equal(render.render_normal(_rng(7), category, SIZE),
                                  render.render_normal(_rng(7), category, SIZE))


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="unknown synthetic category 'bottle'"):
    render.render_normal(_rng(0), "bottle", SIZE)
  with pytest.raises(ValueError, match="unknown defect 'dent' for synthetic category 'fabric'"):
    render.render_anomalous(_rng(0), "fabric", SIZE, "dent")
  with pytest.raises(ValueError, match="size must be an integer >= 16"):
    render.render_normal(_rng(0), "gear", 8)
  with pytest.raises(TypeError, match="numpy.random.Generator"):
    render.render_normal(0, "gear", SIZE)


# ---------------------------------------------------------------- configs


def test_config_names():
  assert synthetic.config_for("gear") is synthetic.Synthetic.builder_configs["gear"]
  assert synthetic.config_for("gear", size=128, seed=0).name == "gear"
  config = synthetic.config_for("gear", **SMALL_BUILD)
  assert config.name == "gear-32px-canny-train4-good3-bad10"
  assert (config.category, config.size, config.num_train) == ("gear", 32, 4)
  with pytest.raises(TypeError, match="unknown synthetic build options"):
    synthetic.config_for("gear", colour="red")
  with pytest.raises(ValueError, match="unknown synthetic category"):
    synthetic.config_for("bottle")
  with pytest.raises(ValueError, match="num_train must be an integer >= 0, got -1"):
    synthetic.config_for("gear", num_train=-1)
  with pytest.raises(ValueError, match="size must be an integer >= 16"):
    synthetic.config_for("gear", size=8)
  assert synthetic.config_for("gear", regions_dir="").name == "gear"
  assert synthetic.config_for("gear", regions_dir="/x/sam masks").name == "gear-regions.sammasks"


# ---------------------------------------------------------------- the TFDS builder


def _read(data_dir, name):
  sources = tfds.data_source(f"synthetic/{name}", data_dir=str(data_dir), download=False)
  return {split: [source[i] for i in range(len(source))] for split, source in sources.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("synthetic")
  return data_dir, synthetic.build(data_dir, **SMALL_BUILD)


def test_build_counts_splits_labels(built):
  data_dir, names = built
  assert names == [synthetic.config_for(c, **SMALL_BUILD).name for c in render.CATEGORIES]
  for category, name in zip(render.CATEGORIES, names):
    splits = _read(data_dir, name)
    assert sorted(splits) == ["test", "train"]
    assert len(splits["train"]) == 4 and len(splits["test"]) == 13
    for split, examples in splits.items():
      for ex in examples:
        assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
        for key in ("edges", "regions", "mask"):
          assert ex[key].shape == (32, 32, 1), key
        assert (ex["dataset"], ex["category"]) == (b"synthetic", category.encode())
        assert ex["view"] == b"" and ex["sample_id"] == b""
        defect = ex["defect"].decode()
        assert ex["file_name"].decode().startswith(f"{split}/{defect}/")
        assert ex["label"] == int(defect != "good")
        assert set(np.unique(ex["mask"])) <= {0, 255}
        assert ex["mask"].any() == bool(ex["label"])
    defects = [ex["defect"].decode() for ex in splits["test"]]
    assert defects.count("good") == 3
    assert set(defects) - {"good"} == set(render.DEFECTS[category])  # each defect appears
    assert all(ex["defect"] == b"good" for ex in splits["train"])


def test_build_is_deterministic(built, tmp_path):
  """A second build, in a fresh process, stores the same bytes for every feature of every example.

  (The record files themselves may differ: TFDS serializes each example as a protobuf map whose
  field order depends on the process.)
  """
  data_dir, names = built
  script = ("import sys; from af_jax.data_builders import synthetic; "
            f"synthetic.build(sys.argv[1], categories=['gear'], **{SMALL_BUILD!r})")
  subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO,
                 capture_output=True)
  raw = {key: tfds.decode.SkipDecoding() for key in ("image", "edges", "regions", "mask")}
  for split in ("train", "test"):
    first = tfds.data_source(f"synthetic/{names[1]}", data_dir=str(data_dir), decoders=raw)[split]
    second = tfds.data_source(f"synthetic/{names[1]}", data_dir=str(tmp_path), decoders=raw)[split]
    assert len(first) == len(second)
    for i in range(len(first)):
      assert first[i] == second[i], (split, i)


def test_builder_refuses_a_plain_config(tmp_path):
  config = config_lib.AfBuilderConfig(name="gear-plain", category="gear", size=32)
  with pytest.raises(TypeError, match="need a SyntheticConfig"):
    synthetic.Synthetic(config=config, data_dir=str(tmp_path)).download_and_prepare()


def test_pidinet_build(tmp_path):
  names = synthetic.build(tmp_path, categories=["circuit"], size=32, num_train=2,
                          num_test_normal=1, num_test_anomalous=1)
  assert names == ["circuit-32px-train2-good1-bad1"]
  splits = _read(tmp_path, names[0])
  edges = np.stack([ex["edges"] for ex in splits["train"] + splits["test"]])
  # Soft PiDiNet probabilities: many grey levels, strongest on the board's outline.
  assert len(np.unique(edges)) > 20 and edges.max() > 128
