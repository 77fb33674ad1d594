"""The files shipped in af_jax/pretrained load from any working folder (importlib.resources)."""

import subprocess
import sys
import textwrap

import numpy as np

from af_jax.metrics import generation
from af_jax.models import pidinet
from conftest import subprocess_env

# Run in another working folder; saves what it loaded to loaded.npz there.
_LOAD_ELSEWHERE = """
  import numpy as np
  from af_jax.metrics import generation
  from af_jax.models import pidinet
  kernel = pidinet.load_pidinet_params()["init_block"]["kernel"]
  np.savez("loaded.npz", pidinet_init_block=kernel, **generation.shipped_lpips_heads())
"""


def test_shipped_weights_load_from_another_working_folder(tmp_path):
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_LOAD_ELSEWHERE)], cwd=tmp_path,
                        env=subprocess_env(), capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = dict(generation.shipped_lpips_heads(),
                  pidinet_init_block=pidinet.load_pidinet_params()["init_block"]["kernel"])
  with np.load(tmp_path / "loaded.npz") as loaded:
    assert sorted(loaded.files) == sorted(expected)
    for key, value in expected.items():
      np.testing.assert_array_equal(loaded[key], value, err_msg=key)
