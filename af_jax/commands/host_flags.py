"""The multi-host flags of `train`, `generate`, `localize` and `evaluate`: one process per host.

  af-jax VERB ... --coordinator_address host0:1234 --num_processes 2 --process_id 0   # host 0
  af-jax VERB ... --coordinator_address host0:1234 --num_processes 2 --process_id 1   # host 1
  af-jax VERB ... --distributed            # JAX finds them in the environment (TPU, SLURM)

Every process waits at most `--initialization_timeout` seconds for the others. With
`--coordinator_address` they first meet over plain TCP (`rendezvous`), so a coordinator or a
peer that never comes is one error line naming the address and the process ids, not JAX's
C++ abort; with `--distributed` the address comes from the environment and only JAX's own
timeout applies.
"""

import argparse
import os
import sys

from af_jax.commands import rendezvous

# JAX's own default (`jax.distributed.initialize`): hosts of a cluster start minutes apart.
INITIALIZATION_TIMEOUT_S = 300


def add(parser: argparse.ArgumentParser) -> None:
  """Adds the flags (module docstring) to a verb's parser."""
  parser.add_argument("--coordinator_address", help="multi-host: host:port of process 0")
  parser.add_argument("--num_processes", type=int, help="multi-host: number of processes")
  parser.add_argument("--process_id", type=int, help="multi-host: this process's id")
  parser.add_argument("--distributed", action="store_true",
                      help="multi-host with settings from the environment (Cloud TPU, SLURM)")
  parser.add_argument("--initialization_timeout", type=_seconds,
                      default=INITIALIZATION_TIMEOUT_S,
                      help="multi-host: seconds to wait for the coordinator and every other "
                           f"process before giving up (default: {INITIALIZATION_TIMEOUT_S})")


def _seconds(text: str) -> int:
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f"expected a whole number of seconds >= 1, got {text!r}")
  return int(text)


def requested(args) -> bool:
  """Whether the flags ask for a multi-host run (False for a verb without them)."""
  return any(getattr(args, flag, None) for flag in ("coordinator_address", "num_processes",
                                                    "distributed"))


def start(args) -> None:
  """Joins the other processes (`jax.distributed.initialize`) when the flags ask for it; call
  it before anything else touches JAX's devices. Raises `rendezvous.HostsMissingError` (an
  OSError) when they do not all come within `--initialization_timeout`."""
  if requested(args):
    if args.coordinator_address and args.num_processes and args.process_id is not None:
      rendezvous.meet(args.coordinator_address, args.num_processes, args.process_id,
                      args.initialization_timeout)
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                               initialization_timeout=args.initialization_timeout)


def exit_after_failure(args, status: int) -> None:
  """Ends a failed process of a multi-host run at once: JAX's orderly shutdown would wait for
  the other processes, which wait for this one. They stop when JAX's coordination service
  misses its heartbeats (`jax.distributed.initialize`'s `heartbeat_timeout_seconds`)."""
  if requested(args):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access
