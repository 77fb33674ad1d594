"""Building one category for `af-jax prepare`: its builder, its config, the build itself.

Shared by the one-dataset command (`prepare`) and the whole mix (`prepare_mix`). A build runs
in this process, or, with Beam pipeline options, as an Apache Beam pipeline through TFDS's
own Beam support (`data_builders.beam_examples`); both store the same examples.
"""

from collections.abc import Callable
import contextlib
import dataclasses
import functools
import importlib
import pathlib
import shutil
import sys
import tempfile

import tensorflow_datasets as tfds

from af_jax import files
from af_jax import progress
from af_jax.data_builders import common
from af_jax.data_builders import config as config_lib

DATASETS = ("mvtec_ad", "visa", "mvtec_loco", "madsim", "real_iad", "synthetic", "folder")
# `pip install` spelling of the optional dependency of Beam builds.
BEAM_EXTRA = "pip install 'af_jax[beam]' (in a checkout: pip install -e '.[beam]')"


class BeamBuildError(RuntimeError):
  """A Beam pipeline failed; nothing of the category it was building was kept."""


def builder_class(dataset: str) -> type[common.AfBuilder]:
  """The builder class registered as `dataset`, importing its module on first use."""
  importlib.import_module(f"af_jax.data_builders.{dataset}")
  return tfds.builder_cls(dataset)


@dataclasses.dataclass(frozen=True)
class Naming:
  """How a dataset names its builds.

  Attributes:
    parse: build name -> (category, options it spells); ValueError when it spells none.
    config: (category, **options) -> the config that builds it.
    any_category: True for `folder`, whose categories are whatever folders it is given
      (and may hold '-', so names are read from the right).
  """
  parse: Callable[[str], tuple[str, dict]]
  config: Callable[..., config_lib.AfBuilderConfig]
  any_category: bool = False


def naming(dataset: str, cls: type[common.AfBuilder]) -> Naming:
  """The `Naming` of `dataset` (built by `cls`)."""
  if dataset == "synthetic":  # Its configs have more options and their own defaults.
    synthetic = importlib.import_module("af_jax.data_builders.synthetic")
    return Naming(functools.partial(common.parse_config_name,
                                    patterns=synthetic.NAME_PATTERNS), synthetic.config_for)
  if getattr(cls, "ANY_CATEGORY", False):
    return Naming(cls.parse_config_name, cls.config_for, any_category=True)
  return Naming(common.parse_config_name, functools.partial(common.config_for, cls))


def config_for(dataset: str, cls: type[common.AfBuilder], category: str,
               **options) -> config_lib.AfBuilderConfig:
  """The config of `category` with the given options (the registered one when there are none)."""
  return naming(dataset, cls).config(category, **options)


def config_named(dataset: str, cls: type[common.AfBuilder], requested: str,
                 **options) -> config_lib.AfBuilderConfig:
  """The config `--categories` entry `requested` names: a category, built with `options`, or a
  build's name (`circuit-64px-train64`, as commands and errors print them), built as it says.

  Raises ValueError when the name spells no options, or `options` would build another name.
  """
  category, named = naming(dataset, cls).parse(requested)
  folder = named.pop("regions_dir", None)
  if folder and "regions_dir" not in options:
    raise ValueError(f"{requested} was built with the candidate regions of a folder named "
                     f"{folder!r}: pass that folder as --regions_dir")
  config = config_for(dataset, cls, category, **{**named, **options})
  if requested != category and config.name != requested:
    raise ValueError(f"--categories {requested} with the other flags builds {config.name}, not "
                     f"{requested}: name the build alone, or its category with the flags")
  return config


