"""`folder`: any category of images laid out like MVTec AD, e.g. a user's own product.

The official builders only know their datasets' category names; this one builds whatever
category folder it is given, so a new product needs no code:

  <manual_dir>/<category>/train/good/*                 normal training images (required)
  <manual_dir>/<category>/test/good/*                  normal test images (optional)
  <manual_dir>/<category>/test/<defect>/*              defective test images (optional)
  <manual_dir>/<category>/ground_truth/<defect>/*      one mask per defective test image

Choices (documented in `Folder.MANUAL_DOWNLOAD_INSTRUCTIONS` too):
- Category names are plain folder names: ASCII letters, digits, '_', '-' and '.', starting
  with a letter, digit or '_', at most 100 characters (`check_category`, `af_jax.files`).
  Builds with non-default options are named as for every builder (`widget-64px-canny`,
  `common.config_for`); since a category may itself contain '-', a build's name is read
  from the right (`parse_config_name`), and a category whose last '-' part would spell an
  option (`widget-64px`, `gear-canny`) is refused, so no category's default build can share a name with another's build.
- There are no registered configs (`BUILDER_CONFIGS` is empty), so every config is a custom
  one and no name clashes with a registered one; `tfds.data_source('folder/<name>', ...)`
  reads a build from its files, as for the other builders' custom builds.
- Images: .png/.jpg/.jpeg/.bmp/.tif/.tiff in any case, any size, grayscale or colour, 8 or 16
  bits (`af_jax.pixels.read_rgb`: 16-bit ones are scaled by their bit depth). Masks:
  `<stem>_mask.<ext>` or `<stem>.<ext>`, any of those extensions; any non-zero pixel is
  anomalous, except in JPEG and anti-aliased masks, cut at half range (`af_jax.pixels`).
  `test/good` needs no mask; a `ground_truth/good` folder is ignored (logged).
- Without test images only a train split is built: such a category can be trained on but
  not scored; the builder logs so, says so in `Folder.scorable` and records it in the
  build's metadata (`scorable`), as it does for a test split without defective images.
- Well-known junk (names starting with '.', such as .DS_Store and macOS '._*' files, and
  Thumbs.db, ehthumbs.db, desktop.ini) is ignored silently. Any other file that is not an
  image, a sub-folder inside an image folder, a zero-byte image and two files with the same
  stem in one folder (`001.png` and `001.jpg`: which would be meant?), a symbolic link that
  leads nowhere (a loop, or a missing target) are bad input: a
  `common.BadInputError` naming the file, or skipped with `skip_bad` and counted in
  `builder.skipped`, as are unreadable images, unpaired masks and masks of another size
  than their image. A missing or empty `train/good` is a `common.LayoutError`.
- Two folders may hold a category of the same name (two users' `widget`). The build records
  the folder it was made from (`source_dir` in its metadata, the resolved absolute path of
  `<manual_dir>/<category>`); building that name into a data_dir that already holds a build
  of it from another folder is a `common.LayoutError` that says to rename one folder or use
  another `--data_dir`. Replacing the build on purpose still works: `af-jax prepare
  --overwrite` builds into a fresh folder and swaps it in, and TFDS's overwrite download
  modes skip the check. The same folder built again is reused when it holds the files the
  build was made from, as for every builder; else it is refused, naming what changed
  (`data_builders.source_files`).
"""

import collections
from collections.abc import Sequence
import logging
import os
import pathlib
import re

import tensorflow_datasets as tfds

from af_jax import files
from af_jax import pixels
from af_jax.data_builders import common
from af_jax.data_builders import config as config_lib

log = logging.getLogger(__name__)

NAME = "folder"
# A plain folder name: no path separators, no leading '.' (hidden) or '-' (a flag).
CATEGORY_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
# Files the operating system leaves in folders; ignored wherever they are.
JUNK_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
SUFFIXES = ", ".join(pixels.IMAGE_SUFFIXES)


# ---------------------------------------------------------------- names


