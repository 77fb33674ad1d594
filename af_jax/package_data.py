"""Files shipped inside the package (`af_jax/pretrained`): PiDiNet weights, LPIPS heads.

Found through `importlib.resources`, so they load wherever af_jax is installed (a source
tree, site-packages, a zip) and whatever the working folder.
"""

import contextlib
import importlib.resources
import pathlib


def pretrained_file(name: str) -> contextlib.AbstractContextManager[pathlib.Path]:
  """`with pretrained_file('table5_pidinet.npz') as path:` a real file for the block's duration."""
  return importlib.resources.as_file(importlib.resources.files("af_jax") / "pretrained" / name)
