"""`af-jax prepare`: build TFDS ArrayRecord datasets from manual downloads (or the synthetic set).

  af-jax prepare --dataset mvtec_ad --manual_dir ~/data/mvtec_ad --data_dir ~/tfds \\
      [--categories bottle,cable] [--size 256] [--edges pidinet|canny] \\
      [--regions_dir DIR] [--skip_bad]

Each category becomes one TFDS config (all categories found in the manual folder by
default). With the default options (256 px, or 128 px for synthetic; PiDiNet edges;
unsupervised regions) the config is named after the category and read with
`tfds.data_source('mvtec_ad/bottle', data_dir=...)`; other options give another name (e.g.
'bottle-64px-canny'), printed at the end. `--categories` also takes such a name, as this
command and error messages print it (`bottle-64px-canny`, `circuit-64px-train64`), and builds
exactly that build, with the options its name spells (a synthetic build's name also spells
its image counts and seed). A category that is already built is reused, not
rebuilt, unless `--overwrite` is given (e.g. for a corrupt build, which training and
evaluation report with this command): it is then built anew in a temporary folder inside
`--data_dir` and swapped in by renames once complete, so the old build stays readable until
the new one is whole, and a failed rebuild leaves the old one as it was. `--dataset
synthetic` needs no manual folder.

Exit status: 0 when built, 1 when the download is unusable (the message names the path),
2 for usage errors.
"""

import argparse
import functools
import importlib
import pathlib
import shutil
import sys
import tempfile

import tensorflow_datasets as tfds

from af_jax import files
from af_jax import pixels
from af_jax import progress
from data_builders import common
from data_builders import config as config_lib
from data_builders import features

DATASETS = ("mvtec_ad", "visa", "mvtec_loco", "madsim", "real_iad", "synthetic", "folder")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="af-jax prepare",
      description="Build TFDS ArrayRecord datasets (image, edges, regions, mask) from a "
                  "manual download.")
  parser.add_argument("--dataset", required=True, choices=DATASETS)
  parser.add_argument("--manual_dir", type=pathlib.Path,
                      help="the extracted download (required except for synthetic)")
  parser.add_argument("--data_dir", required=True, type=pathlib.Path,
                      help="where the built datasets go (TFDS data_dir)")
  parser.add_argument("--categories", type=lambda s: [c for c in s.split(",") if c],
                      help="comma-separated categories or builds' names such as "
                           "circuit-64px-train64 (default: all found)")
  parser.add_argument("--size", type=int,
                      help=f"side of the stored square images (default: {features.DEFAULT_SIZE}; "
                           "128 for synthetic)")
  parser.add_argument("--edges", choices=pixels.EDGE_METHODS,
                      help="edge extractor (default: pidinet)")
  parser.add_argument("--regions_dir", type=pathlib.Path,
                      help="precomputed segmentation masks to use as candidate regions")
  parser.add_argument("--skip_bad", action="store_true",
                      help="skip unreadable images and unpaired masks instead of stopping")
  parser.add_argument("--overwrite", action="store_true",
                      help="rebuild categories already built (e.g. a corrupt one); the old "
                           "build stays readable until the new one is complete")
  return parser


def builder_class(dataset: str) -> type[common.AfBuilder]:
  """The builder class registered as `dataset`, importing its module on first use."""
  importlib.import_module(f"data_builders.{dataset}")
  return tfds.builder_cls(dataset)


def config_for(dataset: str, cls: type[common.AfBuilder], category: str,
               **options) -> config_lib.AfBuilderConfig:
  """The config of `category` with the given options (the registered one when there are none)."""
  if dataset == "synthetic":  # Its configs have more options and their own defaults.
    return importlib.import_module("data_builders.synthetic").config_for(category, **options)
  if getattr(cls, "ANY_CATEGORY", False):  # Checks the name (ValueError).
    return cls.config_for(category, **options)
  return common.config_for(cls, category, **options)


def config_named(dataset: str, cls: type[common.AfBuilder], requested: str,
                 **options) -> config_lib.AfBuilderConfig:
  """The config `--categories` entry `requested` names: a category, built with `options`, or a
  build's name (`circuit-64px-train64`, as commands and errors print them), built as it says.

  Raises ValueError when the name spells no options, or `options` would build another name.
  """
  patterns = (importlib.import_module("data_builders.synthetic").NAME_PATTERNS
              if dataset == "synthetic" else common.NAME_PATTERNS)
  if getattr(cls, "ANY_CATEGORY", False):  # Its categories may hold '-': read from the right.
    category, named = cls.parse_config_name(requested)
  else:
    category, named = common.parse_config_name(requested, patterns)
  folder = named.pop("regions_dir", None)
  if folder and "regions_dir" not in options:
    raise ValueError(f"{requested} was built with the candidate regions of a folder named "
                     f"{folder!r}: pass that folder as --regions_dir")
  config = config_for(dataset, cls, category, **{**named, **options})
  if requested != category and config.name != requested:
    raise ValueError(f"--categories {requested} with the other flags builds {config.name}, not "
                     f"{requested}: name the build alone, or its category with the flags")
  return config


