"""`af-jax prepare --mix`: every category of a training mix, in one command.

  af-jax prepare --mix configs/mix82.py --manual_root ~/data --data_dir ~/tfds \\
      [--size 256] [--edges pidinet|canny] [--train_per_category N|mix [--sample_seed S]] \\
      [--beam_pipeline_options OPTIONS] [--skip_bad] [--overwrite]

`--mix` is a config file: one with `get_data_config()` (configs/mix82.py) or a training
config with `get_config().data` (configs/boot.py). Its `data.sources` name the categories.
Each dataset's download lies in `<manual_root>/<dataset>/` (mvtec_ad, visa, mvtec_loco,
madsim, real_iad, folder), laid out as its builder documents (`af-jax prepare --dataset
<dataset> --manual_dir <folder>` shows the layout); the synthetic set needs none. Every
category found is built; the command lists what is absent and ends with a table (dataset,
category, train / test examples, seconds, images/s).

Building resumes: a category already built is skipped (reported as such), and one that was
interrupted left only an `incomplete.*` folder, which no reader takes for a dataset (the
rerun builds that category anew; the command lists such leftovers to delete). With
`--train_per_category mix`, each category keeps the `per_category` training images its
source trains on (`data_builders.train_sample`), so a Real-IAD category decodes 400 training
images, not thousands.

The result trains with no other step: `af-jax train --config configs/boot.py
--config.data.data_dir=<data_dir>` reads each category's build by its category name
(`input_pipeline.resolve_category` finds `pcb1-sample200` for `pcb1`).
"""

import argparse
from collections.abc import Callable
import contextlib
import dataclasses
import importlib.util
import pathlib
import sys
import time

from af_jax.commands import configs
from af_jax.commands import prepare_build
from af_jax.configs import mix82
from af_jax.data_builders import common
from af_jax.data_builders import config as config_lib
from af_jax.data_builders import features

# The first stage's config, whose data.sources are configs/mix82.py's paper mix.
TRAIN_CONFIG = "configs/boot.py"


@dataclasses.dataclass(frozen=True)
class _Planned:
  dataset: str
  cls: type[common.AfBuilder]
  manual_dir: pathlib.Path | None
  config: config_lib.AfBuilderConfig


@dataclasses.dataclass(frozen=True)
class _Row:
  """One line of the final table."""
  dataset: str
  name: str
  train: int
  test: int
  seconds: float
  fresh: bool  # Built by this run (False: it was already built).


