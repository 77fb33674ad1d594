"""What every af_jax dataset builder shares: reading, resizing, annotating, encoding, checking.

A builder only says which file is which example (a list of `Record`s per split); this module
turns records into examples of the schema in `features.py`:

  read (grayscale -> RGB) -> resize to S x S -> edge maps (batched, `af_jax.ops.edges`)
  -> candidate regions (`af_jax.ops.regions`) -> PNG bytes.

Reading and resizing follow `af_jax.pixels`, the rule inference applies too.

Choices (the paper gives none):
- Images are stretched to S x S, never cropped (`af_jax.pixels.resize_image`), so non-square
  sources (MVTec LOCO, VisA) keep their whole field of view and their masks stay aligned.
- Masks are binarized first by `af_jax.pixels.read_mask` (a label mask's non-zero pixels are
  anomalous, as VisA and MVTec LOCO encode defect types in the pixel value; a JPEG or
  anti-aliased one is cut at half range), then resized nearest-neighbour, so they stay exactly
  0/255. 16-bit images are scaled by their bit depth (`af_jax.pixels.read_rgb`).
  Several masks for one image (MVTec LOCO) are merged by union.
- Bad input: a missing manual folder, an unknown category or a layout that differs from the
  dataset's is always a `LayoutError` naming the path that was expected. A single bad file
  (unreadable image, mask without image, anomalous image without mask) is a `BadInputError`
  naming the file, or, with `skip_bad`, is skipped, logged and counted in `builder.skipped`.
- An interrupted build leaves nothing that reads as a dataset: TFDS writes into an
  `incomplete.*` folder and renames it only once every split is written.
- With Beam options in `download_and_prepare`'s download config, the records are listed (and
  the train split drawn, `train_sample`) here, and workers annotate them (`beam_examples`);
  the examples are the same. Workers log the bad files they skip; `builder.skipped` then
  holds only those found while listing, and `builder.listed` minus the split sizes says how
  many the workers left out.
"""

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
import dataclasses
import functools
import inspect
import logging
import os
import pathlib
import re
from typing import NamedTuple

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from af_jax import data_facts
from af_jax import pixels
from af_jax.data_builders import beam_examples
from af_jax.data_builders import config as config_lib
from af_jax.data_builders import features
from af_jax.data_builders import source_files
from af_jax.data_builders import train_sample

log = logging.getLogger(__name__)

# PiDiNet is jitted and batched: edges are computed for this many images per call.
EDGE_BATCH = 32
# Options that change the built data; a config that differs from these needs its own name.
DEFAULT_OPTIONS = {f.name: f.default for f in dataclasses.fields(config_lib.AfBuilderConfig)
                   if f.name in ("size", "edges", "regions_dir", "max_regions",
                                 "train_per_category", "sample_seed")}


class LayoutError(FileNotFoundError):
  """The manual download is missing or not laid out as the dataset ships it."""


class BadInputError(ValueError):
  """One file of the manual download cannot be used (message names it)."""


class StaleBuildError(LayoutError):
  """A build exists, made from other files than the manual folder now holds
  (`source_files`)."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One source image and what the dataset says about it.

  Attributes:
    image: path of the image.
    masks: paths of its ground-truth masks (merged by union); empty for normal images.
    label: 0 normal, 1 anomalous.
    defect: defect name as the dataset spells it ('good' for normal images).
    file_name: path of the image relative to the manual folder (the example key).
    view: camera view ('C1'..'C5' for Real-IAD).
    sample_id: physical sample ('S0001' for Real-IAD).
  """
  image: pathlib.Path
  masks: tuple[pathlib.Path, ...]
  label: int
  defect: str
  file_name: str
  view: str = ""
  sample_id: str = ""


class BadInputs:
  """Stops at the first bad file (naming it), or skips bad files and remembers them."""

  def __init__(self, skip: bool, quiet: bool = False):
    self.skip = skip
    self.quiet = quiet  # Listing only, to compare (`source_files`): the build said it once.
    self.skipped: list[str] = []

  def __call__(self, path: pathlib.Path | str, problem: str) -> None:
    message = f"{path}: {problem}"
    if not self.skip:
      raise BadInputError(f"{message} (skip such files with skip_bad=True / --skip_bad)")
    if not self.quiet:
      log.warning("Skipping %s", message)
    self.skipped.append(message)


