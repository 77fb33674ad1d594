"""The multi-host flags of `train`, `generate`, `localize` and `evaluate`: one process per host.

  af-jax VERB ... --coordinator_address host0:1234 --num_processes 2 --process_id 0   # host 0
  af-jax VERB ... --coordinator_address host0:1234 --num_processes 2 --process_id 1   # host 1
  af-jax VERB ... --distributed            # JAX finds them in the environment (TPU, SLURM)
"""

import argparse
import os
import sys


def add(parser: argparse.ArgumentParser) -> None:
  """Adds the flags (module docstring) to a verb's parser."""
  parser.add_argument("--coordinator_address", help="multi-host: host:port of process 0")
  parser.add_argument("--num_processes", type=int, help="multi-host: number of processes")
  parser.add_argument("--process_id", type=int, help="multi-host: this process's id")
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host with settings from the environment (Cloud TPU, SLURM)")


def requested(args) -> bool:
  """Whether the flags ask for a multi-host run (False for a verb without them)."""
  return any(getattr(args, flag, None) for flag in ("coordinator_address", "num_processes",
                                                    "distributed"))


def start(args) -> None:
  """Joins the other processes (`jax.distributed.initialize`) when the flags ask for it; call
  it before anything else touches JAX's devices."""
  if requested(args):
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)


def exit_after_failure(args, status: int) -> None:
  """Ends a failed process of a multi-host run at once: JAX's orderly shutdown would wait for
  the other processes, which wait for this one. They stop when JAX's coordination service
  misses its heartbeats (`jax.distributed.initialize`'s `heartbeat_timeout_seconds`)."""
  if requested(args):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access
