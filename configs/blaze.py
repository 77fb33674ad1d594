"""BlazeDetector (paper Sec. 3.4): learns from a frozen FlareGenerator, 5 epochs.

  af-jax train --config configs/blaze.py --config.teacher_workdir=runs/flare --workdir runs/blaze
"""

from af_jax.configs import common


def get_config():
  return common.get_config("blaze")  # 5 epochs (the stage's default).