def _option_in(part: str) -> tuple[str, str] | None:
  """(option, value) that one '-'-joined part of a build's name spells, else None."""
  found = [(key, match.group(1)) for key, pattern in common.BUILD_PATTERNS.items()
           if (match := re.fullmatch(pattern, part))]
  return found[0] if len(found) == 1 else None


def check_category(category: str) -> str:
  """`category` if it can be a `folder` category, else ValueError saying why."""
  if not isinstance(category, str) or not CATEGORY_PATTERN.fullmatch(category):
    raise ValueError(
        f"{category!r} cannot be a {NAME} category: a category is the name of a folder in "
        "the manual folder (not a path), made of ASCII letters, digits, '_', '-' and '.', "
        "starting with a letter, digit or '_'")
  files.check_name_length(category, f"{NAME} category {category[:24]}...")
  last = category.rsplit("-", 1)
  if len(last) == 2 and _option_in(last[1]):
    raise ValueError(
        f"{category!r} cannot be a {NAME} category: its last '-' part {last[1]!r} spells a "
        f"build option (as in widget-64px), so its builds' names would be ambiguous; rename "
        f"the folder (e.g. {category.replace('-', '_')})")
  return category


def parse_config_name(name: str) -> tuple[str, dict]:
  """(category, options) of a `folder` build's name, such as 'my-widget-64px-canny'.

  The options are read from the right (a category may hold '-'), with the spelling of
  `common.BUILD_PATTERNS`; the rest is the category. Raises ValueError when it is not one
  (`check_category`).
  """
  parts, options = name.split("-"), {}
  while len(parts) > 1 and (option := _option_in(parts[-1])) and option[0] not in options:
    key, value = option
    options[key] = int(value) if value.isdigit() and key != "regions_dir" else value
    parts.pop()
  return check_category("-".join(parts)), options


def config_for(category: str, **options) -> config_lib.AfBuilderConfig:
  """The config that builds `category` with `options` (`common.config_for`): named
  `category` with the default options, else e.g. 'widget-64px-canny'."""
  return common.config_for(Folder, check_category(category), **options)


def source_of(manual_dir: os.PathLike | str, category: str) -> str:
  """What a build records as its source: the resolved absolute path of the category folder."""
  return str(pathlib.Path(os.fspath(manual_dir)).expanduser().resolve() / category)


# ---------------------------------------------------------------- files


def _is_junk(path: pathlib.Path) -> bool:
  return path.name.startswith(".") or path.name.lower() in JUNK_FILES


def _image_files(folder: pathlib.Path, bad: common.BadInputs, what: str,
                 dropped: set[str] | None = None) -> dict[str, pathlib.Path]:
  """{stem: path} of the image files in `folder`, sorted by stem, bad entries reported.

  `dropped` collects the stems of image files left out (empty, or several sharing a stem),
  so that their masks or images are not reported once more as unpaired.
  """
  by_stem = collections.defaultdict(list)
  for path in sorted(folder.iterdir()):
    if _is_junk(path):
      continue
    if problem := files.broken_link(path):
      bad(path, f"{problem}; remove the link or point it at {what}")
      if dropped is not None:
        dropped.add(path.stem)
    elif path.is_dir():
      bad(path, f"a folder where {what} were expected: only image files ({SUFFIXES}) belong "
          f"in {folder}")
    elif path.suffix.lower() not in pixels.IMAGE_SUFFIXES:
      bad(path, f"not an image file: expected {what} ({SUFFIXES}, any case); move it out of "
          f"{folder}")
    elif path.stat().st_size == 0:
      bad(path, f"empty file (0 bytes) where {what} were expected")
      if dropped is not None:
        dropped.add(path.stem)
    else:
      by_stem[path.stem].append(path)
  unique = {}
  for stem, paths in sorted(by_stem.items()):
    if len(paths) == 1:
      unique[stem] = paths[0]
      continue
    names = " and ".join(p.name for p in paths)
    for path in paths:
      bad(path, f"{names} in {folder} share the name {stem!r}; keep one of them")
    if dropped is not None:
      dropped.add(stem)
  return unique