# ---------------------------------------------------------------- files and layout


def image_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """The image files directly inside `folder`, sorted by name."""
  return sorted(p for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in pixels.IMAGE_SUFFIXES)


def require_dir(path: pathlib.Path, what: str) -> pathlib.Path:
  """`path` if it is a folder, else a LayoutError saying what was expected there."""
  if not path.is_dir():
    raise LayoutError(f"expected {what} in the folder {path}, which does not exist")
  return path


def relative_name(path: pathlib.Path, root: pathlib.Path) -> str:
  return path.relative_to(root).as_posix()


def mvtec_masks(folder: pathlib.Path) -> dict[str, tuple[pathlib.Path, ...]]:
  """MVTec AD style ground truth: `<stem>_mask.png` beside each other, one per image."""
  return {p.stem.removesuffix("_mask"): (p,) for p in image_files(folder)}


def list_mvtec_layout(root: pathlib.Path, category_dir: pathlib.Path,
                      normal_splits: Sequence[str],
                      masks_in: Callable[[pathlib.Path], dict[str, tuple[pathlib.Path, ...]]],
                      bad: BadInputs) -> dict[str, list[Record]]:
  """Records of an MVTec-style category folder.

  Layout: `<split>/good/*` for each of `normal_splits`, `test/{good,<defect>}/*` and
  `ground_truth/<defect>/...` whose masks `masks_in(folder)` maps to image stems.

  Returns:
    {split: records} for `normal_splits` and 'test'.
  """
  splits = {}
  for split in normal_splits:
    folder = require_dir(category_dir / split / "good", f"the normal {split} images")
    splits[split] = [Record(p, (), 0, "good", relative_name(p, root))
                     for p in image_files(folder)]
    if not splits[split]:
      raise LayoutError(f"expected normal {split} images in {folder}, found none")
  test_dir = require_dir(category_dir / "test", "the test images (good/ and one folder "
                         "per defect)")
  truth_dir = category_dir / "ground_truth"
  defects = sorted(d.name for d in test_dir.iterdir() if d.is_dir())
  test = []
  for defect in defects:
    images = image_files(test_dir / defect)
    if defect == "good":
      test += [Record(p, (), 0, "good", relative_name(p, root)) for p in images]
      continue
    masks = masks_in(require_dir(truth_dir / defect, f"the masks of test/{defect}"))
    for image in images:
      image_masks = masks.pop(image.stem, ())
      if image_masks:
        test.append(Record(image, image_masks, 1, defect, relative_name(image, root)))
      else:
        bad(image, f"anomalous image without a mask in {truth_dir / defect}")
    for stem, orphans in masks.items():
      bad(orphans[0], f"mask without an image (expected {test_dir / defect / stem}.*)")
  if truth_dir.is_dir():
    for folder in sorted(d for d in truth_dir.iterdir() if d.is_dir()):
      if folder.name not in defects:
        for orphans in masks_in(folder).values():
          bad(orphans[0], f"mask without an image (no folder {test_dir / folder.name})")
  splits["test"] = test
  return splits


# ---------------------------------------------------------------- pixels


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
  """bool [H, W] -> uint8 [size, size, 1] of 0/255, nearest-neighbour."""
  return pixels.resize_labels(mask.astype(np.uint8) * 255, size)[..., None]


def read_region_masks(regions_dir: str | pathlib.Path, file_name: str,
                      shape: tuple[int, int], size: int) -> list[np.ndarray]:
  """Precomputed segmentation masks (e.g. SAM) of one source image, resized to `size`.

  The masks are made offline on the source image, so they are read at its `shape` (H, W) and
  resized nearest-neighbour like the ground truth. Raises OSError/ValueError naming the file.
  """
  from af_jax.ops import regions as regions_lib  # pylint: disable=g-import-not-at-top
  masks = regions_lib.load_region_masks(regions_dir, file_name, shape)
  return [pixels.resize_labels(m.astype(np.uint8), size) > 0 for m in masks]


