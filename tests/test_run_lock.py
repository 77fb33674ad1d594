"""One trainer per workdir: a second is refused at start; a killed one leaves no lock behind."""

import signal
import subprocess
import sys
import textwrap

import pytest

from af_jax import checkpoint
from af_jax import cli
from af_jax import run_lock
from conftest import subprocess_env

_HOLD = """
  import sys, time
  from af_jax import run_lock
  with run_lock.RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""

_CONFIG_FILE = """
from tiny_config import tiny_config

def get_config():
  return tiny_config("boot", {data_dir!r}, {names!r})
"""


def test_a_second_trainer_is_refused_and_a_killed_one_leaves_no_lock(tiny_synthetic, tmp_path,
                                                                     capsys, restore_logging):
  data_dir, names = tiny_synthetic
  workdir = tmp_path / "run"
  workdir.mkdir()
  config_file = tmp_path / "config.py"
  config_file.write_text(_CONFIG_FILE.format(data_dir=str(data_dir), names=names))
  holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLD), str(workdir)],
                            stdout=subprocess.PIPE, text=True, env=subprocess_env())
  try:
    assert holder.stdout.readline().strip() == "locked"
    code = cli.main(["train", "--config", str(config_file), "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{workdir} is in use: pid {holder.pid} on " in err and "another --workdir" in err
    assert not (workdir / checkpoint.CONFIG_FILE).exists()  # Refused before writing anything.
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The operating system released the killed holder's lock: nothing to clean up by hand.
  with run_lock.RunLock(workdir):
    with pytest.raises(run_lock.RunLockedError, match=r"is in use: pid \d+"):
      run_lock.RunLock(workdir).__enter__()  # Held, even against this very process.
  with run_lock.RunLock(workdir, process_index=1):  # Each process of a run has its own.
    with run_lock.RunLock(workdir, process_index=0):
      pass
