"""A `--manual_root` of two real datasets for the `af-jax prepare --mix` tests (a fixture:
`from mix_root import real_mix_root`).

  <root>/mvtec_ad/bottle    real MVTec AD bottle images, in MVTec AD's layout
  <root>/visa/pcb1          real MPDD metal_plate images, in VisA's layout (`split_csv/1cls.csv`)
  <mix.py>                  a mix of those two categories (visa: per_category=3)

Images are symlinks to ../shared/data (a few per split, to keep the builds small).
"""

import pathlib
import textwrap

import pytest

from conftest import SHARED

TRAIN, TEST_GOOD, TEST_BAD = 6, 2, 2


def _require(path: pathlib.Path) -> pathlib.Path:
  if not path.is_dir():
    pytest.skip(f"real test data not found at {path} (the ../shared folder beside the "
                "repository; set AF_JAX_SHARED to point elsewhere)")
  return path


def _link(source: pathlib.Path, target: pathlib.Path) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  target.symlink_to(source)


def _mvtec_category(source: pathlib.Path, target: pathlib.Path, defect: str) -> None:
  for split, folder, count in (("train", "good", TRAIN), ("test", "good", TEST_GOOD),
                               ("test", defect, TEST_BAD)):
    for index in range(count):
      name = f"{index:03d}.png"
      _link(source / split / folder / name, target / split / folder / name)
  for index in range(TEST_BAD):
    name = f"{index:03d}_mask.png"
    _link(source / "ground_truth" / defect / name, target / "ground_truth" / defect / name)


def _visa_category(source: pathlib.Path, root: pathlib.Path, category: str) -> None:
  data = root / category / "Data"
  rows = ["object,split,label,image,mask"]
  for split, folder, count in (("train", "good", TRAIN), ("test", "good", TEST_GOOD)):
    for index in range(count):
      image = data / "Images" / "Normal" / f"{split}_{index:03d}.png"
      _link(source / split / folder / f"{index:03d}.png", image)
      rows.append(f"{category},{split},normal,{image.relative_to(root)},")
  for index in range(TEST_BAD):
    image = data / "Images" / "Anomaly" / f"{index:03d}.png"
    mask = data / "Masks" / "Anomaly" / f"{index:03d}.png"
    _link(source / "test" / "defective" / f"{index:03d}.png", image)
    _link(source / "ground_truth" / "defective" / f"{index:03d}_mask.png", mask)
    rows.append(f"{category},test,anomaly,{image.relative_to(root)},{mask.relative_to(root)}")
  (root / "split_csv").mkdir(parents=True, exist_ok=True)
  (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def real_mix_root(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
  """(manual root, mix config file): bottle as mvtec_ad, metal_plate as VisA's pcb1."""
  bottle = _require(SHARED / "data" / "mvtec_ad" / "bottle")
  metal_plate = _require(SHARED / "data" / "mpdd" / "metal_plate")
  root = tmp_path / "downloads"
  _mvtec_category(bottle, root / "mvtec_ad" / "bottle", "broken_large")
  _visa_category(metal_plate, root / "visa", "pcb1")
  mix = tmp_path / "mix.py"
  mix.write_text(textwrap.dedent("""
      import ml_collections

      def get_data_config():
        c = ml_collections.ConfigDict()
        c.sources = [dict(dataset="mvtec_ad", categories=["bottle"], per_category=None),
                     dict(dataset="visa", categories=["pcb1", "pcb2"], per_category=3)]
        return c
      """))
  return root, mix