def annotate(images: np.ndarray, file_names: Sequence[str], config: config_lib.AfBuilderConfig,
             region_masks: Sequence[list[np.ndarray] | None] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """Edge maps and candidate regions of resized images, as stored.

  Args:
    images: uint8 [N, S, S, 3] RGB.
    file_names: their names relative to the dataset root (to find precomputed region masks).
    config: `edges`, `regions_dir` and `max_regions` are used.
    region_masks: per image, precomputed masks at S x S (`read_region_masks`) or None for the
      unsupervised segmentation. By default they are read from `config.regions_dir` as made
      for the stored S x S images, or, without a `regions_dir`, all regions are unsupervised.

  Returns:
    (edges, regions): uint8 [N, S, S, 1] each; edges are probability x 255, regions are
    0 (background) or 1..K.
  """
  # Imported here so reading built data never loads the edge network.
  from af_jax.ops import edges as edges_lib  # pylint: disable=g-import-not-at-top
  from af_jax.ops import regions as regions_lib  # pylint: disable=g-import-not-at-top
  if region_masks is None:
    region_masks = [read_region_masks(config.regions_dir, name, image.shape[:2], len(image))
                    if config.regions_dir else None for image, name in zip(images, file_names)]
  probabilities = np.asarray(edges_lib.compute_edges(images, config.edges))
  edge_maps = pixels.unit_to_uint8(probabilities)
  region_maps = [regions_lib.propose_regions(image, max_regions=config.max_regions, masks=masks)
                 for image, masks in zip(images, region_masks)]
  return edge_maps[..., None], np.stack(region_maps).astype(np.uint8)[..., None]


def example_dict(*, image: np.ndarray, edges: np.ndarray, regions: np.ndarray,
                 mask: np.ndarray, label: int, defect: str, category: str, dataset: str,
                 file_name: str, view: str = "", sample_id: str = "") -> dict:
  """One example of the shared schema (`features.example_features`) from uint8 arrays."""
  return {
      "image": pixels.encode_png(image),
      "edges": pixels.encode_png(edges),
      "regions": pixels.encode_png(regions),
      "mask": pixels.encode_png(mask),
      "label": label,
      "defect": defect,
      "category": category,
      "dataset": dataset,
      "file_name": file_name,
      "view": view,
      "sample_id": sample_id,
  }


class _Pixels(NamedTuple):
  """The pixels `load_record` reads for one record, at the stored size."""
  image: np.ndarray
  mask: np.ndarray
  region_masks: list[np.ndarray] | None


def _batches(items: Sequence[Record], size: int) -> Iterator[Sequence[Record]]:
  for start in range(0, len(items), size):
    yield items[start:start + size]


def load_record(record: Record, config: config_lib.AfBuilderConfig,
                bad: BadInputs) -> _Pixels | None:
  """The resized pixels of a record, or None when it is skipped as bad input."""
  size, regions_dir = config.size, config.regions_dir
  try:
    image = pixels.read_rgb(record.image)
  except ValueError as e:
    bad(record.image, str(e))
    return None
  union = np.zeros(image.shape[:2], bool)
  for path in record.masks:
    try:
      mask = pixels.read_mask(path)
    except ValueError as e:
      bad(path, str(e))
      return None
    if mask.shape != union.shape:
      bad(path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image "
          f"{record.image} is {union.shape[1]}x{union.shape[0]}")
      return None
    union |= mask
  region_masks = None
  if regions_dir:
    try:
      region_masks = read_region_masks(regions_dir, record.file_name, image.shape[:2], size)
    except (OSError, ValueError) as e:
      bad(record.image, f"no usable region masks ({e})")
      return None
  return _Pixels(pixels.resize_image(image, size), resize_mask(union, size), region_masks)


def examples_of_batch(batch: Sequence[Record], *, config: config_lib.AfBuilderConfig,
                      dataset: str, category: str,
                      bad: BadInputs) -> Iterator[tuple[str, dict]]:
  """(key, example) of each usable record of one batch, its edges computed in one call.

  A module function of picklable arguments, so Beam workers run it as the builder does.
  """
  loaded = [(record, load_record(record, config, bad)) for record in batch]
  loaded = [(record, pixel) for record, pixel in loaded if pixel is not None]
  if not loaded:
    return
  records, pixel_list = zip(*loaded)
  edges, regions = annotate(np.stack([p.image for p in pixel_list]),
                            [r.file_name for r in records], config,
                            [p.region_masks for p in pixel_list])
  for record, pixel, edge, region in zip(records, pixel_list, edges, regions):
    yield record.file_name, example_dict(
        image=pixel.image, edges=edge, regions=region, mask=pixel.mask, label=record.label,
        defect=record.defect, category=category, dataset=dataset,
        file_name=record.file_name, view=record.view, sample_id=record.sample_id)


# ---------------------------------------------------------------- configs and builders


def category_configs(categories: Iterable[str]) -> list[config_lib.AfBuilderConfig]:
  """One config per category with the default options (name = category)."""
  return [config_lib.AfBuilderConfig(name=c, category=c, description=f"Category {c}.")
          for c in categories]


# How `config_for` spells each build option that differs from its default in a config name:
# the regular expression of the option's '-'-joined part, its value in group 1.
NAME_PATTERNS = {"size": r"(\d+)px", "edges": f"({'|'.join(pixels.EDGE_METHODS)})",
                 "max_regions": r"k(\d+)", "regions_dir": r"regions\.(.+)"}
# The same for the training-image draw of the manual datasets (`train_sample`), which the
# synthetic set, rendering exactly the images it is asked for, has no use for.
SAMPLE_PATTERNS = {"train_per_category": r"sample(\d+)", "sample_seed": r"sampleseed(\d+)"}
BUILD_PATTERNS = {**NAME_PATTERNS, **SAMPLE_PATTERNS}


def parse_config_name(name: str, patterns: dict[str, str] = BUILD_PATTERNS) -> tuple[str, dict]:
  """(category, options) that a config name such as 'bottle-64px-canny' spells.

  Numbers come back as ints; `regions_dir` as the folder's cleaned name, all that the config
  name keeps of it. Raises ValueError naming a part that spells no option (or one twice).
  """
  category, *parts = name.split("-")
  options = {}
  for part in parts:
    found = [(key, match.group(1)) for key, pattern in patterns.items()
             if (match := re.fullmatch(pattern, part))]
    if len(found) != 1 or found[0][0] in options:
      raise ValueError(f"{name!r} is neither a category nor a build's name: {part!r} spells no "
                       "build option (a build's name is its category, then its options "
                       "joined by '-', e.g. bottle-64px-canny)")
    key, value = found[0]
    options[key] = int(value) if value.isdigit() and key != "regions_dir" else value
  return category, options


def config_for(builder_cls: type[tfds.core.DatasetBuilder], category: str,
               **options) -> config_lib.AfBuilderConfig:
  """The config that builds `category` with `options` (size, edges, regions_dir, max_regions,
  train_per_category, sample_seed).

  With default options this is the registered config (name = category); otherwise a new
  config whose name says what differs, e.g. 'bottle-64px-canny' or 'pcb1-sample200', read
  back with `tfds.data_source('mvtec_ad/bottle-64px-canny', data_dir=...)`. Raises ValueError
  for a draw of fewer than one image, or a draw's seed without a draw.
  """
  options = {**DEFAULT_OPTIONS, **options}
  unknown = set(options) - set(DEFAULT_OPTIONS)
  if unknown:
    raise TypeError(f"unknown build options {sorted(unknown)}; expected {list(DEFAULT_OPTIONS)}")
  count = options["train_per_category"]
  if count is not None and count < 1:
    raise ValueError(f"train_per_category must be at least 1 (or None for all), got {count}")
  if count is None and options["sample_seed"] != DEFAULT_OPTIONS["sample_seed"]:
    raise ValueError("sample_seed seeds the draw of train_per_category images: give "
                     "train_per_category too, or no sample_seed")
  if options == DEFAULT_OPTIONS and category in builder_cls.builder_configs:
    return builder_cls.builder_configs[category]
  parts = [category]
  if options["size"] != DEFAULT_OPTIONS["size"]:
    parts.append(f"{options['size']}px")
  if options["edges"] != DEFAULT_OPTIONS["edges"]:
    parts.append(options["edges"])
  if options["max_regions"] != DEFAULT_OPTIONS["max_regions"]:
    parts.append(f"k{options['max_regions']}")
  if options["regions_dir"]:
    folder = pathlib.Path(options["regions_dir"]).name
    parts.append("regions." + re.sub(r"[^\w.+]", "", folder))
  if count is not None:
    parts.append(f"sample{count}")
  if options["sample_seed"] != DEFAULT_OPTIONS["sample_seed"]:
    parts.append(f"sampleseed{options['sample_seed']}")
  return config_lib.AfBuilderConfig(name="-".join(parts), category=category,
                                    description=f"Category {category}, {options}.",
                                    **options)


def dataset_metadata(config: config_lib.AfBuilderConfig) -> tfds.core.MetadataDict:
  """What a built dataset records about itself for the models trained on it (`af_jax.data_facts`)."""
  return tfds.core.MetadataDict(data_facts.from_builder_config(config))


class AfBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of every af_jax builder: the shared schema, ArrayRecord files, progress, bad input.

  Args (besides TFDS's `config`, `data_dir`, `version`):
    skip_bad: skip bad files instead of stopping (also `config.skip_bad`; a keyword because
      the registered configs cannot be changed).
    progress: optional tqdm-like bar; its `total` grows by each split's size and it advances
      as examples are written.
  """
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: image, edges, regions, mask at a fixed size."}
  HOMEPAGE = ""
  CITATION = ""

  def __init__(self, *, skip_bad: bool = False, progress=None, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self.bad_inputs = BadInputs(skip_bad or self.builder_config.skip_bad)
    self.progress = progress
    self.beam = False  # Whether the running build is a Beam pipeline (`download_and_prepare`).
    self.listed: dict[str, int] = {}  # Records listed per split by the running build.

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This builder's source file.

    TFDS's own lookup needs the `importlib_resources` backport, which it only installs on
    Python < 3.9 (tensorflow/datasets#11212); the answer is the same.
    """
    return epath.Path(inspect.getfile(cls))

  @property
  def category(self) -> str:
    return self.builder_config.category or self.builder_config.name

  @property
  def skipped(self) -> list[str]:
    """'path: problem' for each bad file skipped so far."""
    return self.bad_inputs.skipped

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=features.example_features(self.builder_config.size),
        metadata=dataset_metadata(self.builder_config),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
    )

  def download_and_prepare(self, *args, **kwargs):
    # TFDS's own nested bars redraw with escape codes and carriage returns, unreadable in a
    # log; af_jax builders report through `progress` instead.
    tfds.disable_progress_bar()
    config = kwargs.get("download_config")
    self.beam = bool(config and (config.beam_options or config.beam_runner))
    super().download_and_prepare(*args, **kwargs)

  # TFDS prints these two to stdout ("Downloading and preparing dataset Unknown size ...",
  # "... Subsequent calls will reuse this data."): nothing is downloaded, the data is built
  # from local files, so the log says that instead (the commands print their own summary).
  def _log_download_bytes(self) -> None:
    log.info("building %s/%s in %s", self.name, self.builder_config.name, self.data_dir)

  def _log_download_done(self) -> None:
    log.info("built %s/%s in %s", self.name, self.builder_config.name, self.data_dir)

  def _plan_progress(self, count: int) -> None:
    if self.progress is not None:
      self.progress.total = (self.progress.total or 0) + count
      self.progress.refresh()

  def _advance_progress(self, count: int) -> None:
    if self.progress is not None:
      self.progress.update(count)


class ManualCategoryBuilder(AfBuilder, skip_registration=True):
  """A manually downloaded dataset, one config per category.

  Subclasses set `CATEGORIES`, `MANUAL_DOWNLOAD_INSTRUCTIONS`, `BUILDER_CONFIGS`
  (`category_configs(CATEGORIES)`), `HOMEPAGE`, `CITATION` and implement `_list_splits`.
  """
  CATEGORIES: tuple[str, ...] = ()

  @classmethod
  def category_marker(cls, root: pathlib.Path, category: str) -> pathlib.Path:
    """The path whose existence says that `category` was downloaded into `root`."""
    return root / category

  @classmethod
  def found_categories(cls, root: pathlib.Path) -> list[str]:
    """The known categories present in the manual folder `root`."""
    return [c for c in cls.CATEGORIES if cls.category_marker(pathlib.Path(root), c).exists()]

  @abc.abstractmethod
  def _list_splits(self, root: pathlib.Path) -> dict[str, list[Record]]:
    """{split: records} of `self.category`, reporting bad files through `self.bad_inputs`."""

  def _listed(self, root: pathlib.Path) -> dict[str, list[Record]]:
    """`_list_splits`, recording the files listed in the build (`source_files`)."""
    splits = self._list_splits(root)
    self.info.metadata[source_files.KEY] = source_files.fingerprint(splits, root)
    return splits

  def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs):
    """TFDS's, after checking that an existing build was made from the files the manual
    folder holds now (`source_files`); TFDS's overwrite modes rebuild without looking."""
    config = download_config or tfds.download.DownloadConfig()
    if self.data_path.exists() and not config.download_mode.overwrite_dataset:
      self._check_sources(self.manual_dir(download_dir, config))
    super().download_and_prepare(download_dir=download_dir, download_config=download_config,
                                 **kwargs)

  def manual_dir(self, download_dir, config: tfds.download.DownloadConfig) -> pathlib.Path:
    """The manual folder TFDS will read: the download config's, else its default place."""
    return pathlib.Path(os.fspath(config.manual_dir or pathlib.Path(os.fspath(
        download_dir or self.data_dir_root / "downloads")) / "manual"))

  def _check_sources(self, root: pathlib.Path) -> None:
    """StaleBuildError when `root` now holds other files for this build than it was made
    from; a warning for a build that recorded none (made before af_jax recorded them)."""
    where = f"{self.name}/{self.builder_config.name} in {self.data_dir_root}"
    recorded = self.info.metadata.get(source_files.KEY)
    if recorded is None:
      log.warning("%s was built before af_jax recorded its source files, so a change to "
                  "them since cannot be seen: reusing it as built (rebuild it with --overwrite "
                  "to record them)", where)
      return
    loud, self.bad_inputs = self.bad_inputs, BadInputs(skip=True, quiet=True)
    try:
      changed = source_files.changes(recorded,
                                     source_files.fingerprint(self._list_splits(root), root))
    finally:
      self.bad_inputs = loud
    if changed:
      raise StaleBuildError(
          f"{where} was built from other files than {root} holds now ({changed}): rebuild it "
          "with --overwrite (the old build stays readable until the new one is complete), "
          "or restore the files it was built from")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      root = pathlib.Path(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS says which folder it expected and shows the layout.
      raise LayoutError(f"{self.name}: {e}") from None
    if self.category not in self.CATEGORIES:
      raise LayoutError(f"{self.name}: unknown category {self.category!r}; expected one of "
                        f"{', '.join(self.CATEGORIES)}")
    marker = self.category_marker(root, self.category)
    if not marker.exists():
      found = ", ".join(self.found_categories(root)) or "none"
      raise LayoutError(f"{self.name}: expected {marker} for category {self.category!r}; "
                        f"categories found in {root}: {found}")
    splits = self._draw_train(self._listed(root))
    return {name: self._examples(name, records) for name, records in splits.items()}

  def _draw_train(self, splits: dict[str, list[Record]]) -> dict[str, list[Record]]:
    """`splits` with the train split thinned to the config's draw (`train_sample`)."""
    count, seed = self.builder_config.train_per_category, self.builder_config.sample_seed
    if count is None or "train" not in splits:
      return splits
    self.info.metadata["train_sample"] = train_sample.facts(count, seed, len(splits["train"]))
    return {**splits, "train": train_sample.draw(splits["train"], count, seed)}

  def _examples(self, split: str, records: Sequence[Record]):
    """What TFDS builds `split` from: a Beam transform in a Beam build, else a generator."""
    self.listed[split] = len(records)
    if self.beam:
      make_examples = functools.partial(
          examples_of_batch, config=self.builder_config, dataset=self.name,
          category=self.category, bad=BadInputs(self.bad_inputs.skip))
      return beam_examples.examples(list(_batches(records, EDGE_BATCH)), make_examples)
    self._plan_progress(len(records))
    return self._generate_examples(records)

  def _generate_examples(self, records: Sequence[Record]):
    for batch in _batches(records, EDGE_BATCH):
      yield from examples_of_batch(batch, config=self.builder_config, dataset=self.name,
                                   category=self.category, bad=self.bad_inputs)
      self._advance_progress(len(batch))


class MvtecLayoutBuilder(ManualCategoryBuilder, skip_registration=True):
  """A dataset laid out like MVTec AD (see `list_mvtec_layout`), one folder per category."""
  NORMAL_SPLITS: tuple[str, ...] = ("train",)

  def _masks_in(self, folder: pathlib.Path) -> dict[str, tuple[pathlib.Path, ...]]:
    """{image stem: mask paths} of one `ground_truth/<defect>` folder."""
    return mvtec_masks(folder)

  def _list_splits(self, root: pathlib.Path) -> dict[str, list[Record]]:
    return list_mvtec_layout(root, root / self.category, self.NORMAL_SPLITS, self._masks_in,
                             self.bad_inputs)
