"""Dataset builders on the real MVTec AD bottle and on small trees laid out like each dataset."""

import json
import pathlib

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from af_jax.ops import edges as edges_lib
from af_jax import pixels
from af_jax.data_builders import common
from af_jax.data_builders.madsim import Madsim
from af_jax.data_builders.mvtec_ad import MvtecAd
from af_jax.data_builders.mvtec_loco import MvtecLoco
from af_jax.data_builders.real_iad import RealIad
from af_jax.data_builders.visa import Visa

SIZE = 32  # fake trees
REAL_SIZE = 64  # the real bottle


# ---------------------------------------------------------------- fake trees and building


def _write(path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), array)
  return path


def _photo(seed: int, height: int = 48, width: int = 48, gray: bool = False) -> np.ndarray:
  """A noisy picture with a bright square, so that edges and regions have something to find."""
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
  image[height // 4:3 * height // 4, width // 4:3 * width // 4] += 150
  return image[..., 0] if gray else image


def _mask(height: int, width: int, box: tuple[int, int, int, int], value: int = 255):
  """uint8 mask with `value` inside box = (top, left, bottom, right)."""
  mask = np.zeros((height, width), np.uint8)
  top, left, bottom, right = box
  mask[top:bottom, left:right] = value
  return mask


def _mvtec_tree(root: pathlib.Path, category: str, defect: str, gray: bool = False,
                count: int = 2) -> pathlib.Path:
  """train/good, test/good and test/<defect> with `count` images each, as MVTec AD ships."""
  cat = root / category
  for i in range(count):
    _write(cat / "train" / "good" / f"{i:03d}.png", _photo(i, gray=gray))
    _write(cat / "test" / "good" / f"{i:03d}.png", _photo(10 + i, gray=gray))
    _write(cat / "test" / defect / f"{i:03d}.png", _photo(20 + i, gray=gray))
    _write(cat / "ground_truth" / defect / f"{i:03d}_mask.png", _mask(48, 48, (0, 0, 24, 24)))
  return root


def _build(cls, root: pathlib.Path, data_dir: pathlib.Path, category: str,
           size: int = SIZE, edges: str = "canny", **kwargs):
  """Builds one category; returns (builder, {split: [example, ...]}) read back by name."""
  config = common.config_for(cls, category, size=size, edges=edges)
  builder = cls(config=config, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  sources = tfds.data_source(f"{cls.name}/{config.name}", data_dir=str(data_dir),
                             download=False)
  return builder, {split: [source[i] for i in range(len(source))]
                   for split, source in sources.items()}


def _by_name(examples) -> dict:
  return {ex["file_name"].decode(): ex for ex in examples}


def _fraction(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
  """Mean of a stored 0/255 mask inside box (top, left, bottom, right), in [0, 1]."""
  top, left, bottom, right = box
  return float(mask[top:bottom, left:right].mean()) / 255


# ---------------------------------------------------------------- the real bottle


@pytest.fixture(scope="module")
def real_bottle(bottle_dir, tmp_path_factory):
  return _build(MvtecAd, bottle_dir.parent, tmp_path_factory.mktemp("tfds"), "bottle",
                size=REAL_SIZE)


def test_real_bottle_counts_labels_and_masks(real_bottle):
  builder, splits = real_bottle
  assert builder.info.splits["train"].num_examples == len(splits["train"]) == 209
  assert len(splits["test"]) == 83
  assert all(ex["label"] == 0 and ex["defect"] == b"good" and not ex["mask"].any()
             for ex in splits["train"])
  anomalous = [ex for ex in splits["test"] if ex["label"] == 1]
  assert len(anomalous) == 63
  assert {ex["defect"] for ex in anomalous} == {b"broken_large", b"broken_small",
                                                b"contamination"}
  assert all(ex["mask"].any() and set(np.unique(ex["mask"])) == {0, 255} for ex in anomalous)
  normal_test = [ex for ex in splits["test"] if ex["label"] == 0]
  assert len(normal_test) == 20 and not any(ex["mask"].any() for ex in normal_test)
  every = splits["train"] + splits["test"]
  assert {(ex["category"], ex["dataset"], ex["view"]) for ex in every} == {
      (b"bottle", b"mvtec_ad", b"")}
  assert len({ex["file_name"] for ex in every}) == 292


def test_real_bottle_pixels_are_their_resized_sources(real_bottle, bottle_dir):
  builder, splits = real_bottle
  example = _by_name(splits["test"])["bottle/test/broken_large/000.png"]
  source = cv2.cvtColor(cv2.imread(str(bottle_dir / "test/broken_large/000.png")),
                        cv2.COLOR_BGR2RGB)
  image = example["image"]
  np.testing.assert_array_equal(
      image, cv2.resize(source, (REAL_SIZE, REAL_SIZE), interpolation=cv2.INTER_AREA))
  truth = cv2.imread(str(bottle_dir / "ground_truth/broken_large/000_mask.png"), 0) > 0
  np.testing.assert_array_equal(
      example["mask"][..., 0] > 0,
      cv2.resize(truth.astype(np.uint8), (REAL_SIZE, REAL_SIZE),
                 interpolation=cv2.INTER_NEAREST) > 0)
  np.testing.assert_array_equal(example["edges"][..., 0],
                                edges_lib.canny_edges(image[None])[0] * 255)
  regions = example["regions"]
  assert regions.shape == (REAL_SIZE, REAL_SIZE, 1)
  assert 1 <= regions.max() <= builder.builder_config.max_regions


def test_pidinet_edges_are_stored_as_scaled_probabilities(tmp_path):
  root = _mvtec_tree(tmp_path / "madsim", "01Gorilla", "Burrs", count=1)
  _, splits = _build(Madsim, root, tmp_path / "tfds", "01Gorilla", edges="pidinet")
  assert (len(splits["train"]), len(splits["test"])) == (1, 2)
  for examples in splits.values():  # batches as the builder made them: no extra compiles
    images = np.stack([ex["image"] for ex in examples])
    expected = np.round(edges_lib.compute_edges(images, "pidinet") * 255)
    stored = np.stack([ex["edges"][..., 0] for ex in examples]).astype(np.float32)
    np.testing.assert_allclose(stored, expected, atol=1)
    assert len(np.unique(stored)) > 2  # soft probabilities, not a binary map


# ---------------------------------------------------------------- one fake tree per dataset


def test_mvtec_ad_grayscale_category_becomes_rgb(tmp_path):
  root = _mvtec_tree(tmp_path / "mvtec", "grid", "bent", gray=True)
  _, splits = _build(MvtecAd, root, tmp_path / "tfds", "grid")
  assert len(splits["train"]) == 2 and len(splits["test"]) == 4
  for ex in splits["train"] + splits["test"]:
    image = ex["image"]
    assert image.shape == (SIZE, SIZE, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
  bent = [ex for ex in splits["test"] if ex["defect"] == b"bent"]
  assert [ex["label"] for ex in bent] == [1, 1]
  assert all(_fraction(ex["mask"], (0, 0, 16, 16)) == 1 and
             _fraction(ex["mask"], (16, 16, 32, 32)) == 0 for ex in bent)


def test_madsim_builds_defects_by_folder(tmp_path):
  root = _mvtec_tree(tmp_path / "madsim", "20Puppy", "Stains")
  (root / "20Puppy" / "transforms.json").write_text("{}")
  _, splits = _build(Madsim, root, tmp_path / "tfds", "20Puppy")
  names = _by_name(splits["test"])
  assert names["20Puppy/test/Stains/001.png"]["label"] == 1
  assert names["20Puppy/test/Stains/001.png"]["defect"] == b"Stains"
  assert names["20Puppy/test/good/001.png"]["label"] == 0
  assert [ex["dataset"] for ex in splits["train"]] == [b"madsim"] * 2


def _loco_tree(root: pathlib.Path) -> pathlib.Path:
  """breakfast_box: non-square images, a logical anomaly with two masks of different values."""
  cat = root / "breakfast_box"
  for split, count in (("train", 2), ("validation", 1)):
    for i in range(count):
      _write(cat / split / "good" / f"{i:03d}.png", _photo(i, 40, 64))
  _write(cat / "test" / "good" / "000.png", _photo(5, 40, 64))
  _write(cat / "test" / "logical_anomalies" / "000.png", _photo(6, 40, 64))
  _write(cat / "ground_truth" / "logical_anomalies" / "000" / "000.png",
         _mask(40, 64, (0, 0, 20, 32), value=241))
  _write(cat / "ground_truth" / "logical_anomalies" / "000" / "001.png",
         _mask(40, 64, (20, 32, 40, 64), value=17))
  _write(cat / "test" / "structural_anomalies" / "000.png", _photo(7, 40, 64))
  _write(cat / "ground_truth" / "structural_anomalies" / "000" / "000.png",
         _mask(40, 64, (0, 32, 20, 64), value=255))
  (cat / "defects_config.json").write_text("[]")
  return root


def test_mvtec_loco_merges_masks_and_keeps_the_anomaly_kind(tmp_path):
  _, splits = _build(MvtecLoco, _loco_tree(tmp_path / "loco"), tmp_path / "tfds",
                     "breakfast_box")
  assert {split: len(examples) for split, examples in splits.items()} == {
      "train": 2, "validation": 1, "test": 3}
  assert all(ex["label"] == 0 for ex in splits["validation"])
  names = _by_name(splits["test"])
  logical = names["breakfast_box/test/logical_anomalies/000.png"]
  assert logical["label"] == 1 and logical["defect"] == b"logical_anomalies"
  mask = logical["mask"]
  assert set(np.unique(mask)) == {0, 255}
  # Union of both masks (top-left and bottom-right quarters), stretched to the square.
  assert _fraction(mask, (0, 0, 16, 16)) == 1 and _fraction(mask, (16, 16, 32, 32)) == 1
  assert _fraction(mask, (0, 16, 16, 32)) == 0 and _fraction(mask, (16, 0, 32, 16)) == 0
  structural = names["breakfast_box/test/structural_anomalies/000.png"]
  assert structural["defect"] == b"structural_anomalies"
  assert _fraction(structural["mask"], (0, 16, 16, 32)) == 1
  assert not names["breakfast_box/test/good/000.png"]["mask"].any()


def _visa_tree(root: pathlib.Path) -> pathlib.Path:
  """candle (2 normal train, 1 normal + 2 anomalous test) and a pcb1 row that must be ignored."""
  data = root / "candle" / "Data"
  rows = ["object,split,label,image,mask"]
  for i, split in enumerate(("train", "train", "test")):
    _write(data / "Images" / "Normal" / f"{i:04d}.JPG", _photo(i, 40, 60))
    rows.append(f"candle,{split},normal,candle/Data/Images/Normal/{i:04d}.JPG,")
  for i in range(2):
    _write(data / "Images" / "Anomaly" / f"{i:03d}.JPG", _photo(10 + i, 40, 60))
    # VisA marks anomalies with small non-zero values, not 255.
    _write(data / "Masks" / "Anomaly" / f"{i:03d}.png", _mask(40, 60, (0, 0, 20, 30), value=1))
    rows.append(f"candle,test,anomaly,candle/Data/Images/Anomaly/{i:03d}.JPG,"
                f"candle/Data/Masks/Anomaly/{i:03d}.png")
  rows.append("pcb1,train,normal,pcb1/Data/Images/Normal/0000.JPG,")
  (root / "split_csv").mkdir(parents=True)
  (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
  return root


def test_visa_follows_the_split_csv(tmp_path):
  _, splits = _build(Visa, _visa_tree(tmp_path / "visa"), tmp_path / "tfds", "candle")
  assert len(splits["train"]) == 2 and len(splits["test"]) == 3
  assert all(ex["label"] == 0 and ex["defect"] == b"good" for ex in splits["train"])
  anomalous = [ex for ex in splits["test"] if ex["label"] == 1]
  assert [ex["defect"] for ex in anomalous] == [b"Anomaly"] * 2
  for ex in anomalous:
    assert set(np.unique(ex["mask"])) == {0, 255}
    assert _fraction(ex["mask"], (0, 0, 16, 16)) == 1
    assert _fraction(ex["mask"], (16, 16, 32, 32)) == 0
  assert {ex["file_name"] for ex in splits["test"]} == {
      b"candle/Data/Images/Normal/0002.JPG", b"candle/Data/Images/Anomaly/000.JPG",
      b"candle/Data/Images/Anomaly/001.JPG"}


def _real_iad_tree(root: pathlib.Path, nested_jsons: bool = False) -> pathlib.Path:
  """audiojack: 2 OK views of S0001 (train), 1 OK + 1 NG/AK view of S0002 (test)."""
  cat = root / "realiad_256" / "audiojack"
  entries = {"train": [], "test": []}
  for split, sample, view in (("train", "S0001", "C1"), ("train", "S0001", "C2"),
                              ("test", "S0002", "C5")):
    rel = f"OK/{sample}/audiojack_{sample[1:]}_OK_{view}_20231021130213.jpg"
    _write(cat / rel, _photo(len(entries[split]), 50, 50))
    entries[split].append({"category": "audiojack", "anomaly_class": "OK", "image_path": rel,
                           "mask_path": None})
  rel = "NG/AK/S0003/audiojack_0003_NG_AK_C3_20231021130214.jpg"
  _write(cat / rel, _photo(9, 50, 50))
  _write(cat / rel.replace(".jpg", ".png"), _mask(50, 50, (25, 25, 50, 50)))
  entries["test"].append({"category": "audiojack", "anomaly_class": "AK", "image_path": rel,
                          "mask_path": rel.replace(".jpg", ".png")})
  json_dir = root / "realiad_jsons" / ("realiad_jsons" if nested_jsons else "")
  json_dir.mkdir(parents=True)
  (json_dir / "audiojack.json").write_text(json.dumps(
      {"meta": {"prefix": "", "normal_class": "OK"}, **entries}))
  return root


@pytest.mark.parametrize("nested_jsons", [False, True])
def test_real_iad_keeps_views_and_samples(tmp_path, nested_jsons):
  root = _real_iad_tree(tmp_path / "realiad", nested_jsons)
  _, splits = _build(RealIad, root, tmp_path / "tfds", "audiojack")
  assert sorted((ex["view"], ex["sample_id"]) for ex in splits["train"]) == [
      (b"C1", b"S0001"), (b"C2", b"S0001")]
  test = {(ex["view"], ex["sample_id"]): ex for ex in splits["test"]}
  assert set(test) == {(b"C5", b"S0002"), (b"C3", b"S0003")}
  anomalous = test[(b"C3", b"S0003")]
  assert anomalous["label"] == 1 and anomalous["defect"] == b"AK"
  assert _fraction(anomalous["mask"], (16, 16, 32, 32)) == 1
  assert _fraction(anomalous["mask"], (0, 0, 16, 16)) == 0
  assert test[(b"C5", b"S0002")]["defect"] == b"good"
  assert anomalous["file_name"].startswith(b"realiad_256/audiojack/NG/AK/S0003/")


def test_precomputed_region_masks_are_resized_with_their_image(tmp_path):
  root = _mvtec_tree(tmp_path / "mvtec", "cable", "bent_wire")
  regions_dir = tmp_path / "sam"
  for image in sorted(root.rglob("*.png")):
    if "ground_truth" not in image.parts:  # one label map per source image, at 48 x 48
      _write(regions_dir / image.relative_to(root), _mask(48, 48, (12, 12, 36, 36), value=3))
  config = common.config_for(MvtecAd, "cable", size=SIZE, edges="canny",
                             regions_dir=str(regions_dir))
  assert config.name == "cable-32px-canny-regions.sam"
  builder = MvtecAd(config=config, data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  expected = _mask(SIZE, SIZE, (8, 8, 24, 24), value=1)[..., None]
  for examples in builder.as_data_source().values():
    assert len(examples) and all((ex["regions"] == expected).all() for ex in examples)
  (regions_dir / "cable" / "train" / "good" / "001.png").unlink()
  missing = MvtecAd(config=config, data_dir=str(tmp_path / "tfds2"))
  with pytest.raises(common.BadInputError, match="cable/train/good/001"):
    missing.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(root)))


# ---------------------------------------------------------------- configs


def test_configs_are_one_per_category_and_custom_ones_are_named_by_options():
  assert list(MvtecAd.builder_configs)[:2] == ["bottle", "cable"]
  assert len(MvtecAd.builder_configs) == 15 and len(Visa.builder_configs) == 12
  assert len(MvtecLoco.builder_configs) == 5 and len(Madsim.builder_configs) == 20
  assert len(RealIad.builder_configs) == 30
  assert common.config_for(MvtecAd, "bottle") is MvtecAd.builder_configs["bottle"]
  custom = common.config_for(MvtecAd, "metal_nut", size=64, edges="canny")
  assert (custom.name, custom.category, custom.size, custom.edges) == (
      "metal_nut-64px-canny", "metal_nut", 64, "canny")
  with pytest.raises(TypeError, match="unknown build options"):
    common.config_for(MvtecAd, "bottle", colour=True)


# ---------------------------------------------------------------- bad input


def _prepare(cls, root, data_dir, category, **kwargs):
  config = common.config_for(cls, category, size=SIZE, edges="canny")
  builder = cls(config=config, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return builder


def test_missing_manual_folder_names_it(tmp_path):
  with pytest.raises(common.LayoutError, match=str(tmp_path / "nowhere")):
    _prepare(MvtecAd, tmp_path / "nowhere", tmp_path / "tfds", "bottle")


def test_category_not_downloaded_names_the_folder_and_what_is_there(tmp_path):
  root = _mvtec_tree(tmp_path / "mvtec", "cable", "bent_wire")
  with pytest.raises(common.LayoutError) as error:
    _prepare(MvtecAd, root, tmp_path / "tfds", "bottle")
  assert str(root / "bottle") in str(error.value) and "found in" in str(error.value)
  assert "cable" in str(error.value)


def test_unknown_category_lists_the_known_ones(tmp_path):
  root = _mvtec_tree(tmp_path / "mvtec", "cable", "bent_wire")
  with pytest.raises(common.LayoutError, match="unknown category 'bottel'.*bottle, cable"):
    _prepare(MvtecAd, root, tmp_path / "tfds", "bottel")


def test_wrong_layout_names_the_missing_folder(tmp_path):
  root = _mvtec_tree(tmp_path / "mvtec", "cable", "bent_wire")
  (root / "cable" / "train").rename(root / "cable" / "training")
  with pytest.raises(common.LayoutError, match=str(root / "cable" / "train" / "good")):
    _prepare(MvtecAd, root, tmp_path / "tfds", "cable")


def test_visa_without_split_csv_names_it(tmp_path):
  root = _visa_tree(tmp_path / "visa")
  (root / "split_csv" / "1cls.csv").unlink()
  with pytest.raises(common.LayoutError, match=str(root / "split_csv" / "1cls.csv")):
    _prepare(Visa, root, tmp_path / "tfds", "candle")


@pytest.mark.parametrize("damage", ["corrupt_image", "orphan_mask", "image_without_mask"])
def test_bad_file_stops_naming_it_or_is_skipped_and_counted(tmp_path, damage):
  root = _mvtec_tree(tmp_path / "mvtec", "cable", "bent_wire")
  cat = root / "cable"
  if damage == "corrupt_image":
    bad = cat / "test" / "good" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n this is not an image")
  elif damage == "orphan_mask":
    bad = _write(cat / "ground_truth" / "bent_wire" / "007_mask.png", _mask(48, 48, (0, 0, 9, 9)))
  else:
    bad = cat / "test" / "bent_wire" / "001.png"
    (cat / "ground_truth" / "bent_wire" / "001_mask.png").unlink()
  with pytest.raises(common.BadInputError, match=str(bad)):
    _prepare(MvtecAd, root, tmp_path / "tfds", "cable")
  builder = _prepare(MvtecAd, root, tmp_path / "tfds", "cable", skip_bad=True)
  assert len(builder.skipped) == 1 and str(bad) in builder.skipped[0]
  expected_test = 3 if damage != "orphan_mask" else 4
  assert builder.info.splits["test"].num_examples == expected_test


def test_visa_mask_without_image_and_missing_image_are_reported(tmp_path):
  root = _visa_tree(tmp_path / "visa")
  orphan = _write(root / "candle" / "Data" / "Masks" / "Anomaly" / "005.png",
                  _mask(40, 60, (0, 0, 5, 5)))
  with pytest.raises(common.BadInputError, match=f"{orphan}: mask without an image"):
    _prepare(Visa, root, tmp_path / "tfds", "candle")
  orphan.unlink()
  missing = root / "candle" / "Data" / "Images" / "Normal" / "0001.JPG"
  missing.unlink()
  with pytest.raises(common.BadInputError, match=f"{missing}: image listed in .*1cls.csv:3"):
    _prepare(Visa, root, tmp_path / "tfds", "candle")


def test_real_iad_anomaly_without_mask_is_reported(tmp_path):
  root = _real_iad_tree(tmp_path / "realiad")
  json_path = root / "realiad_jsons" / "audiojack.json"
  lists = json.loads(json_path.read_text())
  lists["test"][-1]["mask_path"] = None
  json_path.write_text(json.dumps(lists))
  with pytest.raises(common.BadInputError, match="NG/AK/S0003/.*without a mask"):
    _prepare(RealIad, root, tmp_path / "tfds", "audiojack")


def test_interrupted_build_never_reads_as_complete(tmp_path, monkeypatch):
  root = _mvtec_tree(tmp_path / "mvtec", "cable", "bent_wire")
  read_rgb, calls = pixels.read_rgb, []

  def failing_read(path):
    calls.append(path)
    if len(calls) == 4:  # the train split is written, the test split is not
      raise KeyboardInterrupt("interrupted mid-build")
    return read_rgb(path)

  monkeypatch.setattr(pixels, "read_rgb", failing_read)
  with pytest.raises(KeyboardInterrupt):
    _prepare(MvtecAd, root, tmp_path / "tfds", "cable")
  config = common.config_for(MvtecAd, "cable", size=SIZE, edges="canny")
  assert not MvtecAd(config=config, data_dir=str(tmp_path / "tfds")).is_prepared()
  with pytest.raises(ValueError, match="not found"):
    tfds.data_source(f"mvtec_ad/{config.name}", split="train",
                     data_dir=str(tmp_path / "tfds"), download=False)
  assert not list((tmp_path / "tfds").rglob("*.array_record*"))
