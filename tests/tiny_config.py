"""A tiny, fast stage config on a prepared synthetic data dir (tests and subprocess scripts)."""

from af_jax.configs import common, mix82


def tiny_config(stage, data_dir, categories, *, teacher="", steps=4, batch_size=4, size=32):
  c = common.get_config(stage)
  c.data = mix82.get_data_config(data_dir=str(data_dir), image_size=size,
                                 sources=mix82.sources_for("synthetic", categories))
  c.batch_size = batch_size
  c.num_steps = steps
  c.model.ngf, c.model.n_downsampling, c.model.n_blocks, c.model.ndf = 8, 2, 1, 8
  c.loss.l1 = 10.0
  c.teacher_workdir = str(teacher)
  c.checkpoint_every_steps = 2
  c.log_every_steps = 1
  c.image_every_steps = 2
  c.progress_every_steps = 1
  return c
