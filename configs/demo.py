"""Tiny CPU-sized stages on the built-in synthetic data set (what `af-jax demo` trains).

  af-jax prepare --dataset synthetic --data_dir data \
      --categories circuit-64px-train64,gear-64px-train64,fabric-64px-train64
  af-jax train --config configs/demo.py:boot --workdir runs/demo_boot
  af-jax train --config configs/demo.py:flare --config.teacher_workdir=runs/demo_boot \
      --workdir runs/demo_flare
  af-jax train --config configs/demo.py:blaze --config.teacher_workdir=runs/demo_flare \
      --workdir runs/demo_blaze

Same code and losses as the paper configs, scaled to a few CPU minutes. What differs, and why:

* 64 px images and a narrow network (ngf 16) with 2 downsamplings, so the bottleneck keeps the
  paper's 1/16 of the image side (16 x 16, as 256 px with 4 downsamplings).
* Batch 2: on a CPU the cost per image hardly depends on the batch size, and in a budget of a
  few thousand images, 4x more (smaller) updates train these GANs much further than batch 8
  (pix2pix and pix2pixHD themselves train at batch 1).
* An L1 image term stands in for the VGG loss (no VGG weights can be downloaded at run time).
* Blaze learns the measured change inside the edited region (`blaze.heatmap_target =
  'change_in_region'`) instead of Flare's own heatmap: after the demo's 800 Flare steps that
  heatmap still covers the whole object, and a detector trained on it marks the object, not
  the defect. A change of 0.1 (in [-1, 1]) already counts fully (`blaze.change_scale`; 0.2
  left faint real defects, a bottle's contamination, with heatmaps below normal noise).
* Flare learns Boot's rendering inside the edited region only (`flare.target =
  'boot_in_region'`): the demo's Boot re-renders the whole object with small errors, and a
  Flare that must copy them changes every pixel.
* Stochastic edit regions are centred on the edges the edit changes
  (`manipulate.centre_on_edges_prob = 0.8`): small images have sparse edge maps (a 64 px bottle
  is one circle), so uniformly placed regions mostly edit nothing.
* Stochastic edit regions stay on the object (`manipulate.on_object`): the prepared region
  map's labels mark it in training, and generation first clears the labels of the backdrop
  (af_jax/ops/foreground.py). Without it, 19% (bottle) and 48% (metal_plate) of the generated
  mask area fell on the empty backdrop; with it none does.
* Blaze learns from Flare's anomalies only, as in the paper (`blaze.synthetic_fraction = 0`).
  Half pasted anomalies (af_jax/ops/synthetic_anomalies.py) helped while Blaze saw the image
  and the per-pixel reference only; with the patch distances they cost 1-9 AUPRO points on
  real parts (README, "Your own data": the ablation).
* Blaze sees each category's normal reference (`blaze.reference`, af_jax/evidence/reference.py): the
  per-pixel deviation from the mean of that category's normal images, as extra input channels
  that also reach the heatmap's last layer. A few thousand steps cannot teach a small network
  what a normal bottle looks like at every pixel; the reference holds it, and the network
  learns from its anomalies how far to trust it.
* Blaze also sees evidence that needs no alignment (`blaze.patch_guide`,
  af_jax/evidence/patch_memory.py): the distance of each pixel's 7x7 patch to the nearest of 8192
  normal patches of its category (its own image left out in training), so it can localize
  on rotated and shifted parts, where the per-pixel reference misleads it. Searched at every
  other pixel and row (`blaze.patch_stride = 2`): every pixel made Blaze's step 2.5x slower
  (568 s instead of about 230 s for the stage on 2 cores).
* The image score looks at the object (`blaze.score_on_object`, af_jax/ops/foreground.py):
  the backdrop's shading cannot outrank a defect on the part.
* The detector keeps its evidence (`blaze.evidence_trust`, af_jax/evidence/trust.py): its
  heatmap is the network's heatmap, the patch distances and the per-pixel reference, each in
  standard deviations of the category's normal images, weighted and blurred as fitted per
  category from anomalies made from that category's normal images (Flare's and pasted ones,
  scored leave-one-out). The network alone threw its evidence away on parts it was not tuned
  to (10 px-AUROC points below its own patch input on a rotated, thin part); a fixed blur of 4
  px erased thin defects there.
* Flare is shown the region it edits (`flare.region_input`) and its heatmap is trained by its
  own cross-entropy term alone (`loss.heatmap_kind = 'bce'`, `loss.image_terms_train_heatmap =
  False`, Flare only): with the paper's L2 term, shared with the image terms, the demo's Flare
  heatmap settled near 0.5 inside its regions, so its masks never formed; with these, and the
  region also reaching the heatmap's last layer (as every guide input does), they match the
  edited region. Generation then keeps the change inside the region (`flare.bound_to_region`).

What each choice changed, measured on real images: README, "Your own data in one command".
"""

from af_jax.configs import common
from af_jax.configs import mix82

STEPS = dict(boot=1600, flare=800, blaze=1600)
# The synthetic data the demo trains on: what `data_builders.synthetic.build(**DATA)` makes.
DATA = dict(size=64, num_train=64)


def synthetic_categories(**data_options) -> list[str]:
  """Config names of the synthetic categories built with `data_options` (e.g. 'gear-64px')."""
  from af_jax.data_builders import synthetic  # pylint: disable=g-import-not-at-top
  return [synthetic.config_for(c, **data_options).name for c in synthetic.render.CATEGORIES]


def get_config(stage: str = "boot"):
  c = common.get_config(stage)
  c.data = mix82.get_data_config()
  c.data.sources = mix82.sources_for("synthetic", synthetic_categories(**DATA))
  c.data.image_size = DATA["size"]
  c.data.data_dir = "data"
  c.data.num_workers = 0
  c.batch_size = 2
  c.num_steps = STEPS[stage]
  c.model.ngf = 16
  c.model.n_downsampling = 2
  c.model.n_blocks = 3
  c.model.ndf = 16
  c.loss.l1 = 10.0
  c.blaze.heatmap_target = "change_in_region"
  c.blaze.change_scale = 0.1
  c.flare.target = "boot_in_region"
  c.manipulate.centre_on_edges_prob = 0.8
  c.manipulate.on_object = True
  c.blaze.reference = True
  c.blaze.patch_guide = True
  c.blaze.patch_stride = 2
  c.blaze.score_on_object = True
  c.blaze.evidence_trust = True
  c.flare.region_input = True
  c.flare.bound_to_region = True
  if stage == "flare":
    c.loss.image_terms_train_heatmap = False
    c.loss.heatmap_kind = "bce"
  c.optim.constant_fraction = 0.5
  c.checkpoint_every_steps = 400
  c.log_every_steps = 100
  c.image_every_steps = 0         # The demo's report shows the images; saves a compile per stage.
  c.progress_every_steps = 50
  return c
