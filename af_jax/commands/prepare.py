"""`af-jax prepare`: build TFDS ArrayRecord datasets from manual downloads (or the synthetic set).

  af-jax prepare --dataset mvtec_ad --manual_dir ~/data/mvtec_ad --data_dir ~/tfds \\
      [--categories bottle,cable] [--size 256] [--edges pidinet|canny] \\
      [--regions_dir DIR] [--skip_bad] [--train_per_category N [--sample_seed S]] \\
      [--beam_pipeline_options OPTIONS]
  af-jax prepare --mix configs/mix82.py --manual_root ~/data --data_dir ~/tfds \\
      [--size ...] [--edges ...] [--train_per_category N|mix] [--beam_pipeline_options ...]

Each category becomes one TFDS config (all categories found in the manual folder by
default). With the default options (256 px, or 128 px for synthetic; PiDiNet edges;
unsupervised regions; every training image) the config is named after the category and read
with `tfds.data_source('mvtec_ad/bottle', data_dir=...)`; other options give another name
(e.g. 'bottle-64px-canny', 'pcb1-sample200'), printed at the end. `--categories` also takes
such a name, as this command and error messages print it (`bottle-64px-canny`,
`circuit-64px-train64`), and builds exactly that build, with the options its name spells (a
synthetic build's name also spells its image counts and seed). A category that is already
built is reused, not rebuilt, when its manual folder still holds the files it was built from
(names, sizes and modification times, recorded in the build: `data_builders.source_files`);
files added, removed or changed since are refused, naming the folders and counts, and a build
that recorded none is reused with a warning. `--overwrite` rebuilds (so, too, a corrupt build,
which training and evaluation report with this command): it is built anew in a temporary
folder inside `--data_dir` and swapped in by renames once complete, so the old build stays
readable until the new one is whole, and a failed rebuild leaves the old one as it was.
`--dataset synthetic` needs no manual folder.

`--mix` builds every category of a training config's `data.sources` found under
`--manual_root` (`prepare_mix`). `--train_per_category N` builds only N training images per
category, drawn with `--sample_seed` (`data_builders.train_sample`). `--beam_pipeline_options`
(spelled as for `tfds build`) runs each build as an Apache Beam pipeline (`pip install
'af_jax[beam]'`): 'direct_num_workers=4,direct_running_mode=multi_processing' on this
machine, or any runner the options name; the datasets are the same as without it.

Exit status: 0 when built, 1 when the download is unusable (the message names the path) or a
Beam pipeline failed, 2 for usage errors.
"""

import argparse
import pathlib
import sys

import tensorflow_datasets as tfds

from af_jax import pixels
from af_jax.commands import prepare_build
from af_jax.commands import prepare_mix
from af_jax.commands.prepare_build import builder_class
from af_jax.commands.prepare_build import config_named
from af_jax.commands.prepare_build import DATASETS
from af_jax.data_builders import common
from af_jax.data_builders import config as config_lib
from af_jax.data_builders import features


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="af-jax prepare",
      description="Build TFDS ArrayRecord datasets (image, edges, regions, mask) from a "
                  "manual download, or every category of a training mix.")
  parser.add_argument("--dataset", choices=DATASETS, help="the dataset to build (or --mix)")
  parser.add_argument("--manual_dir", type=pathlib.Path,
                      help="the extracted download (required except for synthetic)")
  parser.add_argument("--mix", type=pathlib.Path,
                      help="a config file whose data.sources lists the categories to build "
                           "(e.g. configs/mix82.py), instead of --dataset")
  parser.add_argument("--manual_root", type=pathlib.Path,
                      help="with --mix: the folder holding one extracted download per "
                           "dataset, named as the dataset (<root>/mvtec_ad, <root>/visa, ...)")
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
  parser.add_argument("--train_per_category",
                      help="build only this many training images per category, drawn at "
                           "random (test splits stay whole); with --mix, 'mix' takes each "
                           "source's per_category (the paper's 200 per VisA and 400 per "
                           "Real-IAD category)")
  parser.add_argument("--sample_seed", type=int,
                      help="seed of the --train_per_category draw (default: 0)")
  parser.add_argument("--beam_pipeline_options",
                      help="build as an Apache Beam pipeline with these comma-separated "
                           "key=value options, as for `tfds build`, e.g. "
                           "direct_num_workers=4,direct_running_mode=multi_processing "
                           "(needs apache-beam: pip install 'af_jax[beam]')")
  return parser