def _normal_records(files: dict[str, pathlib.Path], root: pathlib.Path) -> list[common.Record]:
  return [common.Record(p, (), 0, "good", common.relative_name(p, root))
          for p in files.values()]


def _defect_records(root: pathlib.Path, images_dir: pathlib.Path, truth_dir: pathlib.Path,
                    bad: common.BadInputs) -> list[common.Record]:
  """Records of `test/<defect>`, each image with its mask in `ground_truth/<defect>`."""
  defect, dropped, dropped_masks = images_dir.name, set(), set()
  images = _image_files(images_dir, bad, f"{defect} test images", dropped)
  masks = (_image_files(truth_dir, bad, f"masks of test/{defect}", dropped_masks)
           if truth_dir.is_dir() else {})
  expected = f"{truth_dir}/<name>_mask.png or <name>.png (any image extension)"
  claimed, records = {}, []
  for stem, image in images.items():
    found = [name for name in (f"{stem}_mask", stem) if name in masks]
    if len(found) == 2:
      bad(image, f"two masks match it, {masks[found[0]]} and {masks[found[1]]}; keep one")
      claimed.update({name: image for name in found})
    elif not found and {f"{stem}_mask", stem} & dropped_masks:
      bad(image, f"anomalous image whose mask in {truth_dir} was left out (reported above)")
    elif not found:
      bad(image, "anomalous image without a mask: expected " +
          expected.replace("<name>", stem))
    elif found[0] in claimed:
      bad(image, f"its mask {masks[found[0]]} also matches {claimed[found[0]]}; rename one")
    else:
      claimed[found[0]] = image
      records.append(common.Record(image, (masks[found[0]],), 1, defect,
                                   common.relative_name(image, root)))
  for stem, mask in masks.items():
    image_stem = stem.removesuffix("_mask")
    if stem in claimed:
      continue
    if {stem, image_stem} & dropped:
      log.info("Leaving out %s, the mask of a left-out image", mask)
      continue
    bad(mask, f"mask without an image: expected {images_dir}/{image_stem}.<ext> "
        f"({SUFFIXES})")
  return records


def _orphan_masks(truth_dir: pathlib.Path, test_dir: pathlib.Path,
                  bad: common.BadInputs) -> None:
  """Reports the masks of `ground_truth/<defect>` folders that have no `test/<defect>`."""
  for folder in sorted(truth_dir.iterdir()):
    if _is_junk(folder):
      continue
    if not folder.is_dir():
      bad(folder, f"a file directly in {truth_dir}: expected one folder of masks per defect")
    elif folder.name == "good":
      log.info("Ignoring %s: normal images need no mask", folder)
    elif not (test_dir / folder.name).is_dir():
      for mask in _image_files(folder, bad, f"masks of test/{folder.name}").values():
        bad(mask, f"mask without an image: there is no folder {test_dir / folder.name}")


