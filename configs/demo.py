"""Tiny CPU-sized stages on the built-in synthetic data set (what `af-jax demo` trains).

  af-jax prepare --dataset synthetic --data_dir data
  af-jax train --config configs/demo.py:boot --workdir runs/demo_boot
  af-jax train --config configs/demo.py:flare --config.teacher_workdir=runs/demo_boot \
      --workdir runs/demo_flare
  af-jax train --config configs/demo.py:blaze --config.teacher_workdir=runs/demo_flare \
      --workdir runs/demo_blaze

Same code and losses as the paper configs, with a narrow network, 64 px images, and an L1
image term standing in for the VGG loss (no VGG weights can be downloaded at run time).
"""

from configs import common
from configs import mix82

STEPS = dict(boot=300, flare=150, blaze=300)
# The synthetic data the demo trains on: what `data_builders.synthetic.build(**DATA)` makes.
DATA = dict(size=64, num_train=64)


def synthetic_categories(**data_options) -> list[str]:
  """Config names of the synthetic categories built with `data_options` (e.g. 'gear-64px')."""
  from data_builders import synthetic  # pylint: disable=g-import-not-at-top
  return [synthetic.config_for(c, **data_options).name for c in synthetic.render.CATEGORIES]


def get_config(stage: str = "boot"):
  c = common.get_config(stage)
  c.data = mix82.get_data_config()
  c.data.sources = mix82.sources_for("synthetic", synthetic_categories(**DATA))
  c.data.image_size = DATA["size"]
  c.data.data_dir = "data"
  c.data.num_workers = 0
  c.batch_size = 8
  c.num_steps = STEPS[stage]
  c.model.ngf = 16
  c.model.n_downsampling = 3
  c.model.n_blocks = 3
  c.model.ndf = 16
  c.model.feature_noise_std = 0.1 if stage == "flare" else 0.0
  c.loss.l1 = 10.0
  c.optim.constant_fraction = 0.5
  c.checkpoint_every_steps = 100
  c.log_every_steps = 25
  c.image_every_steps = 0         # The demo's report shows the images; saves a compile per stage.
  c.progress_every_steps = 10
  return c
