"""`af-jax train`: one stage (Boot, Flare or Blaze) from an ml_collections config file.

  af-jax train --config configs/boot.py --workdir runs/boot
  af-jax train --config configs/flare.py --config.teacher_workdir=runs/boot --workdir runs/flare
  af-jax train --config configs/blaze.py --config.teacher_workdir=runs/flare --workdir runs/blaze

`--config configs/NAME.py` reads that file in the working folder, or, where there is none, the
config of that name shipped with af_jax (`af-jax configs` lists them); any other path is read
as given.

Re-running a command on an existing workdir resumes from its latest complete checkpoint
(`af_jax/training/train.py`). Multi-host: start one process per host with
`--coordinator_address host:port --num_processes N --process_id i`, or with `--distributed`
alone where JAX finds them in the environment (Cloud TPU, SLURM, ...).
"""

import argparse
import sys

import ml_collections

from af_jax import checkpoint
from af_jax.commands import configs
from af_jax.commands import host_flags
from af_jax import run_lock
from af_jax import stage_registry
from af_jax.training import train as train_lib

CONFIG_OVERRIDE = "--config."
# Failures the user can act on (their messages say how): one line and exit status 1, no
# traceback. Disk and dataset faults are OSErrors and ValueErrors (input_pipeline.DatasetError).
EXPECTED_ERRORS = (OSError, ValueError, checkpoint.CheckpointError, run_lock.RunLockedError,
                   train_lib.NonFiniteLossError)


def parse_config(spec: str, overrides: list[str]) -> ml_collections.ConfigDict:
  """The config of `spec` (`FILE` or `FILE:ARG`) with `--config.FIELD=VALUE` overrides applied.

  `FILE` is found by `configs.resolve` (a `configs/NAME.py` missing here is the shipped one).
  ml_collections' own flag parser reads the file and applies the overrides (typed like the
  field they set; unknown fields are refused); it runs on a private flag registry, so nothing
  else in the process sees absl flags. A moved field is refused naming its new place.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  for arg in overrides:
    if arg.startswith(CONFIG_OVERRIDE):
      field = arg[len(CONFIG_OVERRIDE):].split("=")[0].split(".")[0]
      error = stage_registry.moved_field_error(field, arg)
      if error:
        raise error
    elif arg.startswith("-"):
      raise ValueError(f"unrecognized argument {arg} (config fields are set with "
                       f"{CONFIG_OVERRIDE}FIELD=VALUE)")
  path, colon, config_arg = spec.partition(":")
  registry = flags.FlagValues()
  argv = ["af-jax train", f"--config={configs.resolve(path)}{colon}{config_arg}", *overrides]
  config_flags.DEFINE_config_file("config", None, "stage config file", flag_values=registry,
                                  lock_config=True, sys_argv=argv)
  try:
    registry(argv)
  except (flags.Error, AttributeError, KeyError) as e:  # Unknown fields raise the latter two.
    raise ValueError(f"{spec}: {e}") from None
  return registry.config


def main(argv: list[str]) -> int:
  """`af-jax train --config CONFIG.py --workdir DIR [--config.FIELD=VALUE ...]`."""
  parser = argparse.ArgumentParser(
      prog="af-jax train", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=f"{CONFIG_OVERRIDE}FIELD=VALUE (repeatable) overrides any field of the config, "
             "e.g. --config.batch_size=16 --config.blaze.heatmap_target=region; "
             "configs/common.py documents every field. Shipped configs: "
             f"{', '.join(str(configs.PREFIX / name) for name in configs.shipped())}.")
  parser.add_argument("--config", required=True,
                      help="stage config file, optionally with an argument: configs/boot.py, "
                           "configs/demo.py:flare")
  parser.add_argument("--workdir", required=True,
                      help="run directory: checkpoints, metrics, config.json")
  host_flags.add(parser)
  args, overrides = parser.parse_known_args(argv)
  try:
    config = parse_config(args.config, overrides)
  except ValueError as e:
    parser.error(str(e))
  try:
    host_flags.start(args)  # A host that never comes is an expected error, too.
    final = train_lib.train(config, args.workdir)
  except EXPECTED_ERRORS as e:
    print(f"af-jax train: error: {e}", file=sys.stderr)
    return 1
  print(f"done: {args.workdir} " + " ".join(f"{k}={v:.4g}" for k, v in sorted(final.items())))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