def list_folder_layout(root: pathlib.Path, category: str,
                       bad: common.BadInputs) -> dict[str, list[common.Record]]:
  """{'train': records, 'test': records} of `<root>/<category>`; 'test' only when there are
  test images. Raises LayoutError without training images; reports bad files to `bad`."""
  category_dir = root / category
  train_dir = category_dir / "train" / "good"
  if problem := files.broken_link(train_dir):
    raise common.LayoutError(f"{train_dir}, the folder of the normal training images of "
                             f"{category!r}, {problem}")
  if not train_dir.is_dir():
    loose = (category_dir / "train").is_dir() and any(
        p.suffix.lower() in pixels.IMAGE_SUFFIXES for p in (category_dir / "train").iterdir())
    hint = f" (images lie directly in {train_dir.parent}: move them into good/)" if loose else ""
    raise common.LayoutError(f"expected the normal training images of {category!r} in the "
                             f"folder {train_dir}, which does not exist{hint}")
  train = _normal_records(_image_files(train_dir, bad, "normal training images"), root)
  if not train:
    raise common.LayoutError(f"expected normal training images ({SUFFIXES}) in {train_dir}, "
                             "found none")
  splits = {"train": train}
  test_dir, truth_dir = category_dir / "test", category_dir / "ground_truth"
  test = []
  if test_dir.is_dir():
    for folder in sorted(test_dir.iterdir()):
      if _is_junk(folder):
        continue
      if problem := files.broken_link(folder):
        bad(folder, f"{problem}; remove the link or point it at a folder of test images")
      elif not folder.is_dir():
        bad(folder, f"a file directly in {test_dir}: expected good/ and one folder per defect")
      elif folder.name == "good":
        test += _normal_records(_image_files(folder, bad, "normal test images"), root)
      else:
        test += _defect_records(root, folder, truth_dir / folder.name, bad)
  if truth_dir.is_dir():
    _orphan_masks(truth_dir, test_dir, bad)
  if test:
    splits["test"] = test
  return splits


# ---------------------------------------------------------------- builder


class Folder(common.ManualCategoryBuilder):
  """Images of any category laid out like MVTec AD (a user's own product, MPDD, ...).

  Normal training images; optional normal and defective test images with binary masks.
  Build a category with `config=folder.config_for('<category>', ...)` (or its name).
  """
  name = NAME
  # Any plain folder name is a category (`check_category`); `CATEGORIES` stays empty.
  ANY_CATEGORY = True
  CATEGORIES = ()
  BUILDER_CONFIGS = []
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Pass the folder that holds your category folders as the manual folder (`--manual_dir`).
Each category is a folder laid out like MVTec AD:

  <manual_dir>/<category>/train/good/001.png ...        normal training images (required)
  <manual_dir>/<category>/test/good/001.png ...         normal test images (optional)
  <manual_dir>/<category>/test/<defect>/001.png ...     defective test images (optional)
  <manual_dir>/<category>/ground_truth/<defect>/001_mask.png ...
      one mask per defective test image, named <image name>_mask.<ext> or <image name>.<ext>;
      any non-zero pixel is anomalous (JPEG or anti-aliased masks: from half range on);
      the mask has its image's size

