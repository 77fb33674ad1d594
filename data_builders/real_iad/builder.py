"""Real-IAD (Wang et al., CVPR 2024): 30 objects, 5 camera views, split by official JSONs."""

import json
import pathlib
import re

from af_jax.data_builders import common

CATEGORIES = ("audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood",
              "mint", "mounts", "pcb", "phone_battery", "plastic_nut", "plastic_plug",
              "porcelain_doll", "regulator", "rolled_strip_base", "sim_card_set", "switch",
              "tape", "terminalblock", "toothbrush", "toy", "toy_brick", "transistor1",
              "u_block", "usb", "usb_adaptor", "vcpill", "wooden_beads", "woodstick", "zipper")
# The release unpacks the JSONs one level deeper than the paper describes; accept both.
JSON_DIRS = (pathlib.Path("realiad_jsons"), pathlib.Path("realiad_jsons") / "realiad_jsons")
VIEW = re.compile(r"_(C\d+)_")
SAMPLE = re.compile(r"S\d+")


class RealIad(common.ManualCategoryBuilder):
  """Real-IAD: train and test splits of the official multi-view JSONs.

  Each example keeps its camera view ('C1'..'C5', from the file name) and sample id ('S0001',
  from the folder). `defect` is the defect code (AK pit, BX deformation, CH abrasion,
  HS scratch, PS damage, QS missing parts, YW foreign objects, ZW contamination) or 'good'.
  Images are read from the smallest `realiad_<res>` download that is at least the build size.
  About 150K images. License CC BY-NC-SA 4.0 (non-commercial).
  """
  name = "real_iad"
  CATEGORIES = CATEGORIES
  BUILDER_CONFIGS = common.category_configs(CATEGORIES)
  HOMEPAGE = "https://realiad4ad.github.io/Real-IAD/"
  CITATION = """@inproceedings{wang2024realiad,
  title={{Real-IAD}: A Real-World Multi-View Dataset for Benchmarking Versatile Industrial
         Anomaly Detection},
  author={Wang, Chengjie and Zhu, Wenbing and Gao, Bin-Bin and Gan, Zhenye and Zhang, Jiangning
          and Gu, Zhihao and Qian, Shuguang and Chen, Mingang and Ma, Lizhuang},
  booktitle={CVPR}, year={2024}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request Real-IAD at https://realiad4ad.github.io/Real-IAD/, extract the image archives of one
or more resolutions and the JSONs, and pass the folder holding them as the manual folder
(`--manual_dir`):

  <manual_dir>/realiad_<res>/<category>/OK/S0001/<category>_0001_OK_C1_<time>.jpg
  <manual_dir>/realiad_<res>/<category>/NG/<code>/S0001/<...>_C1_<time>.jpg (+ <...>.png mask)
  <manual_dir>/realiad_jsons/<category>.json   (or realiad_jsons/realiad_jsons/<category>.json)
      {"meta": {"normal_class": "OK", ...}, "train": [...], "test": [...]}, each entry with
      category, anomaly_class, image_path, mask_path (relative to realiad_<res>/<category>/)

<res> is 256, 512, 1024 or raw. Categories: """ + ", ".join(CATEGORIES)

  @classmethod
  def category_marker(cls, root: pathlib.Path, category: str) -> pathlib.Path:
    candidates = [root / folder / f"{category}.json" for folder in JSON_DIRS]
    return next((p for p in candidates if p.is_file()), candidates[0])

  def _list_splits(self, root: pathlib.Path) -> dict[str, list[common.Record]]:
    json_path = self.category_marker(root, self.category)
    try:
      split_lists = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise common.LayoutError(f"{json_path}: not a valid JSON file ({e})") from None
    if not isinstance(split_lists, dict) or not {"train", "test"} <= split_lists.keys():
      raise common.LayoutError(f'{json_path}: expected {{"meta": ..., "train": [...], '
                               f'"test": [...]}}')
    normal_class = split_lists.get("meta", {}).get("normal_class", "OK")
    image_root = self._image_root(root)
    splits = {}
    for split in ("train", "test"):
      records = [self._record(root, image_root, entry, normal_class,
                              f"{json_path} {split}[{i}]")
                 for i, entry in enumerate(split_lists[split])]
      splits[split] = [r for r in records if r is not None]
    return splits

  def _image_root(self, root: pathlib.Path) -> pathlib.Path:
    """realiad_<res>/<category> of the smallest resolution >= size, else raw, else largest."""
    folders = {}
    for resolution_dir in root.glob("realiad_*"):
      resolution = resolution_dir.name.removeprefix("realiad_")
      if (resolution.isdigit() or resolution == "raw") and (
          resolution_dir / self.category).is_dir():
        folders[resolution] = resolution_dir / self.category
    if not folders:
      raise common.LayoutError(
          f"expected the images of {self.category!r} in "
          f"{root / 'realiad_<256|512|1024|raw>' / self.category}; none exists")

    def preference(resolution: str) -> tuple[int, int]:
      if resolution == "raw":
        return (1, 0)
      pixels = int(resolution)
      return (0, pixels) if pixels >= self.builder_config.size else (2, -pixels)

    return folders[min(folders, key=preference)]

  def _record(self, root: pathlib.Path, image_root: pathlib.Path, entry: dict,
              normal_class: str, where: str) -> common.Record | None:
    """The record of one JSON entry, or None (after reporting) when it is unusable."""
    if not isinstance(entry, dict) or not {"image_path", "anomaly_class"} <= entry.keys():
      self.bad_inputs(where, "expected an entry with image_path and anomaly_class")
      return None
    image = image_root / entry["image_path"]
    if not image.is_file():
      self.bad_inputs(image, f"image listed in {where} does not exist")
      return None
    label = int(entry["anomaly_class"] != normal_class)
    masks = ()
    if label:
      mask = image_root / entry["mask_path"] if entry.get("mask_path") else None
      if mask is None or not mask.is_file():
        self.bad_inputs(image, f"anomalous image without a mask ({where} names "
                        f"{mask or 'no mask'})")
        return None
      masks = (mask,)
    view = VIEW.search(image.name)
    sample_id = next((part for part in pathlib.PurePosixPath(entry["image_path"]).parts
                      if SAMPLE.fullmatch(part)), "")
    return common.Record(image, masks, label, entry["anomaly_class"] if label else "good",
                         common.relative_name(image, root), view.group(1) if view else "",
                         sample_id)
