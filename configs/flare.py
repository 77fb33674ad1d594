"""FlareGenerator (paper Sec. 3.3): learns from a frozen BootGenerator, 5 epochs.

  af-jax train --config configs/flare.py --config.teacher_workdir=runs/boot --workdir runs/flare
"""

from configs import common


def get_config():
  c = common.get_config("flare")
  c.num_epochs = 5
  c.model.feature_noise_std = 0.1   # Same inputs, different anomalies.
  return c
