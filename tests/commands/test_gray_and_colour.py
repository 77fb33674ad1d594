"""Gray and colour are never compared (`af_jax.pixels`): real grayscale magnetic_tile images
and real colour MVTec AD bottle images against the session's `pidinet_runs` (colour synthetic
references). Each refusal is one line naming the file (or image) and both kinds, before any
output; images of the reference's own kind are scored.
"""

import pathlib
import shutil

import numpy as np
import pytest

import af_jax
from af_jax import infer
from af_jax import pixels
from conftest import SHARED, file_hashes, run_cli

MAGNETIC_TILE = SHARED / "data" / "magnetic_tile" / "magnetic_tile"


def _copy(source: pathlib.Path, target: pathlib.Path, count: int) -> pathlib.Path:
  target.mkdir(parents=True)
  for path in sorted(p for p in source.iterdir() if p.suffix in (".png", ".jpg"))[:count]:
    shutil.copy(path, target)
  return target


@pytest.fixture
def parts(bottle_dir, tmp_path):
  """Gray magnetic_tile and colour bottle folders, a few real images each."""
  if not MAGNETIC_TILE.is_dir():
    pytest.skip(f"real test data not found at {MAGNETIC_TILE}")
  return dict(
      tile_good=_copy(MAGNETIC_TILE / "train" / "good", tmp_path / "magnetic_tile" / "train" /
                      "good", 4),
      tile_test=_copy(MAGNETIC_TILE / "test" / "good", tmp_path / "magnetic_tile" / "test" /
                      "good", 2),
      bottle_test=_copy(bottle_dir / "test" / "good", tmp_path / "bottle" / "test" / "good", 2))


def test_gray_reference_with_colour_images_is_refused_naming_the_file(
    pidinet_runs, parts, tmp_path, capsys):
  root, _ = pidinet_runs
  run = root / "blaze_reference"
  before = file_hashes(run), file_hashes(tmp_path)
  # A gray reference, colour images: refused, naming the first image and both kinds.
  code, line = run_cli("localize", "--workdir", run, "--images", parts["bottle_test"], "--out",
                       tmp_path / "out", "--reference", parts["tile_good"], "--category",
                       "magnetic_tile", "--image_threshold", 0.5, capsys=capsys)
  assert code == 1 and line.startswith("af-jax localize: error: ")
  assert str(sorted(parts["bottle_test"].iterdir())[0]) in line
  assert "is colour but the reference magnetic_tile is grayscale" in line and "--reference" in line
  # Gray images, no reference: the run's are all colour, so none is of their kind.
  code, line = run_cli("localize", "--workdir", run, "--images", parts["tile_test"], "--out",
                       tmp_path / "out", "--image_threshold", 0.5, capsys=capsys)
  assert code == 1 and "is grayscale and no reference is" in line, line
  assert (file_hashes(run), file_hashes(tmp_path)) == before and not (tmp_path / "out").exists()
  # Gray images, their own gray reference: scored.
  code, line = run_cli("localize", "--workdir", run, "--images", parts["tile_test"], "--out",
                       tmp_path / "out", "--reference", parts["tile_good"], "--pixel_threshold",
                       0.5, "--image_threshold", 0.5, capsys=capsys)
  assert code == 0, line
  assert file_hashes(run) == before[0]


def test_a_reference_of_both_kinds_and_the_exported_detector(pidinet_runs, parts, tmp_path,
                                                             capsys):
  root, _ = pidinet_runs
  detector = infer.Detector(root / "blaze_reference")
  tile = [pixels.read_rgb(p) for p in sorted(parts["tile_good"].iterdir())]
  bottle = [pixels.read_rgb(p) for p in sorted(parts["bottle_test"].iterdir())]
  with pytest.raises(ValueError, match="mix grayscale and colour"):
    detector.add_reference("mixed", tile[:2] + [pixels.resize_image(bottle[0], 256)])
  # The exported detector records each reference's kind; its checked loader refuses the other.
  code, line = run_cli("export-detector", "--workdir", root / "blaze_reference", "--out",
                       tmp_path / "export", "--reference", parts["tile_good"], capsys=capsys)
  assert code == 0, line
  exported = af_jax.load_detector(tmp_path / "export")
  index = exported.categories.index("magnetic_tile")
  assert exported.metadata["gray"][index] and not any(exported.metadata["gray"][:index])
  size = exported.size
  with pytest.raises(ValueError, match="image 0 is colour but category .* is grayscale"):
    exported(pixels.resize_images(bottle[:1], size), index)
  heatmaps, scores = exported(pixels.resize_images(tile[:1], size), index)
  assert heatmaps.shape == (1, size, size) and np.isfinite(scores).all()