def download_config(manual_dir: pathlib.Path | None,
                    beam_pipeline_options: str | None) -> tfds.download.DownloadConfig:
  """TFDS's download config: the manual folder and, when given, the Beam pipeline options.

  `beam_pipeline_options` is spelled as for `tfds build`: comma-separated `key=value` flags
  of Beam's `PipelineOptions` without their dashes, e.g.
  'runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing'.
  Workers log at WARNING unless `default_sdk_harness_log_level` says otherwise (at INFO, a
  few lines per bundle drown the command's own output). Raises ValueError (naming the option
  and the fix) without apache-beam or for an option Beam does not know.
  """
  config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
  if beam_pipeline_options is None:
    return config
  try:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError(f"--beam_pipeline_options needs apache-beam, which is not installed: "
                     f"{BEAM_EXTRA}") from None
  flags = [f"--{option.strip()}" for option in beam_pipeline_options.split(",") if option.strip()]
  if not any(flag.startswith("--default_sdk_harness_log_level") for flag in flags):
    flags.append("--default_sdk_harness_log_level=WARNING")
  options = pipeline_options.PipelineOptions(flags=flags)
  known = options.get_all_options()
  unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
  if unknown:
    raise ValueError(f"--beam_pipeline_options: Beam knows no option {', '.join(unknown)}; "
                     "spell them as key=value,key=value (as for `tfds build`), e.g. "
                     "runner=DirectRunner,direct_num_workers=2,"
                     "direct_running_mode=multi_processing")
  config.beam_options = options
  return config


def progress_bar(download: tfds.download.DownloadConfig, desc: str):
  """A progress bar of the images built in this process; none for a Beam build (its workers
  build them)."""
  if download.beam_options is not None or download.beam_runner is not None:
    print(f"{desc}: running the Beam pipeline", file=sys.stderr, flush=True)
    return contextlib.nullcontext()
  return progress.Progress(0, desc)


def build(cls: type[common.AfBuilder], config: config_lib.AfBuilderConfig,
          data_dir: pathlib.Path, download: tfds.download.DownloadConfig, *,
          skip_bad: bool = False, overwrite: bool = False, progress=None) -> common.AfBuilder:
  """Builds one category into `data_dir` (reusing a complete build unless `overwrite`).

  Returns the builder, whose `info` describes the build. Raises `common.LayoutError` or
  `common.BadInputError` for unusable input, and `BeamBuildError` when a Beam pipeline fails;
  a failed build leaves nothing that reads as built (and an old build as it was).
  """
  make = functools.partial(cls, config=config, skip_bad=skip_bad, progress=progress)
  builder = make(data_dir=str(data_dir))
  try:
    if overwrite and pathlib.Path(builder.data_dir).exists():
      return _rebuild(make, data_dir, download)
    builder.download_and_prepare(download_config=download)
  except (common.LayoutError, common.BadInputError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    if not (download.beam_options or download.beam_runner):
      raise
    raise BeamBuildError(_beam_failure(builder, e)) from e
  return builder


def left_out_by_workers(builder: common.AfBuilder) -> int:
  """How many listed images a Beam build's workers left out as bad input (they log which)."""
  if not builder.beam or not builder.listed:
    return 0
  return sum(builder.listed.values()) - sum(s.num_examples for s in builder.info.splits.values())


def _beam_failure(builder: common.AfBuilder, error: Exception) -> str:
  """One line on a failed Beam pipeline: the worker's own error, and what to do."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  # Runners wrap a worker's exception in their own tracebacks; its last 'Error: ' line is it.
  cause = next((line for line in reversed(lines) if "Error: " in line),
               lines[-1] if lines else type(error).__name__)
  return (f"the Beam pipeline building {builder.name}/{builder.builder_config.name} failed "
          f"({cause}); nothing of it was kept: fix the cause and run the same command again "
          "(categories already built are skipped)")


def _rebuild(make, data_dir: pathlib.Path, download) -> common.AfBuilder:
  """Builds a category anew beside its old build, then swaps it in (`prepare`'s docstring).

  The temporary folder lies inside `data_dir`, so the swap is two renames on one file system:
  the old build is renamed into it, the new one into its place (readers see the old build
  until the first rename and the whole new one after the second, microseconds apart); the
  old build is deleted last, with the temporary folder. A failed build deletes only that.
  """
  staging = pathlib.Path(tempfile.mkdtemp(prefix=".prepare-overwrite-", dir=data_dir))
  try:
    fresh = make(data_dir=str(staging))
    fresh.download_and_prepare(download_config=download)
    target = data_dir / pathlib.Path(fresh.data_dir).relative_to(staging)
    files.swap_in_folder(fresh.data_dir, target, aside=staging / "old")
  finally:
    shutil.rmtree(staging)
  builder = make(data_dir=str(data_dir))  # Reads the swapped-in build's info.
  builder.skipped.extend(fresh.skipped)
  return builder