Images: {SUFFIXES} (any case), any size, grayscale or colour; all are stretched to the
build's square size. The category is the folder's name: ASCII letters, digits, '_', '-'
and '.', not ending in a part that spells a build option (not 'widget-64px'). Without test
images only a train split is built (it can be trained on, not scored). Hidden files (.*),
Thumbs.db and desktop.ini are ignored; any other non-image file is an error (or skipped
with --skip_bad). A build records the folder it was built from: two different folders
named alike cannot be built into one --data_dir (rename one, or use another --data_dir)."""

  # What `af-jax prepare` needs for a builder of any category (a name may hold '-').
  check_category = staticmethod(check_category)
  parse_config_name = staticmethod(parse_config_name)
  config_for = staticmethod(config_for)

  def __init__(self, *, config: config_lib.AfBuilderConfig | str | None = None, **kwargs):
    if isinstance(config, str):  # A build's name, as `tfds.builder('folder/<name>')` passes.
      category, options = parse_config_name(config)
      if "regions_dir" in options:
        raise ValueError(f"{NAME}/{config} was built with precomputed regions; pass "
                         f"config=config_for({category!r}, regions_dir=<that folder>, ...)")
      config = config_for(category, **options)
    if not isinstance(config, config_lib.AfBuilderConfig):
      raise ValueError(f"{NAME} builds any category, so it needs one: pass "
                       f"config=data_builders.folder.config_for('<category>', ...), not "
                       f"{config!r}")
    check_category(config.category or config.name)
    super().__init__(config=config, **kwargs)

  @classmethod
  def found_categories(cls, root: pathlib.Path) -> list[str]:
    """The category folders in the manual folder `root`: folders with a `train` folder."""
    root = pathlib.Path(root)
    if not root.is_dir():
      return []
    found = []
    for folder in sorted(root.iterdir()):
      if _is_junk(folder) or not (folder / "train").is_dir():
        continue
      try:
        found.append(check_category(folder.name))
      except ValueError as e:
        log.warning("Ignoring %s: %s", folder, e)
    return found

  @property
  def scorable(self) -> bool:
    """Whether the build has defective test images to score a model on (False before it is
    built, and for a train-only build)."""
    return bool(self.info.metadata.get("scorable", False))

  @property
  def source_dir(self) -> str | None:
    """The category folder the build was made from (`source_of`), None before it is built."""
    return self.info.metadata.get("source_dir")

  def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs):
    """TFDS's, after checking that an existing build of this name is from the same folder
    (then the base class checks that folder's files, `source_files`)."""
    config = download_config or tfds.download.DownloadConfig()
    if self.data_path.exists() and not config.download_mode.overwrite_dataset:
      recorded = self.source_dir
      wanted = source_of(self.manual_dir(download_dir, config), self.category)
      if recorded != wanted:
        raise common.LayoutError(
            f"{NAME}/{self.builder_config.name} in {self.data_dir_root} was built from "
            f"{recorded or 'a folder it did not record'}, not from {wanted}: a {NAME} "
            "category is known by its folder's name only, so two folders of that name cannot "
            "share a data_dir. Rename one of the folders, or build into another --data_dir "
            "(to replace the old build, rebuild with --overwrite)")
    super().download_and_prepare(download_dir=download_dir, download_config=download_config,
                                 **kwargs)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      root = pathlib.Path(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS names the folder, then shows the layout: one line.
      problem = str(e).splitlines()[0].split(" Create it")[0].rstrip(".")
      raise common.LayoutError(
          f"{self.name}: {problem}; expected <manual_dir>/{self.category}/train/good/<images> "
          "(see Folder.MANUAL_DOWNLOAD_INSTRUCTIONS)") from None
    category_dir = root / self.category
    if not category_dir.is_dir():
      found = ", ".join(self.found_categories(root)) or "none"
      raise common.LayoutError(f"{self.name}: expected the folder {category_dir} for "
                               f"category {self.category!r}; categories found in {root}: "
                               f"{found}")
    self.info.metadata["source_dir"] = source_of(root, self.category)
    splits = self._listed(root)
    self._set_scorable(any(r.label for r in splits.get("test", ())), "test" in splits)
    self._category_dir = category_dir
    return {split: self._examples(split, records)
            for split, records in self._draw_train(splits).items()}

  def _list_splits(self, root: pathlib.Path) -> dict[str, list[common.Record]]:
    return list_folder_layout(root, self.category, self.bad_inputs)

  def _set_scorable(self, scorable: bool, has_test: bool) -> None:
    self.info.metadata["scorable"] = scorable
    if not scorable:
      log.warning("%s/%s: no defective test images in %s, so the build has %s: a model can "
                  "be trained on it but not scored on it", self.name, self.builder_config.name,
                  self.info.metadata["source_dir"],
                  "normal test images only" if has_test else "a train split only")

  def _examples(self, split: str, records: Sequence[common.Record]):
    """The split's examples; in this process, an error if bad input left none (TFDS cannot
    write none). A Beam build's workers cannot tell the builder: there TFDS refuses an empty
    split, and the scorable flag stays as listed."""
    examples = super()._examples(split, records)
    return examples if self.beam else self._checked(split, records, examples)

  def _checked(self, split: str, records: Sequence[common.Record], examples):
    labels = collections.Counter()
    folder = self._category_dir / split
    for key, example in examples:
      labels[example["label"]] += 1
      yield key, example
    if not labels:
      raise common.BadInputError(
          f"{folder}: no usable {split} image left, all {len(records)} were skipped as bad "
          "input (see builder.skipped); fix or remove them")
    if split == "test" and not labels[1] and any(r.label for r in records):
      self._set_scorable(False, True)  # Every defective image was skipped as bad input.
