"""The flags and error handling that `generate`, `localize` and `evaluate` share.

Defaults come from `af_jax.inference.defaults`, the ones the Python API uses. Expected
failures (a bad file, a wrong run, a bad value) become one `af-jax <verb>: error:` line and
exit status 1.

The scaled-out verbs (`SCALED_OUT`) split every batch over all of this process's devices and
take the multi-host flags of `train` (`host_flags`): each process then works on its share of
the images (`af_jax.inference.hosts`).
"""

import argparse
import math
import sys

from af_jax import checkpoint
from af_jax.commands import host_flags
from af_jax import files
from af_jax.inference import defaults
from af_jax import pixels
from af_jax import run_lock

EDGE_CHOICES = ("auto", *pixels.EDGE_METHODS)
SCALED_OUT = ("generate", "localize", "evaluate")


# ------------------------------------------------------------------ values checked at the flag
# Each is an argparse `type`: a bad value is refused at once, naming the flag.
def _number(kind, text: str, ok, expected: str):
  try:
    value = kind(text)
  except ValueError:
    value = None
  if value is None or not math.isfinite(value) or not ok(value):
    raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
  return value


def positive_int(text: str) -> int:
  return _number(int, text, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
  return _number(int, text, lambda v: v >= 0, "an integer >= 0")


def checkpoint_step(text: str) -> int:
  return _number(int, text, lambda v: v >= -1, "a checkpoint step >= 0 (or -1 for the latest)")


def unit_interval(text: str) -> float:
  return _number(float, text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def open_unit_interval(text: str) -> float:
  return _number(float, text, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


def non_negative_float(text: str) -> float:
  return _number(float, text, lambda v: v >= 0, "a finite number >= 0")


def plain_name(text: str) -> str:
  try:
    return files.check_plain_name(text, "the name")
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def dtype_name(text: str) -> str:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  try:
    jnp.dtype(text)
  except TypeError:
    raise argparse.ArgumentTypeError(f"expected a dtype name such as float32 or bfloat16, got "
                                     f"{text!r}") from None
  return text


def parser(command: str, description: str) -> argparse.ArgumentParser:
  """A verb's parser with the flags every inference verb shares: which run, which checkpoint,
  how to compute."""
  p = argparse.ArgumentParser(prog=f"af-jax {command}", description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="training run directory of the stage")
  p.add_argument("--step", type=checkpoint_step, default=-1,
                 help="checkpoint step (default: the latest)")
  p.add_argument("--batch_size", type=positive_int, default=defaults.BATCH_SIZE,
                 help="images per device call" + (
                     ", split over this host's devices (rounded up to a multiple of their "
                     "number)" if command in SCALED_OUT else ""))
  p.add_argument("--dtype", type=dtype_name,
                 help="compute dtype, e.g. bfloat16 (default: the run's)")
  p.add_argument("--edges", choices=EDGE_CHOICES, default="auto",
                 help="edge extractor; auto = the one the run's training data was prepared "
                      "with (recorded in the run)")
  if command in SCALED_OUT:
    host_flags.add(p)
  return p


def add_heatmap_flags(p: argparse.ArgumentParser) -> None:
  """The detector's heatmap post-processing (localize, evaluate)."""
  p.add_argument("--smoothing_sigma", type=non_negative_float, default=defaults.SMOOTHING_SIGMA,
                 help="Gaussian blur of the heatmaps, in model pixels (0: raw heatmaps)")
  p.add_argument("--flip_tta", action=argparse.BooleanOptionalAction, default=None,
                 help="average the heatmaps of the mirrored views the run was trained with "
                      "(default: as the run chose, blaze.flip_views; a run with an evidence "
                      "trust takes the views it was fitted with only)")
  p.add_argument("--flare_workdir", default=None,
                 help="a run trained with blaze.evidence_trust: the FlareGenerator run whose "
                      "anomalies fit a new part's trust (--reference); default: the run's "
                      "teacher, where training recorded it")


def detector_options(args) -> dict:
  """The keyword arguments of `infer.Detector` that the heatmap and shared flags set."""
  return dict(smoothing_sigma=args.smoothing_sigma, flip_tta=args.flip_tta,
              flare_workdir=args.flare_workdir, **network_options(args))


def add_references_flag(p: argparse.ArgumentParser) -> None:
  """`--reference DIR`, repeatable, of the verbs that take new categories' normal images
  (`image_files.reference_sets`)."""
  p.add_argument("--reference", action="append", metavar="DIR",
                 help="normal images (glob or directory) of a category the run was not "
                      "trained on, named after its folder's category (repeatable): a run "
                      "trained with blaze.reference compares that category's images with them")


def add_output_flags(p: argparse.ArgumentParser) -> None:
  """What to do with a previous output in `--out` (generate, localize; `output_files`)."""
  previous = p.add_mutually_exclusive_group()
  previous.add_argument("--overwrite", action="store_true", help="replace a previous output")
  previous.add_argument("--resume", action="store_true",
                        help="complete a previous output that did not finish (same flags): "
                             "only what it lacks is computed")


def network_options(args) -> dict:
  """The keyword arguments of `infer.Generator` / `infer.Detector` that the shared flags set;
  for a scaled-out verb (it has the multi-host flags), the mesh of this process's devices and
  `--batch_size` rounded up to a multiple of their number."""
  options = dict(step=args.step, dtype=args.dtype, batch_size=args.batch_size,
                 edge_method=None if args.edges == "auto" else args.edges)
  if hasattr(args, "distributed"):
    from af_jax import sharding  # pylint: disable=g-import-not-at-top
    from af_jax.inference import batching  # pylint: disable=g-import-not-at-top
    options["mesh"] = sharding.local_mesh()
    options["batch_size"] = batching.round_up(args.batch_size, options["mesh"].size)
  return options


def run(command: str, fn, args, show_result: bool = True) -> int:
  """Runs `fn(args)` (after joining the other processes of a multi-host run); expected
  failures become one error line and exit status 1."""
  try:
    host_flags.start(args)
    result = fn(args)
  except (OSError, ValueError, KeyError, checkpoint.CheckpointError,
          run_lock.RunLockedError) as e:
    print(f"af-jax {command}: error: {e}", file=sys.stderr)
    host_flags.exit_after_failure(args, 1)
    return 1
  if show_result:
    print(f"af-jax {command}: {result}")
  return 0