def _categories(parser: argparse.ArgumentParser, args: argparse.Namespace,
                cls: type[common.AfBuilder]) -> list[str]:
  """The categories to build: those asked for, else all that are there."""
  is_manual = issubclass(cls, common.ManualCategoryBuilder)
  any_category = getattr(cls, "ANY_CATEGORY", False)
  if any_category:  # Any plain folder name found in --manual_dir.
    known = tuple(cls.found_categories(args.manual_dir))
  else:
    known = cls.CATEGORIES if is_manual else tuple(cls.builder_configs)

  def category_of(requested: str) -> str | None:  # A build's name starts with its category.
    if not any_category:
      return requested.split("-")[0]
    try:
      return cls.parse_config_name(requested)[0]
    except ValueError:
      return None

  unknown = [c for c in args.categories or () if category_of(c) not in known]
  if unknown:
    parser.error(f"unknown {args.dataset} categories {', '.join(unknown)}; expected some of "
                 f"{', '.join(known)}")
  if args.categories:
    return args.categories
  if not is_manual:
    return list(known)
  found = cls.found_categories(args.manual_dir)
  if not found:
    parser.error(f"no {args.dataset} category found in {args.manual_dir}; expected folders "
                 f"laid out as:\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  return found


def plan(argv: list[str] | None = None) -> tuple[argparse.Namespace, type[common.AfBuilder],
                                                   list[config_lib.AfBuilderConfig]]:
  """What `af-jax prepare ARGV` builds, without building: (args, builder class, configs).

  Usage errors exit with status 2, as the command does.
  """
  parser = _parser()
  args = parser.parse_args(argv)
  if args.size is not None and args.size < 16:
    parser.error(f"--size must be at least 16, got {args.size}")
  cls = builder_class(args.dataset)
  if issubclass(cls, common.ManualCategoryBuilder):
    if args.manual_dir is None:
      parser.error(f"--manual_dir is required for {args.dataset}:\n"
                   f"{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if not args.manual_dir.is_dir():
      parser.error(f"--manual_dir {args.manual_dir} is not a folder")
  options = {name: value for name, value in (
      ("size", args.size), ("edges", args.edges),
      ("regions_dir", str(args.regions_dir) if args.regions_dir else None)) if value is not None}
  try:
    configs = [config_named(args.dataset, cls, requested, **options)
               for requested in _categories(parser, args, cls)]
  except ValueError as e:
    parser.error(str(e))
  return args, cls, configs


def main(argv: list[str] | None = None) -> int:
  """Builds the requested categories; returns 0, or 1 when the download is unusable."""
  args, cls, configs = plan(argv)
  download_config = tfds.download.DownloadConfig(
      manual_dir=str(args.manual_dir) if args.manual_dir else None)
  tfds.disable_progress_bar()  # One bar of images for everything, below.
  built, skipped = [], []
  with progress.Progress(0, f"prepare {args.dataset}") as bar:  # One bar for all categories.
    for config in configs:
      make = functools.partial(cls, config=config, skip_bad=args.skip_bad, progress=bar)
      try:
        builder = make(data_dir=str(args.data_dir))
        if args.overwrite and pathlib.Path(builder.data_dir).exists():
          builder = _rebuild(make, args.data_dir, download_config)
        else:
          builder.download_and_prepare(download_config=download_config)
      except (common.LayoutError, common.BadInputError) as e:
        bar.close(summary=False)
        print(f"af-jax prepare: error: {e}", file=sys.stderr)
        return 1
      built.append(builder)
      skipped += builder.skipped
  _print_summary(args, built, skipped)
  return 0


def _rebuild(make, data_dir: pathlib.Path, download_config) -> common.AfBuilder:
  """Builds a category anew beside its old build, then swaps it in (module docstring).

  The temporary folder lies inside `data_dir`, so the swap is two renames on one file system:
  the old build is renamed into it, the new one into its place (readers see the old build
  until the first rename and the whole new one after the second, microseconds apart); the
  old build is deleted last, with the temporary folder. A failed build deletes only that.
  """
  staging = pathlib.Path(tempfile.mkdtemp(prefix=".prepare-overwrite-", dir=data_dir))
  try:
    fresh = make(data_dir=str(staging))
    fresh.download_and_prepare(download_config=download_config)
    target = data_dir / pathlib.Path(fresh.data_dir).relative_to(staging)
    files.swap_in_folder(fresh.data_dir, target, aside=staging / "old")
  finally:
    shutil.rmtree(staging)
  builder = make(data_dir=str(data_dir))  # Reads the swapped-in build's info.
  builder.skipped.extend(fresh.skipped)
  return builder


def _print_summary(args: argparse.Namespace, built: list[common.AfBuilder],
                   skipped: list[str]) -> None:
  print(f"\nBuilt {len(built)} {args.dataset} dataset(s) in {args.data_dir}:")
  for builder in built:
    counts = ", ".join(f"{name} {split.num_examples}"
                       for name, split in sorted(builder.info.splits.items()))
    print(f"  {args.dataset}/{builder.builder_config.name}  ({counts})  {builder.data_dir}")
  if skipped:
    print(f"Skipped {len(skipped)} bad file(s):")
    for message in skipped:
      print(f"  {message}")
  name = f"{args.dataset}/{built[0].builder_config.name}"
  print("\nRead it (no TensorFlow needed):\n"
        "  import tensorflow_datasets as tfds\n"
        f"  splits = tfds.data_source({name!r}, data_dir={str(args.data_dir)!r})\n"
        "  example = splits['train'][0]  # image, edges, regions, mask, label, defect, ...")


if __name__ == "__main__":
  sys.exit(main())
