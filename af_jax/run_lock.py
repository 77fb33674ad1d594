"""One trainer per workdir: a second one started on it refuses at once, naming the first.

Two trainers on one workdir would overwrite each other's checkpoints and config. Training
holds `RunLock(workdir)` from start to end: an exclusive `fcntl.flock` on a lock file in the
workdir. The operating system releases a flock when the process holding it exits, however it
exits (crash, SIGKILL, power loss on a local disk), so a crashed run never leaves the workdir
locked and there is no stale lock to delete by hand. The file itself stays and is harmless;
it records the holder's host, pid and start time only for the error message.

Multi-host runs: every process locks its own file, `train.lock.process_<i>`. One shared file
would make the processes of one run refuse each other; with one file per process id, a
second run started on the workdir is refused by each of its processes on its own, none left
waiting for a process 0 that refused. On NFS, Linux maps flock to NFS byte-range locks, which
other clients see (NFSv4, or v3 with lockd).
"""

import datetime
import fcntl
import os
import pathlib
import socket


class RunLockedError(RuntimeError):
  """Another process is training in this workdir (or writing into this output folder)."""


class RunLock:
  """Holds the folder's lock for process `process_index` while in use (a context manager).

  `purpose` names what the holder does there, for the lock file's name and the error: a
  trainer's workdir ('train'), or a command's output folder ('output', see
  `af_jax.commands.output_files`), so that two commands never write one output at once.
  """

  def __init__(self, workdir, process_index: int = 0, purpose: str = "train"):
    prefix = "" if purpose == "train" else ".af_jax_"  # An output folder's lock stays hidden.
    self.path = pathlib.Path(workdir) / f"{prefix}{purpose}.lock.process_{process_index}"
    self.purpose = purpose
    self._fd = None

  def __enter__(self) -> "RunLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "another process"
      os.close(fd)
      doing, elsewhere = (("training in it", "train in another --workdir")
                          if self.purpose == "train" else
                          ("writing output into it", "write to another --out"))
      raise RunLockedError(
          f"{self.path.parent} is in use: {holder} is {doing} (lock {self.path}). Wait for it "
          f"to finish or stop it, or {elsewhere}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                  f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}\n".encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    os.close(self._fd)  # Closing the only descriptor releases the flock.
    self._fd = None
