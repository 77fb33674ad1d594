"""Throughput of the real jitted training step of each stage, and of generator inference.

  python benchmarks/train_step.py                       # paper config, batch 32, 256 px, bf16
  python benchmarks/train_step.py --small --batch 4 --size 64 --dtype float32   # CPU-sized

Prints, per stage: img/s, analytic FLOPs per image (af_jax.models.flops), achieved TFLOP/s,
MFU against --peak_tflops (default 790, the measured H200 bf16 figure) and peak device
memory where the backend reports it. Inputs are random uint8 batches; the Flare/Blaze
teachers are freshly initialised generators (same cost as trained ones). With
--vgg the perceptual loss runs on random VGG19 weights of the real shapes (cost only).
"""

import argparse
import resource
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from af_jax.models import build, flops
from af_jax import sharding
from af_jax import stage_registry
from af_jax.training import stage_inputs
from af_jax.training import train
from af_jax.configs import common

MAX_REGIONS = 8  # Region labels of the random batches.


def make_config(args, stage):
  c = common.get_config(stage)
  c.data.image_size = args.size
  c.batch_size = args.batch
  c.model.compute_dtype = args.dtype
  if args.small:
    c.model.ngf, c.model.n_downsampling, c.model.n_blocks, c.model.ndf = 16, 3, 3, 16
  c.loss.vgg_weights = "random" if args.vgg else ""
  # No prepared data: the facts of the random batches below.
  c.data_facts = ml_collections.ConfigDict(dict(edge_method="canny", image_size=args.size,
                                                max_regions=MAX_REGIONS, datasets=[]))
  return c


def random_batch(rng, batch, size, max_regions=MAX_REGIONS):
  return dict(image=rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
              edges=(rng.random((batch, size, size, 1)) > 0.85).astype(np.uint8) * 255,
              regions=rng.integers(0, max_regions + 1, (batch, 1, 1, 1), dtype=np.uint8)
              * np.ones((1, size, size, 1), np.uint8),
              mask=np.zeros((batch, size, size, 1), np.uint8),
              label=np.zeros((batch,), np.int32), source=np.zeros((batch,), np.int32))


def peak_memory_gib() -> str:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return f"{stats['peak_bytes_in_use'] / 2**30:.2f} GiB (device)"
  return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (host RSS)"


def teacher_for(config, mesh):
  if stage_registry.get(config.stage).teacher is None:
    return None, None
  generator = build.generator(config.model)
  params = jax.jit(build.init_generator, static_argnums=(1, 2),
                   out_shardings=sharding.replicated(mesh))(
                       jax.random.PRNGKey(1), generator, config.data.image_size)
  return stage_inputs.Teacher(generator, params), params


def vgg_params_for(config):
  if not config.loss.vgg_weights:
    return None
  from af_jax.models.vgg import VGG19Features  # pylint: disable=g-import-not-at-top
  return VGG19Features().init(jax.random.PRNGKey(2), jnp.zeros((1, 32, 32, 3)))["params"]


def time_calls(fn, steps, warmup):
  for _ in range(warmup):
    jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def bench_stage(args, stage, mesh, rng):
  config = make_config(args, stage)
  teacher, teacher_params = teacher_for(config, mesh)
  vgg_params = vgg_params_for(config)
  program = train.build_program(config, mesh, num_steps=1000, teacher=teacher)
  state = program.init(jax.random.PRNGKey(0))
  batch = jax.device_put(random_batch(rng, args.batch, args.size),
                         sharding.batch_sharding(mesh))
  box = [state]

  def step():
    box[0], metrics = program.step(box[0], batch, stage_inputs.Frozen(teacher_params), vgg_params)
    return metrics

  t0 = time.perf_counter()
  jax.block_until_ready(step())
  compile_s = time.perf_counter() - t0
  seconds = time_calls(step, args.steps, warmup=1)
  m = config.model
  per_image = flops.train_step_flops(args.size, m.ngf, m.n_downsampling, m.n_blocks, m.ndf,
                                     m.n_layers_d, m.num_d, use_vgg=args.vgg)
  if stage_registry.get(stage).teacher:  # The frozen teacher's forward pass.
    per_image += flops.generator_flops(args.size, m.ngf, m.n_downsampling, m.n_blocks)
  return dict(what=f"train {stage}", seconds=seconds, compile_s=compile_s, flops=per_image)


def bench_forward(args, mesh, rng):
  config = make_config(args, stage_registry.serving("localize").name)
  generator = build.generator(config.model)
  size = args.size
  params = jax.jit(build.init_generator, static_argnums=(1, 2),
                   out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(0), generator, size)
  batch_sharding = sharding.batch_sharding(mesh)
  edges = jax.device_put(jnp.asarray(rng.random((args.batch, size, size, 1)), jnp.float32),
                         batch_sharding)
  image = jax.device_put(jnp.asarray(rng.random((args.batch, size, size, 3)), jnp.float32),
                         batch_sharding)
  forward = jax.jit(lambda p, e, i: generator.apply(p, e, i)["output"])
  t0 = time.perf_counter()
  jax.block_until_ready(forward(params, edges, image))
  compile_s = time.perf_counter() - t0
  seconds = time_calls(lambda: forward(params, edges, image), args.steps, warmup=1)
  m = config.model
  return dict(what="generator forward", seconds=seconds, compile_s=compile_s,
              flops=flops.generator_flops(size, m.ngf, m.n_downsampling, m.n_blocks))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--stages", default=",".join([*stage_registry.STAGES, "forward"]))
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--small", action="store_true", help="a narrow CPU-sized network")
  p.add_argument("--vgg", action="store_true", help="include the VGG19 perceptual loss")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--peak_tflops", type=float, default=790.0)
  args = p.parse_args(argv)
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; batch {args.batch}, "
        f"{args.size} px, {args.dtype}, {'small' if args.small else 'paper'} network, "
        f"VGG {'on' if args.vgg else 'off'}", flush=True)
  print(f"{'what':<18} {'img/s':>9} {'ms/step':>9} {'GFLOP/img':>10} {'TFLOP/s':>8} "
        f"{'MFU':>6} {'compile s':>9}  peak memory", flush=True)
  for what in args.stages.split(","):
    r = (bench_forward(args, mesh, rng) if what == "forward"
         else bench_stage(args, what, mesh, rng))
    rate = args.batch / r["seconds"]
    tflops = rate * r["flops"] / 1e12
    print(f"{r['what']:<18} {rate:>9.1f} {r['seconds'] * 1e3:>9.1f} {r['flops'] / 1e9:>10.1f} "
          f"{tflops:>8.2f} {tflops / args.peak_tflops:>6.1%} {r['compile_s']:>9.1f}  "
          f"{peak_memory_gib()}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
