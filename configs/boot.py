"""BootGenerator (paper Sec. 3.2): 30 epochs on the 82-category mix.

  af-jax train --config configs/boot.py --workdir runs/boot
"""

from af_jax.configs import common


def get_config():
  return common.get_config("boot")
