"""VisA (Zou et al., ECCV 2022): 12 categories, split by the official `split_csv/1cls.csv`."""

import csv
import pathlib

from af_jax.data_builders import common

CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
              "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")
SPLIT_CSV = pathlib.Path("split_csv") / "1cls.csv"
CSV_COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}
ANOMALY_FOLDER = "Anomaly"


class Visa(common.ManualCategoryBuilder):
  """VisA: train and test splits of the one-class protocol (`split_csv/1cls.csv`).

  Masks mark anomalies with any non-zero value. VisA has no per-image defect names in this
  split, so `defect` is 'good' for normal images and 'Anomaly' (the folder name) otherwise.
  Sources are about 1.5k x 1k JPEGs, stretched to the square size. 9,621 normal /
  1,200 anomalous images. License CC BY 4.0.
  """
  name = "visa"
  CATEGORIES = CATEGORIES
  BUILDER_CONFIGS = common.category_configs(CATEGORIES)
  HOMEPAGE = "https://github.com/amazon-science/spot-diff"
  CITATION = """@inproceedings{zou2022spot,
  title={{SPot-the-Difference} Self-Supervised Pre-training for Anomaly Detection and
         Segmentation},
  author={Zou, Yang and Jeong, Jongheon and Pemula, Latha and Zhang, Dongqing and
          Dabeer, Onkar},
  booktitle={ECCV}, year={2022}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download VisA (VisA_20220922.tar) from https://github.com/amazon-science/spot-diff, extract it
and pass the extracted folder as the manual folder (`--manual_dir`):

  <manual_dir>/<object>/Data/Images/Normal/*.JPG
  <manual_dir>/<object>/Data/Images/Anomaly/*.JPG
  <manual_dir>/<object>/Data/Masks/Anomaly/*.png
  <manual_dir>/split_csv/1cls.csv   header: object,split,label,image,mask
                                    (paths relative to <manual_dir>)

Objects: """ + ", ".join(CATEGORIES)

  def _list_splits(self, root: pathlib.Path) -> dict[str, list[common.Record]]:
    csv_path = root / SPLIT_CSV
    if not csv_path.is_file():
      raise common.LayoutError(f"expected the split file {csv_path} (header "
                               f"{','.join(CSV_COLUMNS)}), which does not exist")
    splits = {"train": [], "test": []}
    with csv_path.open(newline="") as f:
      reader = csv.DictReader(f)
      missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
      if missing:
        raise common.LayoutError(f"{csv_path}: expected the columns {','.join(CSV_COLUMNS)}, "
                                 f"missing {','.join(sorted(missing))}")
      for line, row in enumerate(reader, start=2):
        if row["object"] == self.category:
          record = self._record(root, row, f"{csv_path}:{line}")
          if record is not None:
            splits[row["split"]].append(record)
    if not any(splits.values()):
      raise common.LayoutError(f"{csv_path} lists no images of {self.category!r}")
    self._check_masks_have_images(root / self.category / "Data")
    return splits

  def _record(self, root: pathlib.Path, row: dict[str, str],
              where: str) -> common.Record | None:
    """The record of one CSV row, or None (after reporting) when the row is unusable."""
    if row["split"] not in ("train", "test") or row["label"] not in LABELS or not row["image"]:
      self.bad_inputs(where, f"expected split train/test, label normal/anomaly and an image "
                      f"path, got {row['split']!r}, {row['label']!r}, {row['image']!r}")
      return None
    image = root / row["image"]
    if not image.is_file():
      self.bad_inputs(image, f"image listed in {where} does not exist")
      return None
    label = LABELS[row["label"]]
    masks = ()
    if label:
      mask = root / row["mask"] if row["mask"] else None
      if mask is None or not mask.is_file():
        self.bad_inputs(image, f"anomalous image without a mask ({where} names "
                        f"{mask or 'no mask'})")
        return None
      masks = (mask,)
    return common.Record(image, masks, label, ANOMALY_FOLDER if label else "good",
                         common.relative_name(image, root))

  def _check_masks_have_images(self, data_dir: pathlib.Path) -> None:
    mask_dir = data_dir / "Masks" / ANOMALY_FOLDER
    if not mask_dir.is_dir():
      return
    image_dir = data_dir / "Images" / ANOMALY_FOLDER
    stems = {p.stem for p in common.image_files(image_dir)} if image_dir.is_dir() else set()
    for mask in common.image_files(mask_dir):
      if mask.stem not in stems:
        self.bad_inputs(mask, f"mask without an image (expected {image_dir / mask.stem}.*)")
