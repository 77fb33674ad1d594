"""Hosts that never come: a missing coordinator or peer is one error line within
`--initialization_timeout`, naming the address and the process ids; never a hang, never JAX's
C++ abort (`af_jax.commands.rendezvous`).

Each process is a real `af-jax` subprocess on real images; nothing is listening on the port
unless a test starts a process 0.
"""

import socket
import subprocess
import sys
import time

from conftest import subprocess_env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(verb_args, port: int, process_id: int, num_processes: int, timeout_s: int):
  return subprocess.Popen(
      [sys.executable, "-m", "af_jax.cli", *map(str, verb_args),
       "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", str(num_processes),
       "--process_id", str(process_id), "--initialization_timeout", str(timeout_s)],
      env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_line(proc, limit_s: float = 60) -> str:
  """The process's one error line, once it exited with status 1."""
  out, err = proc.communicate(timeout=limit_s)
  assert proc.returncode == 1, (proc.returncode, err[-3000:])
  assert "Traceback" not in err and "Check failure" not in err, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1 and not out.strip(), err
  return lines[0]


def test_localize_as_process_1_without_process_0_fails_in_time_naming_the_address(
    bottle_dir, tmp_path):
  port, out = _free_port(), tmp_path / "out"
  start = time.monotonic()
  proc = _start(["localize", "--workdir", tmp_path / "run", "--images", bottle_dir / "test",
                 "--out", out], port, 1, 2, timeout_s=5)
  line = _one_line(proc)
  assert time.monotonic() - start < 30
  assert line.startswith("af-jax localize: error: process 1 of 2: no coordinator")
  assert f"127.0.0.1:{port}" in line and "--initialization_timeout" in line
  assert not out.exists() and not list(tmp_path.iterdir())


def test_a_peer_that_never_comes_is_named_by_every_process_that_came(tmp_path):
  """`train` as processes 0 and 1 of 3: both stop, naming process 2 and the address."""
  port = _free_port()
  procs = [_start(["train", "--config", "configs/boot.py", "--workdir", tmp_path / "run"],
                  port, i, 3, timeout_s=3) for i in range(2)]
  lines = [_one_line(proc) for proc in procs]
  assert lines[0].startswith("af-jax train: error: process 0 of 3 at 127.0.0.1:")
  assert lines[1].startswith("af-jax train: error: process 1 of 3: the coordinator")
  for line in lines:
    assert f"127.0.0.1:{port}" in line and "process(es) 2 did not come within 3 s" in line
  assert not list(tmp_path.iterdir())
