"""The generic `folder` builder: real MPDD metal_plate; small trees of every format and fault."""

import logging
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from af_jax import pixels
from conftest import SHARED
from af_jax.data_builders import common
from af_jax.data_builders import folder
from af_jax.data_builders.folder import Folder

SIZE = 32
METAL_PLATE = SHARED / "data" / "mpdd" / "metal_plate"


# ---------------------------------------------------------------- trees and building


def _write(path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), array), path
  return path


def _photo(seed: int, height: int = 40, width: int = 40, gray: bool = False) -> np.ndarray:
  """A noisy picture with a bright square, so that edges and regions have something to find."""
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
  image[height // 4:3 * height // 4, width // 4:3 * width // 4] += 150
  return image[..., 0] if gray else image


def _mask(height: int = 40, width: int = 40, box=(0, 0, 20, 20)) -> np.ndarray:
  """uint8 mask, 255 inside box = (top, left, bottom, right)."""
  mask = np.zeros((height, width), np.uint8)
  top, left, bottom, right = box
  mask[top:bottom, left:right] = 255
  return mask


def _tree(root: pathlib.Path, category: str = "widget", test: bool = True) -> pathlib.Path:
  """2 train, 1 test/good and 2 test/crack images with `_mask` masks; returns the category."""
  cat = root / category
  for i in range(2):
    _write(cat / "train" / "good" / f"{i:03d}.png", _photo(i))
  if test:
    _write(cat / "test" / "good" / "000.png", _photo(10))
    for i in range(2):
      _write(cat / "test" / "crack" / f"{i:03d}.png", _photo(20 + i))
      _write(cat / "ground_truth" / "crack" / f"{i:03d}_mask.png", _mask())
  return cat


def _build(root: pathlib.Path, data_dir: pathlib.Path, category: str = "widget",
           size: int = SIZE, **kwargs) -> tuple[Folder, dict]:
  """Builds one category; returns (builder, {split: [example, ...]}) read back by name."""
  config = folder.config_for(category, size=size, edges="canny")
  builder = Folder(config=config, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  sources = tfds.data_source(f"folder/{config.name}", data_dir=str(data_dir), download=False)
  return builder, {split: [source[i] for i in range(len(source))]
                   for split, source in sources.items()}


def _by_name(examples) -> dict:
  return {ex["file_name"].decode(): ex for ex in examples}


def _fraction(mask: np.ndarray, box) -> float:
  top, left, bottom, right = box
  return float(mask[top:bottom, left:right].mean()) / 255


# ---------------------------------------------------------------- real data: MPDD metal_plate


@pytest.fixture(scope="module")
def metal_plate(tmp_path_factory):
  if not METAL_PLATE.is_dir():
    pytest.skip(f"real test data not found at {METAL_PLATE} (the ../shared folder beside the "
                "repository; set AF_JAX_SHARED to point elsewhere)")
  data_dir = tmp_path_factory.mktemp("tfds_mpdd")
  return (*_build(METAL_PLATE.parent, data_dir, "metal_plate"), data_dir)


def test_real_metal_plate_builds_as_a_category_no_builder_knows(metal_plate):
  builder, splits, data_dir = metal_plate
  assert builder.builder_config.name == "metal_plate-32px-canny"
  assert {split: len(examples) for split, examples in splits.items()} == {
      "train": 54, "test": 97}
  assert builder.info.splits["train"].num_examples == 54
  assert all(ex["label"] == 0 and not ex["mask"].any() for ex in splits["train"])
  good = [ex for ex in splits["test"] if ex["label"] == 0]
  defective = [ex for ex in splits["test"] if ex["label"] == 1]
  assert len(good) == 26 and not any(ex["mask"].any() for ex in good)
  assert len(defective) == 71 and {ex["defect"] for ex in defective} == {b"defective"}
  assert all(ex["mask"].any() and set(np.unique(ex["mask"])) == {0, 255} for ex in defective)
  every = splits["train"] + splits["test"]
  assert {(ex["category"], ex["dataset"]) for ex in every} == {(b"metal_plate", b"folder")}
  assert all(ex["image"].shape == (SIZE, SIZE, 3) for ex in every)
  assert builder.scorable and builder.source_dir == str(METAL_PLATE.resolve())
  # What a later process sees: the build's own metadata, read from its files.
  again = Folder(config=builder.builder_config, data_dir=str(data_dir))
  assert again.is_prepared() and again.scorable and again.source_dir == builder.source_dir
  assert dict(again.info.metadata)["image_size"] == SIZE


def test_real_metal_plate_pixels_are_their_resized_sources(metal_plate):
  _, splits, _ = metal_plate
  example = _by_name(splits["test"])["metal_plate/test/defective/000.png"]
  source = pixels.read_rgb(METAL_PLATE / "test" / "defective" / "000.png")
  np.testing.assert_array_equal(example["image"], pixels.resize_image(source, SIZE))
  truth = pixels.read_mask(METAL_PLATE / "ground_truth" / "defective" / "000_mask.png")
  np.testing.assert_array_equal(example["mask"], common.resize_mask(truth, SIZE))


# ---------------------------------------------------------------- formats, names, splits


def test_any_format_size_and_mask_naming(tmp_path):
  """PNG/JPEG/BMP/TIFF in any case, gray and colour, odd sizes; `_mask` and same-name masks."""
  root, category = tmp_path / "mine", "my-widget.v2"
  cat = root / category
  _write(cat / "train" / "good" / "a.png", _photo(0, 37, 53))
  _write(cat / "train" / "good" / "b.JPG", _photo(1, 41, 29, gray=True))
  _write(cat / "train" / "good" / "c.bmp", _photo(2, 64, 20))
  _write(cat / "train" / "good" / "d.TIFF", _photo(3, 33, 33, gray=True))
  _write(cat / "train" / "good" / "e.jpeg", _photo(4, 16, 90))
  _write(cat / "test" / "good" / "n.tif", _photo(5, 37, 53))
  _write(cat / "test" / "scratch" / "s1.jpg", _photo(6, 48, 64))
  _write(cat / "ground_truth" / "scratch" / "s1_mask.png", _mask(48, 64, (0, 0, 24, 32)))
  _write(cat / "test" / "scratch" / "s2.png", _photo(7, 48, 64, gray=True))
  _write(cat / "ground_truth" / "scratch" / "s2.BMP", _mask(48, 64, (24, 32, 48, 64)))
  _write(cat / "test" / "dent" / "x.TIF", _photo(8, 30, 30))
  _write(cat / "ground_truth" / "dent" / "x_mask.tiff", _mask(30, 30, (15, 0, 30, 15)))
  # Operating-system litter is ignored wherever it lies.
  for junk in (cat / "train" / "good" / ".DS_Store", cat / "test" / "good" / "Thumbs.db",
               cat / "ground_truth" / "scratch" / "._s1_mask.png", cat / "test" / "desktop.ini"):
    junk.write_bytes(b"\x00junk")
  builder, splits = _build(root, tmp_path / "tfds", category)
  assert builder.builder_config.name == "my-widget.v2-32px-canny"
  assert builder.skipped == [] and builder.scorable
  assert {split: len(examples) for split, examples in splits.items()} == {"train": 5, "test": 4}
  train = _by_name(splits["train"])
  assert sorted(train) == [f"my-widget.v2/train/good/{n}"
                           for n in ("a.png", "b.JPG", "c.bmp", "d.TIFF", "e.jpeg")]
  for name in ("b.JPG", "d.TIFF"):  # grayscale sources become RGB
    image = train[f"my-widget.v2/train/good/{name}"]["image"]
    assert image.shape == (SIZE, SIZE, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
  test = _by_name(splits["test"])
  assert test["my-widget.v2/test/good/n.tif"]["label"] == 0
  s1, s2 = test["my-widget.v2/test/scratch/s1.jpg"], test["my-widget.v2/test/scratch/s2.png"]
  assert (s1["label"], s1["defect"], s2["defect"]) == (1, b"scratch", b"scratch")
  assert _fraction(s1["mask"], (0, 0, 16, 16)) == 1
  assert _fraction(s1["mask"], (16, 16, 32, 32)) == 0
  assert _fraction(s2["mask"], (16, 16, 32, 32)) == 1
  assert _fraction(s2["mask"], (0, 0, 16, 16)) == 0
  x = test["my-widget.v2/test/dent/x.TIF"]
  assert x["defect"] == b"dent" and _fraction(x["mask"], (16, 0, 32, 16)) == 1


def test_train_only_category_builds_a_train_split_and_says_it_cannot_be_scored(tmp_path, caplog):
  root = tmp_path / "mine"
  _tree(root, test=False)
  with caplog.at_level(logging.WARNING, logger="af_jax.data_builders.folder.builder"):
    builder, splits = _build(root, tmp_path / "tfds")
  assert list(splits) == ["train"] and len(splits["train"]) == 2
  assert not builder.scorable and "train split only" in caplog.text
  assert "not scored" in caplog.text
  again = Folder(config=builder.builder_config, data_dir=str(tmp_path / "tfds"))
  assert again.is_prepared() and not again.scorable and list(again.info.splits) == ["train"]


def test_normal_test_images_alone_are_not_scorable(tmp_path):
  root = tmp_path / "mine"
  _write(_tree(root, test=False) / "test" / "good" / "000.png", _photo(3))
  builder, splits = _build(root, tmp_path / "tfds")
  assert {split: len(examples) for split, examples in splits.items()} == {"train": 2, "test": 1}
  assert not builder.scorable


def test_names_any_plain_folder_name_and_build_names_read_from_the_right():
  for name in ("widget", "Widget_2", "my-widget", "v1.2", "a-64px-b", "0day", "_x"):
    assert folder.check_category(name) == name
  for name in ("", ".", "..", ".hidden", "-x", "a/b", "a b", "wid\u00e9get", "widget-64px",
               "gear-canny", "a-k8", "a-regions.sam"):
    with pytest.raises(ValueError, match="cannot be a folder category"):
      folder.check_category(name)
  assert folder.parse_config_name("my-widget") == ("my-widget", {})
  assert folder.parse_config_name("my-widget-64px-canny") == (
      "my-widget", {"size": 64, "edges": "canny"})
  assert folder.parse_config_name("a-64px-b-k4") == ("a-64px-b", {"max_regions": 4})
  with pytest.raises(ValueError, match="'widget-64px'"):
    folder.parse_config_name("widget-64px-64px")
  # No registered configs, so a category's own name never clashes with one.
  assert Folder.builder_configs == {} and Folder.ANY_CATEGORY and Folder.CATEGORIES == ()
  plain = folder.config_for("widget")
  assert (plain.name, plain.category, plain.size, plain.edges) == ("widget", "widget", 256,
                                                                   "pidinet")
  custom = folder.config_for("my-widget", size=64, edges="canny")
  assert (custom.name, custom.category) == ("my-widget-64px-canny", "my-widget")
  assert Folder.parse_config_name(custom.name) == ("my-widget", {"size": 64, "edges": "canny"})
  assert Folder.config_for("my-widget", size=64, edges="canny").name == custom.name
  with pytest.raises(ValueError, match="cannot be a folder category"):
    folder.config_for("../etc")
  for text in ("train/good", "ground_truth/<defect>", "_mask"):
    assert text in Folder.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_an_overlong_category_is_refused_and_its_folder_ignored(tmp_path, caplog):
  """A 255-character category was `OSError: File name too long` once the build began."""
  long_name = "x" * 255
  with pytest.raises(ValueError, match="at most 100 characters, got 255 characters"):
    folder.config_for(long_name)
  _tree(tmp_path, long_name, test=False)
  _tree(tmp_path, "widget", test=False)
  assert Folder.found_categories(tmp_path) == ["widget"]
  assert f"Ignoring {tmp_path / long_name}" in caplog.text and "at most 100" in caplog.text


def test_builder_takes_a_build_name_and_needs_a_category(tmp_path):
  builder = Folder(config="my-widget-48px-canny", data_dir=str(tmp_path))
  assert (builder.category, builder.builder_config.size, builder.builder_config.edges) == (
      "my-widget", 48, "canny")
  with pytest.raises(ValueError, match="needs one"):
    Folder(data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="cannot be a folder category"):
    Folder(config="a b", data_dir=str(tmp_path))


def test_found_categories_are_the_folders_with_train(tmp_path):
  root = tmp_path / "mine"
  _tree(root, "widget", test=False)
  _tree(root, "gear-2", test=False)
  (root / "notes").mkdir()
  (root / ".cache" / "train").mkdir(parents=True)
  (root / "bad name" / "train").mkdir(parents=True)
  assert Folder.found_categories(root) == ["gear-2", "widget"]
  assert Folder.found_categories(tmp_path / "nowhere") == []


# ---------------------------------------------------------------- two folders, one name


def test_same_category_from_another_folder_is_refused_not_mixed(tmp_path):
  data_dir = tmp_path / "tfds"
  _tree(tmp_path / "alice")
  _tree(tmp_path / "bob", test=False)
  alice, _ = _build(tmp_path / "alice", data_dir)
  assert alice.source_dir == str((tmp_path / "alice" / "widget").resolve())
  with pytest.raises(common.LayoutError) as error:
    _build(tmp_path / "bob", data_dir)
  message = str(error.value)
  assert str(tmp_path / "alice" / "widget") in message
  assert str(tmp_path / "bob" / "widget") in message
  assert "Rename one of the folders" in message and "--data_dir" in message
  assert "\n" not in message
  again, splits = _build(tmp_path / "alice", data_dir)  # the same folder: reused
  assert len(splits["test"]) == 3 and again.source_dir == alice.source_dir
  bob, splits = _build(tmp_path / "bob", tmp_path / "tfds_bob")  # another data_dir: fine
  assert list(splits) == ["train"] and bob.source_dir.endswith("bob/widget")
  # Replacing the build on purpose (TFDS's overwrite mode, as `prepare --overwrite` rebuilds).
  config = folder.config_for("widget", size=SIZE, edges="canny")
  replaced = Folder(config=config, data_dir=str(data_dir))
  replaced.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(tmp_path / "bob"),
      download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
  assert Folder(config=config, data_dir=str(data_dir)).source_dir == bob.source_dir


# ---------------------------------------------------------------- bad input


def _prepare(root, data_dir, category="widget", **kwargs) -> Folder:
  config = folder.config_for(category, size=SIZE, edges="canny")
  builder = Folder(config=config, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return builder


def _raises(error_type, path, root, data_dir, **kwargs) -> str:
  """Builds, expecting a one-line `error_type` that names `path`; returns its message."""
  with pytest.raises(error_type, match=re.escape(str(path))) as error:
    _prepare(root, data_dir, **kwargs)
  assert "\n" not in str(error.value)
  return str(error.value)


def test_missing_manual_folder_category_and_train_folder_are_layout_errors(tmp_path):
  _raises(common.LayoutError, tmp_path / "nowhere", tmp_path / "nowhere", tmp_path / "tfds")
  root = tmp_path / "mine"
  _tree(root, "gear")
  message = _raises(common.LayoutError, root / "widget", root, tmp_path / "tfds")
  assert "found in" in message and "gear" in message
  cat = _tree(root)
  (cat / "train" / "good").rename(cat / "train" / "normal")
  _raises(common.LayoutError, cat / "train" / "good", root, tmp_path / "tfds")
  for image in (cat / "train" / "normal").iterdir():
    image.rename(cat / "train" / image.name)
  message = _raises(common.LayoutError, cat / "train" / "good", root, tmp_path / "tfds")
  assert "move them into good/" in message


def test_a_train_folder_that_is_a_link_loop_is_a_layout_error_naming_it(tmp_path):
  root = tmp_path / "mine"
  cat = _tree(root)
  shutil.rmtree(cat / "train" / "good")
  (cat / "train" / "good").symlink_to(cat / "train" / "good")
  message = _raises(common.LayoutError, cat / "train" / "good", root, tmp_path / "tfds")
  assert "symbolic link loop" in message


def test_empty_train_folder_is_a_layout_error_even_when_skipping(tmp_path):
  root = tmp_path / "mine"
  cat = _tree(root)
  for image in (cat / "train" / "good").iterdir():
    image.unlink()
  (cat / "train" / "good" / ".DS_Store").write_bytes(b"\x00")
  message = _raises(common.LayoutError, cat / "train" / "good", root, tmp_path / "tfds",
                    skip_bad=True)
  assert "found none" in message


def _damage(cat: pathlib.Path, damage: str) -> tuple[pathlib.Path, int, dict]:
  """Breaks the `_tree` category; returns (the file to name, files skipped, split sizes)."""
  truth, crack = cat / "ground_truth" / "crack", cat / "test" / "crack"
  if damage == "orphan_mask":
    return _write(truth / "007_mask.png", _mask()), 1, {"train": 2, "test": 3}
  if damage == "orphan_mask_folder":
    return _write(cat / "ground_truth" / "dent" / "000.png", _mask()), 1, {"train": 2, "test": 3}
  if damage == "image_without_mask":
    (truth / "001_mask.png").unlink()
    return crack / "001.png", 1, {"train": 2, "test": 2}
  if damage == "mask_size":
    return _write(truth / "001_mask.png", _mask(20, 40)), 1, {"train": 2, "test": 2}
  if damage == "unreadable_image":
    bad = cat / "test" / "good" / "000.png"
    bad.write_bytes(b"\x89PNG\r\n this is not an image")
    return bad, 1, {"train": 2, "test": 2}
  if damage == "unreadable_mask":
    bad = truth / "000_mask.png"
    bad.write_bytes(b"not a mask")
    return bad, 1, {"train": 2, "test": 2}
  if damage == "zero_byte_image":
    bad = cat / "train" / "good" / "001.png"
    bad.write_bytes(b"")
    return bad, 1, {"train": 1, "test": 3}
  if damage == "zero_byte_mask":
    bad = truth / "000_mask.png"
    bad.write_bytes(b"")
    return bad, 2, {"train": 2, "test": 2}  # the mask, then its image without a mask
  if damage == "zero_byte_defect_image":
    bad = crack / "001.png"
    bad.write_bytes(b"")
    return bad, 1, {"train": 2, "test": 2}  # its mask goes with it, unreported
  if damage == "text_file":
    bad = cat / "train" / "good" / "notes.txt"
    bad.write_text("taken on Monday")
    return bad, 1, {"train": 2, "test": 3}
  if damage == "subfolder":
    bad = cat / "test" / "good" / "old"
    _write(bad / "000.png", _photo(9))
    return bad, 1, {"train": 2, "test": 3}
  if damage == "file_in_test":
    bad = cat / "test" / "list.csv"
    bad.write_text("a,b\n")
    return bad, 1, {"train": 2, "test": 3}
  if damage == "same_stem":
    bad = _write(cat / "test" / "good" / "000.jpg", _photo(11))
    return bad, 2, {"train": 2, "test": 2}  # both 000.jpg and 000.png are left out
  if damage == "same_stem_defect":
    bad = _write(crack / "001.jpg", _photo(12))
    return bad, 2, {"train": 2, "test": 2}  # both images; their mask goes with them
  if damage == "two_masks":
    bad = _write(truth / "001.png", _mask())
    return bad, 1, {"train": 2, "test": 2}
  if damage == "dangling_link":
    bad = cat / "train" / "good" / "002.png"
    bad.symlink_to(cat / "train" / "moved_away.png")
    return bad, 1, {"train": 2, "test": 3}
  if damage == "link_loop":
    bad = cat / "train" / "good" / "002.png"
    bad.symlink_to(bad)
    return bad, 1, {"train": 2, "test": 3}
  if damage == "link_loop_in_test":
    bad = cat / "test" / "scratch"
    bad.symlink_to(bad)
    return bad, 1, {"train": 2, "test": 3}
  raise ValueError(damage)


@pytest.mark.parametrize("damage", [
    "orphan_mask", "orphan_mask_folder", "image_without_mask", "mask_size", "unreadable_image",
    "unreadable_mask", "zero_byte_image", "zero_byte_mask", "zero_byte_defect_image",
    "text_file", "subfolder", "file_in_test", "same_stem", "same_stem_defect", "two_masks",
    "dangling_link", "link_loop", "link_loop_in_test"])
def test_bad_file_stops_naming_it_or_is_skipped_and_counted(tmp_path, damage):
  root = tmp_path / "mine"
  bad, count, sizes = _damage(_tree(root), damage)
  _raises(common.BadInputError, bad, root, tmp_path / "tfds")
  builder = _prepare(root, tmp_path / "tfds", skip_bad=True)
  assert len(builder.skipped) == count, builder.skipped
  assert any(str(bad) in message for message in builder.skipped)
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == sizes


def test_a_split_left_empty_by_skipping_is_an_error(tmp_path):
  root = tmp_path / "mine"
  cat = _tree(root)
  for image in (cat / "train" / "good").iterdir():
    image.write_bytes(b"garbage")
  message = _raises(common.BadInputError, cat / "train", root, tmp_path / "tfds",
                    skip_bad=True)
  assert "no usable train image" in message


def test_skipping_every_defective_image_leaves_the_build_unscorable(tmp_path):
  root = tmp_path / "mine"
  cat = _tree(root)
  for mask in (cat / "ground_truth" / "crack").iterdir():
    _write(mask, _mask(10, 10))  # every mask of another size than its image
  builder = _prepare(root, tmp_path / "tfds", skip_bad=True)
  assert len(builder.skipped) == 2 and builder.info.splits["test"].num_examples == 1
  assert not Folder(config=builder.builder_config, data_dir=str(tmp_path / "tfds")).scorable


def test_error_mid_build_leaves_nothing_that_looks_complete(tmp_path):
  root = tmp_path / "mine"
  cat = _tree(root)
  (cat / "test" / "crack" / "001.png").write_bytes(b"garbage")  # found once train is written
  data_dir = tmp_path / "tfds"
  _raises(common.BadInputError, cat / "test" / "crack" / "001.png", root, data_dir)
  config = folder.config_for("widget", size=SIZE, edges="canny")
  assert not Folder(config=config, data_dir=str(data_dir)).is_prepared()
  assert not list(data_dir.rglob("dataset_info.json"))
  assert not list(data_dir.rglob("*.array_record*"))
  assert not list((data_dir / "folder" / config.name).glob("*"))
  with pytest.raises(KeyError, match="not been generated"):
    tfds.data_source(f"folder/{config.name}", split="train", data_dir=str(data_dir),
                     download=False)
