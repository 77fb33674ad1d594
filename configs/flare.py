"""FlareGenerator (paper Sec. 3.3): learns from a frozen BootGenerator, 5 epochs.

  af-jax train --config configs/flare.py --config.teacher_workdir=runs/boot --workdir runs/flare
"""

from af_jax.configs import common


def get_config():
  return common.get_config("flare")  # 5 epochs, bottleneck noise 0.1 (the stage's defaults).