def load_sources(path: pathlib.Path) -> tuple[list[dict], bool]:
  """(`data.sources` of the config file `path`, whether it is a training config);
  ValueError naming the path when it has no sources. A `configs/NAME.py` missing here is the
  one shipped with af_jax (`configs.resolve`)."""
  path = configs.resolve(str(path))
  spec = importlib.util.spec_from_file_location(f"af_jax_mix_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  is_training_config = hasattr(module, "get_config")
  if hasattr(module, "get_data_config"):
    data = module.get_data_config()
  elif is_training_config:
    data = module.get_config().get("data")
  else:
    data = None
  sources = data.get("sources") if data is not None else None
  if not sources:
    raise ValueError(f"--mix {path} defines neither get_data_config() nor get_config() with "
                     "data.sources; give a config file such as configs/mix82.py")
  return [dict(source) for source in sources], is_training_config


def _options(args: argparse.Namespace, dataset: str, source: dict) -> dict:
  """The build options of one source's categories."""
  options = {"size": args.size, "edges": args.edges}
  if dataset != "synthetic":  # It renders exactly the images asked for: nothing to draw.
    count = args.train_per_category
    options["train_per_category"] = (source.get("per_category") if count == "mix"
                                     else int(count) if count else None)
    if options["train_per_category"] is not None:
      options["sample_seed"] = args.sample_seed
  return {key: value for key, value in options.items() if value is not None}


def _plan(args: argparse.Namespace, sources: list[dict]
          ) -> tuple[list[_Planned], dict[str, list[str]]]:
  """(builds, {dataset: categories absent from the root}); ValueError for usage errors,
  common.LayoutError for a dataset folder that holds none of its categories."""
  planned, absent = [], {}
  for i, source in enumerate(sources):
    dataset, categories = source.get("dataset"), list(source.get("categories") or ())
    if dataset not in prepare_build.DATASETS:
      raise ValueError(f"--mix {args.mix}: data.sources[{i}] names the dataset {dataset!r}; "
                       f"af-jax prepare builds {', '.join(prepare_build.DATASETS)}")
    cls = prepare_build.builder_class(dataset)
    manual_dir = None
    if issubclass(cls, common.ManualCategoryBuilder):
      manual_dir = args.manual_root / dataset
      if not manual_dir.is_dir():
        absent.setdefault(dataset, []).extend(categories)
        continue
      found = set(cls.found_categories(manual_dir))
      if not found:
        raise common.LayoutError(_no_category_found(dataset, cls, manual_dir))
      absent.setdefault(dataset, []).extend(c for c in categories if c not in found)
      categories = [c for c in categories if c in found]
    naming = prepare_build.naming(dataset, cls)
    for category in categories:
      config = naming.config(category, **_options(args, dataset, source))
      planned.append(_Planned(dataset, cls, manual_dir, config))
  return planned, {dataset: names for dataset, names in absent.items() if names}


def _no_category_found(dataset: str, cls, folder: pathlib.Path) -> str:
  layout = next(line.strip() for line in cls.MANUAL_DOWNLOAD_INSTRUCTIONS.splitlines()
                if "<manual_dir>/" in line)
  return (f"{folder} holds no {dataset} category laid out as the download ships it (expected "
          f"e.g. {layout.replace('<manual_dir>', str(folder))}); move the extracted download "
          f"there (`af-jax prepare --dataset {dataset} --manual_dir {folder}` shows the whole "
          "layout)")


def run(args: argparse.Namespace, usage_error: Callable[[str], None]) -> int:
  """Builds the mix (see the module docstring); 0 when built, 1 for unusable downloads."""
  for flag in ("dataset", "manual_dir", "categories", "regions_dir"):
    if getattr(args, flag) is not None:
      usage_error(f"--{flag} does not go with --mix (it builds the categories of the mix's "
                  f"data.sources found under --manual_root)")
  if args.manual_root is None:
    usage_error("--mix needs --manual_root, the folder holding one download per dataset "
                "(<root>/mvtec_ad, <root>/visa, ...)")
  if not args.manual_root.is_dir():
    usage_error(f"--manual_root {args.manual_root} is not a folder")
  try:
    sources, is_training_config = load_sources(args.mix)
    planned, absent = _plan(args, sources)
    download = prepare_build.download_config(None, args.beam_pipeline_options)
  except common.LayoutError as e:
    return _error(e)
  except (ValueError, TypeError) as e:
    usage_error(str(e))
  if not planned:
    return _error(f"{args.manual_root} holds none of the datasets of {args.mix}: expected "
                  f"{', '.join(sorted({f'{args.manual_root}/{d}' for d in absent}))}, each "
                  "laid out as its download ships (see the README's dataset layouts)")
  _print_absent(args.manual_root, absent)
  rows, skipped = [], []
  for item in planned:
    try:
      row, bad = _build(args, item, download)
    except (common.LayoutError, common.BadInputError, prepare_build.BeamBuildError) as e:
      _print_table(rows)
      return _error(e)
    rows.append(row)
    skipped += bad
  _print_table(rows)
  if skipped:
    print(f"Skipped bad file(s) ({len(skipped)} line(s)):")
    for message in skipped:
      print(f"  {message}")
  _print_leftovers(args.data_dir)
  _print_train_command(args, sources, is_training_config, absent)
  return 0


def _error(message) -> int:
  print(f"af-jax prepare: error: {message}", file=sys.stderr)
  return 1


def _build(args, item: _Planned, download) -> tuple[_Row, list[str]]:
  """Builds (or finds built) one category: its table row and the bad files it skipped."""
  download = _with_manual_dir(download, item.manual_dir)
  name = f"{item.dataset}/{item.config.name}"
  start = time.monotonic()
  fresh = args.overwrite or not item.cls(config=item.config,
                                         data_dir=str(args.data_dir)).is_prepared()
  bar = (prepare_build.progress_bar(download, f"prepare {name}") if fresh
         else contextlib.nullcontext())
  with bar as shown:
    builder = prepare_build.build(item.cls, item.config, args.data_dir, download,
                                  skip_bad=args.skip_bad, overwrite=args.overwrite,
                                  progress=shown)
  counts = {split: info.num_examples for split, info in builder.info.splits.items()}
  row = _Row(item.dataset, item.config.name, counts.get("train", 0), counts.get("test", 0),
             time.monotonic() - start, fresh)
  left_out = prepare_build.left_out_by_workers(builder)
  return row, builder.skipped + ([f"{name}: {left_out} left out by the Beam workers (named in "
                                  "their logs)"] if left_out else [])


def _with_manual_dir(download, manual_dir: pathlib.Path | None):
  return dataclasses.replace(download, manual_dir=str(manual_dir) if manual_dir else None)


def _print_absent(root: pathlib.Path, absent: dict[str, list[str]]) -> None:
  if not absent:
    return
  print(f"Not found under {root}, so not built:")
  for dataset, names in absent.items():
    where = root / dataset
    why = f"no folder {where}" if not where.is_dir() else f"not in {where}"
    print(f"  {dataset}: {len(names)} categor{'y' if len(names) == 1 else 'ies'} ({why}): "
          f"{', '.join(names)}")


def _print_table(rows: list[_Row]) -> None:
  if not rows:
    return
  line = "{:<11} {:<28} {:>7} {:>7} {:>9} {:>9}  {}".format
  print("\n" + line("dataset", "build", "train", "test", "seconds", "images/s", ""))
  for r in rows:
    rate = f"{(r.train + r.test) / max(r.seconds, 1e-9):.1f}" if r.fresh else "-"
    print(line(r.dataset, r.name, r.train, r.test, f"{r.seconds:.1f}", rate,
               "built" if r.fresh else "already built"))
  fresh = [r for r in rows if r.fresh]
  images, seconds = sum(r.train + r.test for r in fresh), sum(r.seconds for r in fresh)
  print(line("total", f"{len(rows)} categories", sum(r.train for r in rows),
             sum(r.test for r in rows), f"{seconds:.1f}",
             f"{images / seconds:.1f}" if fresh else "-",
             f"{len(fresh)} built, {len(rows) - len(fresh)} already built"))


def _print_leftovers(data_dir: pathlib.Path) -> None:
  """Folders of interrupted builds (TFDS's `incomplete.*`): never read, only taking space."""
  leftovers = sorted(data_dir.glob("*/*/incomplete.*"))
  if leftovers:
    print("Folders left by interrupted builds (never read as datasets; delete them unless "
          "another prepare is running):")
    for folder in leftovers:
      print(f"  {folder}")


def _print_train_command(args: argparse.Namespace, sources: list[dict],
                         is_training_config: bool, absent: dict[str, list[str]]) -> None:
  """How to train on the result: the command when the whole mix is built, else what to do."""
  if absent:
    print(f"\n{sum(map(len, absent.values()))} categories of the mix are absent: training on "
          "the whole mix needs them. To train on what is built, list it in config.data.sources "
          "(configs/mix82.py: sources_for(dataset, categories, per_category)).")
    return
  if is_training_config:
    config = args.mix
  elif sources == mix82.paper_sources():
    config = TRAIN_CONFIG
  else:
    print(f"\nTrain on it with a config whose data.sources are those of {args.mix}.")
    return
  command = ["af-jax train --config", str(config), f"--config.data.data_dir={args.data_dir}"]
  if args.size not in (None, features.DEFAULT_SIZE):
    command.append(f"--config.data.image_size={args.size}")
  print(f"\nTrain on it: {' '.join(command)} --workdir <run folder>")