def _categories(parser: argparse.ArgumentParser, args: argparse.Namespace,
                cls: type[common.AfBuilder]) -> list[str]:
  """The categories to build: those asked for, else all that are there."""
  is_manual = issubclass(cls, common.ManualCategoryBuilder)
  naming = prepare_build.naming(args.dataset, cls)
  if naming.any_category:  # Any plain folder name found in --manual_dir.
    known = tuple(cls.found_categories(args.manual_dir))
  else:
    known = cls.CATEGORIES if is_manual else tuple(cls.builder_configs)

  def category_of(requested: str) -> str | None:  # A build's name starts with its category.
    if not naming.any_category:
      return requested.split("-")[0]
    try:
      return naming.parse(requested)[0]
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


def _check_shared(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Usage errors of the options both ways of building take."""
  if args.size is not None and args.size < 16:
    parser.error(f"--size must be at least 16, got {args.size}")
  count = args.train_per_category
  if count is not None and not (count.isdigit() and int(count) > 0 or
                                (count == "mix" and args.mix)):
    parser.error(f"--train_per_category must be a positive number{' or mix' if args.mix else ''}"
                 f", got {count!r}")
  if args.sample_seed is not None and count is None:
    parser.error("--sample_seed seeds the --train_per_category draw: give both, or neither")


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace
          ) -> tuple[type[common.AfBuilder], list[config_lib.AfBuilderConfig]]:
  """(builder class, configs) of a `--dataset` build; usage errors exit with status 2."""
  if args.dataset is None:
    parser.error("give --dataset (one dataset) or --mix (every category of a training mix)")
  _check_shared(parser, args)
  cls = builder_class(args.dataset)
  if issubclass(cls, common.ManualCategoryBuilder):
    if args.manual_dir is None:
      parser.error(f"--manual_dir is required for {args.dataset}:\n"
                   f"{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if not args.manual_dir.is_dir():
      parser.error(f"--manual_dir {args.manual_dir} is not a folder")
  options = {name: value for name, value in (
      ("size", args.size), ("edges", args.edges),
      ("regions_dir", str(args.regions_dir) if args.regions_dir else None),
      ("train_per_category", int(args.train_per_category) if args.train_per_category else None),
      ("sample_seed", args.sample_seed)) if value is not None}
  try:
    configs = [config_named(args.dataset, cls, requested, **options)
               for requested in _categories(parser, args, cls)]
  except (ValueError, TypeError) as e:  # TypeError: an option the dataset does not take.
    parser.error(str(e))
  return cls, configs


def plan(argv: list[str] | None = None) -> tuple[argparse.Namespace, type[common.AfBuilder],
                                                   list[config_lib.AfBuilderConfig]]:
  """What `af-jax prepare --dataset ... ARGV` builds, without building: (args, builder class,
  configs). Usage errors exit with status 2, as the command does.
  """
  parser = _parser()
  args = parser.parse_args(argv)
  return (args, *_plan(parser, args))


def main(argv: list[str] | None = None) -> int:
  """Builds the requested categories; returns 0, or 1 when the download is unusable."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.mix is not None:
    _check_shared(parser, args)
    return prepare_mix.run(args, parser.error)
  if args.manual_root is not None:
    parser.error("--manual_root goes with --mix; for one dataset give --manual_dir")
  cls, configs = _plan(parser, args)
  try:
    download = prepare_build.download_config(args.manual_dir, args.beam_pipeline_options)
  except ValueError as e:
    parser.error(str(e))
  tfds.disable_progress_bar()  # One bar of images for everything, below.
  built, skipped = [], []
  # One bar for all categories.
  with prepare_build.progress_bar(download, f"prepare {args.dataset}") as bar:
    for config in configs:
      try:
        builder = prepare_build.build(cls, config, args.data_dir, download,
                                      skip_bad=args.skip_bad, overwrite=args.overwrite,
                                      progress=bar)
      except (common.LayoutError, common.BadInputError, prepare_build.BeamBuildError) as e:
        if bar is not None:
          bar.close(summary=False)
        print(f"af-jax prepare: error: {e}", file=sys.stderr)
        return 1
      built.append(builder)
      skipped += builder.skipped
  _print_summary(args, built, skipped)
  return 0


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
  left_out = sum(map(prepare_build.left_out_by_workers, built))
  if left_out:
    print(f"The Beam workers left out {left_out} bad file(s), named in their logs.")
  name = f"{args.dataset}/{built[0].builder_config.name}"
  print("\nRead it (no TensorFlow needed):\n"
        "  import tensorflow_datasets as tfds\n"
        f"  splits = tfds.data_source({name!r}, data_dir={str(args.data_dir)!r})\n"
        "  example = splits['train'][0]  # image, edges, regions, mask, label, defect, ...")


if __name__ == "__main__":
  sys.exit(main())
