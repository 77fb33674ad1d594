"""Procedural industrial inspection images with exact anomaly masks (numpy + OpenCV).

Three categories, each an object seen by a fixed inspection camera:

  circuit  a green circuit board with an IC, resistors, capacitors and an LED on
           pads joined by traces, on a light grey table.
  gear     a turned steel spur gear with a keyed bore and five bolt holes on a
           dark table; brushed-metal shading with a light-dependent highlight.
  fabric   a close-up of a plain-weave canvas filling the frame.

Normal images vary as real captures do: the object shifts, rotates and scales a
little, parts sit with a small placement tolerance, colours vary within a
tolerance, the light changes in strength and direction, and there is sensor
noise. A detector therefore has to learn the object, not one fixed template.

Anomalies are structural (the surface is damaged) or logical (a part is absent,
added or in the wrong place); `DEFECTS[category]` lists those of each category:

  circuit  scratch, stain, missing (a component), extra (a stray component),
           misplaced (a component moved off its pads to an empty spot)
  gear     scratch, crack, dent, missing (one or two teeth broken off),
           extra (an extra bolt hole)
  fabric   stain, cut, missing (a broken weft thread), extra (a foreign fibre)

Measured at 128 px, a kind covers 0.6-2.5% of the image on average (1.4% over
all kinds; the largest, a missing IC, about 6%), and never fewer than
max(4, 0.1% of the image) pixels: smaller draws are redrawn.

The mask is exact by construction: `render_anomalous` renders the same scene
twice, with and without the anomaly, under the same light and the same noise,
and the mask is the set of pixels whose value differs. For a missing part that
is the part's footprint, for a misplaced part the old and the new footprint.

Random draws are ordered so that `render_anomalous(rng, ...)` first makes
exactly the draws `render_normal(rng, ...)` makes: with two generators in the
same state, the anomalous image equals the normal one outside the mask. All
geometry is in units of the image side, so any size >= 16 works (the
synthetic builder uses 128 by default).
"""

import dataclasses

import cv2
import numpy as np

from af_jax import pixels

MIN_SIZE = 16
_SUBPIXEL_BITS = 4  # OpenCV fixed-point drawing, for anti-aliased sub-pixel shapes
_MAX_TRIES = 20


# ----------------------------------------------------------------------------
# Shapes in object coordinates, placed on the image by a pose, drawn as coverage.
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Pose:
  """Object -> image: rotate by `angle`, scale by `scale`, put the origin at `center`."""
  center: tuple[float, float]
  angle: float
  scale: float

  def to_pixels(self, points, size):
    return (_rotate(points, self.angle) * self.scale + self.center) * size - 0.5

  def to_object(self, size):
    """Object coordinates (x, y) of every pixel centre, each [size, size]."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = grid[None, :] - self.center[0], grid[:, None] - self.center[1]
    c, s = np.cos(self.angle), np.sin(self.angle)
    return (c * x + s * y) / self.scale, (-s * x + c * y) / self.scale


def _rotate(points, angle):
  c, s = np.cos(angle), np.sin(angle)
  return points @ np.array([[c, s], [-s, c]])


def _rect(cx, cy, w, h):
  return np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 + (cx, cy)


def _circle(cx, cy, r, n=48):
  t = np.linspace(0, 2 * np.pi, n, endpoint=False)
  return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], -1)


def _fixed(points):
  return np.round(np.asarray(points) * (1 << _SUBPIXEL_BITS)).astype(np.int32)


def _fill(size, polygons):
  """Anti-aliased coverage in [0, 1] of pixel-space polygons."""
  canvas = np.zeros((size, size), np.uint8)
  cv2.fillPoly(canvas, [_fixed(p) for p in polygons], 255, cv2.LINE_AA, _SUBPIXEL_BITS)
  return pixels.uint8_to_unit(canvas)


def _stroke(size, polylines, width):
  """Anti-aliased coverage of pixel-space polylines `width` pixels wide (at least 1)."""
  canvas = np.zeros((size, size), np.uint8)
  thickness = max(1, int(round(width)))
  cv2.polylines(canvas, [_fixed(p) for p in polylines], False, 255, thickness, cv2.LINE_AA,
                _SUBPIXEL_BITS)
  return pixels.uint8_to_unit(canvas)


def _paint(image, alpha, color):
  """Blends `color` over `image` in place with coverage `alpha`, touching only its bounding box."""
  x, y, w, h = cv2.boundingRect((alpha > 0).astype(np.uint8))
  box = (slice(y, y + h), slice(x, x + w))
  image[box] += alpha[box][..., None] * (np.asarray(color, np.float32) - image[box])


def _jitter_color(rng, color, tolerance):
  return np.clip(np.asarray(color) * rng.uniform(1 - tolerance, 1 + tolerance, 3), 0, 1)


# ----------------------------------------------------------------------------
# The camera: light field, white balance and sensor noise shared by both renders.
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Camera:
  light: np.ndarray   # [S, S] multiplicative illumination
  gains: np.ndarray   # [3] white balance
  noise: np.ndarray   # [S, S, 3] additive sensor noise


def _draw_camera(rng, size):
  direction = rng.uniform(0, 2 * np.pi)
  slope, brightness = rng.uniform(0, 0.12), rng.uniform(0.92, 1.08)
  vignette = rng.uniform(0.04, 0.14)
  gains = rng.uniform(0.97, 1.03, 3).astype(np.float32)
  sigma = rng.uniform(0.006, 0.016)
  noise = sigma * rng.standard_normal((size, size, 3), dtype=np.float32)
  grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
  x, y = grid[None, :], grid[:, None]
  light = brightness * (1 + slope * (np.cos(direction) * x + np.sin(direction) * y)
                        - vignette * (x * x + y * y) * 2)
  return _Camera(light.astype(np.float32), gains, noise)


def _expose(radiance, camera):
  image = radiance * camera.light[..., None] * camera.gains + camera.noise
  return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# Structural defects: damage painted onto the object's surface (`support`).
# Sizes are fractions of the image side; colours come from the category.
# ----------------------------------------------------------------------------

def _point_on(rng, support, size):
  ys, xs = np.nonzero(support > 0.99)
  k = rng.integers(len(xs))
  return np.array([xs[k], ys[k]], np.float64) + rng.uniform(-0.5, 0.5, 2)


def _walk(rng, start, length, steps, wiggle, size):
  """A polyline from `start` (pixels) of `length` (image sides), turning by N(0, wiggle)."""
  heading = rng.uniform(0, 2 * np.pi)
  points = [start]
  for _ in range(steps):
    heading += rng.normal(0, wiggle)
    points.append(points[-1] + length * size / steps * np.array([np.cos(heading), np.sin(heading)]))
  return np.array(points)


def _scratch(rng, image, support, size, color):
  """A long, thin, gently curved line that catches the light."""
  line = _walk(rng, _point_on(rng, support, size), rng.uniform(0.25, 0.45), 12, 0.06, size)
  alpha = _stroke(size, [line], max(1.0, 0.014 * size)) * support * rng.uniform(0.7, 0.9)
  _paint(image, alpha, color)


def _crack(rng, image, support, size, color):
  """A dark jagged fracture with one side branch."""
  trunk = _walk(rng, _point_on(rng, support, size), rng.uniform(0.15, 0.3), 10, 0.6, size)
  branch = _walk(rng, trunk[rng.integers(3, 8)], rng.uniform(0.05, 0.1), 4, 0.6, size)
  alpha = _stroke(size, [trunk, branch], max(1.0, 0.016 * size)) * support
  _paint(image, alpha, color)


def _cut(rng, image, support, size, color):
  """A clean, nearly straight opening through the material."""
  line = _walk(rng, _point_on(rng, support, size), rng.uniform(0.15, 0.3), 6, 0.12, size)
  alpha = _stroke(size, [line], max(1.0, 0.025 * size)) * support
  _paint(image, alpha, color)


def _blob(rng, center, radius, size):
  """An irregular filled blob: a few overlapping ellipses with a ragged edge."""
  canvas = np.zeros((size, size), np.float32)
  for _ in range(rng.integers(3, 6)):
    offset = rng.normal(0, 0.45 * radius, 2)
    axes = radius * rng.uniform(0.4, 0.9, 2)
    cv2.ellipse(canvas, _fixed(center + offset), _fixed(axes), rng.uniform(0, 180), 0, 360,
                1.0, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
  ragged = canvas * (1 + 0.6 * rng.standard_normal((size, size)).astype(np.float32))
  ragged = cv2.GaussianBlur(ragged, (0, 0), max(0.5, 0.2 * radius))
  return np.clip((ragged - 0.35) * 5, 0, 1)


def _stain(rng, image, support, size, color):
  """A semi-transparent blotch of dirt or oil."""
  radius = rng.uniform(0.06, 0.1) * size
  alpha = _blob(rng, _point_on(rng, support, size), radius, size) * support
  _paint(image, alpha * rng.uniform(0.55, 0.8), color)


def _dent(rng, image, support, size, color):
  """A shallow dent: darker inside, one rim lit and the opposite rim shadowed."""
  del color  # a dent changes shading, not colour
  cx, cy = _point_on(rng, support, size)
  radius = rng.uniform(0.06, 0.09) * size
  light = rng.uniform(0, 2 * np.pi)
  y, x = np.mgrid[:size, :size].astype(np.float32)
  dx, dy = (x - cx) / radius, (y - cy) / radius
  bowl = np.clip(1 - dx * dx - dy * dy, 0, 1)
  rim = np.cos(light) * dx + np.sin(light) * dy
  factor = 1 + (0.9 * rim - 0.3) * np.sqrt(bowl) * support
  image *= factor[..., None]


_STRUCTURAL = {"scratch": _scratch, "crack": _crack, "cut": _cut, "stain": _stain, "dent": _dent}


# ----------------------------------------------------------------------------
# Categories. Each draws a scene, paints it (radiance + the support surface) and
# edits it for its logical defects.
# ----------------------------------------------------------------------------

# Circuit parts in their own frame (x along the part, units of the image side): the
# board design under each part (pads, silkscreen outline) and the part's body as colour
# layers, bottom first; a colour is RGB or the name of one drawn per sample.
_PADS = {
    "ic": [_rect(dx, dy, 0.022, 0.04) for dx in np.linspace(-0.08, 0.08, 5)
           for dy in (-0.085, 0.085)],
    "resistor": [_rect(dx, 0, 0.028, 0.035) for dx in (-0.045, 0.045)],
    "capacitor": [_rect(dx, 0, 0.028, 0.035) for dx in (-0.03, 0.03)],
    "led": [_rect(dx, 0, 0.028, 0.035) for dx in (-0.02, 0.02)],
}
_OUTLINES = {"ic": _rect(0, 0, 0.25, 0.2), "resistor": _rect(0, 0, 0.12, 0.055),
             "capacitor": _rect(0, 0, 0.11, 0.11), "led": _rect(0, 0, 0.07, 0.07)}
_BODIES = {
    "ic": [([_rect(dx, dy, 0.014, 0.035) for dx in np.linspace(-0.08, 0.08, 5)
             for dy in (-0.083, 0.083)], (0.78, 0.78, 0.76)),           # pins
           ([_rect(0, 0, 0.2, 0.13)], (0.1, 0.1, 0.11)),               # moulded package
           ([_rect(0, -0.003, 0.19, 0.115)], (0.15, 0.15, 0.16)),
           ([_circle(-0.075, -0.035, 0.01)], (0.35, 0.35, 0.36))],     # pin-1 mark
    "resistor": [([_rect(0, 0, 0.1, 0.018)], (0.75, 0.75, 0.73)),      # leads
                 ([_rect(0, 0, 0.065, 0.032)], "resistor"),
                 ([_rect(-0.022, 0, 0.008, 0.03)], (0.55, 0.2, 0.1)),  # colour bands
                 ([_rect(-0.008, 0, 0.008, 0.03)], (0.1, 0.1, 0.1)),
                 ([_rect(0.006, 0, 0.008, 0.03)], (0.75, 0.1, 0.1))],
    "capacitor": [([_circle(0, 0, 0.047)], (0.12, 0.17, 0.45)),        # can, polarity stripe
                  ([_rect(0.03, 0, 0.018, 0.075)], (0.55, 0.6, 0.75)),
                  ([_circle(0, 0, 0.03)], (0.68, 0.7, 0.74)),          # vent cross on the lid
                  ([_rect(0, 0, 0.04, 0.004), _rect(0, 0, 0.004, 0.04)], (0.4, 0.42, 0.45))],
    "led": [([_circle(0, 0, 0.026)], (0.75, 0.08, 0.06)),
            ([_circle(-0.008, -0.008, 0.009)], (1.0, 0.75, 0.7))],     # specular highlight
}


@dataclasses.dataclass(frozen=True)
class _Part:
  kind: str
  x: float
  y: float
  angle: float = 0.0

  def place(self, shapes):
    """Shapes from the part's frame to the board's."""
    return [_rotate(shape, self.angle) + (self.x, self.y) for shape in shapes]


class _Circuit:
  """A populated circuit board: the parts can go missing, be added or be misplaced."""
  structural = {"scratch": (0.85, 0.80, 0.55), "stain": (0.30, 0.22, 0.08)}
  logical = ("missing", "extra", "misplaced")
  board = _rect(0, 0, 0.72, 0.54)
  mounting_holes = [(sx * 0.325, sy * 0.235) for sx in (-1, 1) for sy in (-1, 1)]
  parts = (_Part("ic", -0.11, -0.02), _Part("resistor", 0.12, -0.18),
           _Part("resistor", 0.12, -0.07), _Part("resistor", 0.28, 0.09, np.pi / 2),
           _Part("capacitor", 0.26, -0.13), _Part("capacitor", -0.25, 0.17),
           _Part("led", 0.07, 0.17), _Part("capacitor", 0.12, 0.06))
  free_slots = ((-0.02, 0.17), (0.2, 0.19), (-0.27, -0.17), (0.0, -0.18))
  traces = [np.array(t) for t in (
      ((-0.04, -0.07), (0.02, -0.07), (0.06, -0.18), (0.07, -0.18)),
      ((-0.04, 0.03), (0.04, 0.03), (0.07, -0.07)),
      ((0.17, -0.18), (0.26, -0.18), (0.26, -0.13)),
      ((0.17, -0.07), (0.2, -0.07), (0.28, 0.04)),
      ((0.28, 0.14), (0.28, 0.2), (0.1, 0.2), (0.07, 0.17)),
      ((-0.16, 0.07), (-0.16, 0.17), (-0.25, 0.17)),
      ((-0.06, 0.07), (-0.06, 0.12), (0.07, 0.12), (0.12, 0.06)),
      ((-0.31, -0.2), (-0.31, 0.1), (-0.2, 0.1), (-0.2, 0.07)))]

  def draw(self, rng):
    pose = _Pose(tuple(0.5 + rng.uniform(-0.025, 0.025, 2)), rng.uniform(-0.07, 0.07),
                 1.15 * rng.uniform(0.97, 1.03))
    # Parts sit on their pads with a small placement tolerance.
    placed = tuple(dataclasses.replace(p, x=p.x + rng.uniform(-0.004, 0.004),
                                       y=p.y + rng.uniform(-0.004, 0.004),
                                       angle=p.angle + rng.uniform(-0.04, 0.04))
                   for p in self.parts)
    colors = dict(table=_jitter_color(rng, (0.76, 0.78, 0.8), 0.04),
                  board=_jitter_color(rng, (0.09, 0.34, 0.16), 0.08),
                  copper=_jitter_color(rng, (0.82, 0.68, 0.38), 0.05),
                  resistor=_jitter_color(rng, (0.80, 0.70, 0.52), 0.04))
    return dict(pose=pose, parts=placed, colors=colors)

  def edit(self, rng, scene, defect):
    parts = list(scene["parts"])
    slot = np.array(self.free_slots[rng.integers(len(self.free_slots))])
    slot += rng.uniform(-0.01, 0.01, 2)
    if defect == "missing":
      parts.pop(rng.integers(len(parts)))
      return dict(scene, parts=tuple(parts))
    small = ("resistor", "capacitor", "led")
    if defect == "extra":
      part = _Part(small[rng.integers(len(small))], 0, 0, rng.uniform(0, np.pi))
    else:  # misplaced: a small part left its pads for an empty spot
      movable = [i for i, p in enumerate(parts) if p.kind in small]
      part = parts.pop(movable[rng.integers(len(movable))])
    parts.append(dataclasses.replace(part, x=slot[0], y=slot[1]))
    return dict(scene, parts=tuple(parts))

  def paint(self, scene, size):
    pose, colors = scene["pose"], scene["colors"]
    place = lambda shapes: [pose.to_pixels(shape, size) for shape in shapes]
    image = np.empty((size, size, 3), np.float32)
    image[:] = colors["table"]
    board = _fill(size, place([self.board]))
    _paint(image, board, colors["board"])
    # The board design stays when a part is missing: traces, silkscreen outlines, pads.
    _paint(image, _stroke(size, place(self.traces), 0.014 * size * pose.scale),
           colors["board"] * 1.6)
    outlines = [p.place([_OUTLINES[p.kind]])[0][[0, 1, 2, 3, 0]] for p in self.parts]
    _paint(image, 0.8 * _stroke(size, place(outlines), 0.004 * size), (0.9, 0.92, 0.88))
    pads = [pad for p in self.parts for pad in p.place(_PADS[p.kind])]
    rings = [_circle(x, y, 0.03) for x, y in self.mounting_holes]
    _paint(image, _fill(size, place(pads + rings)), colors["copper"])
    _paint(image, _fill(size, place([_circle(x, y, 0.018) for x, y in self.mounting_holes])),
           colors["table"] * 0.5)
    for p in scene["parts"]:
      for shapes, color in _BODIES[p.kind]:
        _paint(image, _fill(size, place(p.place(shapes))), colors.get(color, color))
    return image, board


class _Gear:
  """A turned steel spur gear: a tooth can break off or an extra hole be drilled."""
  structural = {"scratch": (0.96, 0.96, 0.98), "crack": (0.06, 0.06, 0.07), "dent": None}
  logical = ("missing", "extra")
  teeth, root, tip, bore, hole_ring, hole_radius, holes = 14, 0.3, 0.37, 0.07, 0.19, 0.036, 5

  def draw(self, rng):
    pose = _Pose(tuple(0.5 + rng.uniform(-0.02, 0.02, 2)), rng.uniform(-0.17, 0.17),
                 rng.uniform(0.97, 1.03))
    colors = dict(table=_jitter_color(rng, (0.17, 0.17, 0.18), 0.1),
                  steel=_jitter_color(rng, (0.66, 0.67, 0.7), 0.02) * rng.uniform(0.92, 1.08))
    return dict(pose=pose, colors=colors, light=rng.uniform(0.5, 1.1), missing_teeth=(),
                extra_hole=None)

  def edit(self, rng, scene, defect):
    if defect == "missing":  # one or two neighbouring teeth broken off
      first = rng.integers(self.teeth)
      return dict(scene, missing_teeth=(first, (first + rng.integers(2)) % self.teeth))
    between = (rng.integers(self.holes) + 0.5 + rng.uniform(-0.1, 0.1)) * 2 * np.pi / self.holes
    return dict(scene, extra_hole=between)

  def paint(self, scene, size):
    pose, colors = scene["pose"], scene["colors"]
    place = lambda shapes: [pose.to_pixels(s, size) for s in shapes]
    pitch = 2 * np.pi / self.teeth
    teeth = []
    for k in range(self.teeth):
      if k not in scene["missing_teeth"]:
        a = k * pitch + np.array([-0.27, -0.15, 0.15, 0.27]) * pitch
        r = np.array([self.root - 0.01, self.tip, self.tip, self.root - 0.01])
        teeth.append(np.stack([r * np.cos(a), r * np.sin(a)], -1))
    metal = _fill(size, place([_circle(0, 0, self.root, 96)] + teeth))
    angles = list(np.arange(self.holes) * 2 * np.pi / self.holes)
    if scene["extra_hole"] is not None:
      angles.append(scene["extra_hole"])
    holes = [_circle(self.hole_ring * np.cos(a), self.hole_ring * np.sin(a), self.hole_radius)
             for a in angles]
    holes += [_circle(0, 0, self.bore), _rect(0, -self.bore, 0.03, 0.04)]  # bore, keyway
    support = metal * (1 - _fill(size, place(holes)))

    # Turned steel: a highlight where the grooves face the light, fine turning marks,
    # a brighter machined hub and a shadowed chamfer at the root circle.
    x, y = pose.to_object(size)
    r, heading = np.hypot(x, y), np.arctan2(y, x) + pose.angle
    shade = (0.5 + 0.42 * np.abs(np.cos(heading - scene["light"])) ** 3
             + 0.04 * np.sin(2 * np.pi * 45 * r))
    shade = np.where(r < 0.12, 0.62 + 0.3 * np.abs(np.cos(heading - scene["light"])) ** 2, shade)
    shade = shade * (1 - 0.35 * np.clip(1 - np.abs(r - self.root + 0.012) / 0.012, 0, 1))
    image = np.empty((size, size, 3), np.float32)
    image[:] = colors["table"]
    image += metal[..., None] * (shade[..., None] * colors["steel"] - image)
    _paint(image, metal - support, colors["table"] * 0.6)  # holes: the table, in shadow
    return image, support


class _Fabric:
  """A plain-weave canvas: a weft thread can be missing or a foreign fibre lie on it."""
  structural = {"stain": (0.3, 0.2, 0.08), "cut": (0.04, 0.03, 0.03)}
  logical = ("missing", "extra")
  period, variations = 0.05, 64  # thread spacing (image sides); per-thread thickness cycle

  def draw(self, rng):
    pose = _Pose((0.5, 0.5), rng.uniform(-0.05, 0.05), self.period * rng.uniform(0.98, 1.02))
    return dict(pose=pose, phase=rng.uniform(0, 2, 2),
                warp=_jitter_color(rng, (0.7, 0.6, 0.43), 0.04),
                weft=_jitter_color(rng, (0.64, 0.54, 0.38), 0.04),
                warp_var=1 + 0.05 * rng.standard_normal(self.variations, np.float32),
                weft_var=1 + 0.05 * rng.standard_normal(self.variations, np.float32),
                gap=None, fibre=None)

  def edit(self, rng, scene, defect):
    if defect == "missing":  # one weft thread broken over a few crossings, near the middle
      row = int(np.floor(scene["phase"][1])) + rng.integers(-6, 6)
      start = int(np.floor(scene["phase"][0])) + rng.integers(-8, 3)
      return dict(scene, gap=(row, start, start + rng.integers(5, 12)))
    line = _walk(rng, rng.uniform(0.25, 0.75, 2), rng.uniform(0.25, 0.45), 16, 0.3, 1)
    color = ((0.12, 0.1, 0.1), (0.92, 0.92, 0.95), (0.6, 0.1, 0.08))[rng.integers(3)]
    return dict(scene, fibre=(line, color))

  def paint(self, scene, size):
    u, v = scene["pose"].to_object(size)
    image = self._weave(u + scene["phase"][0], v + scene["phase"][1], scene)
    if scene["fibre"] is not None:
      line, color = scene["fibre"]
      _paint(image, _stroke(size, [line * size - 0.5], max(1.0, 0.012 * size)), color)
    return image, np.ones((size, size), np.float32)

  def _weave(self, u, v, scene):
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - i, v - j
    profile = lambda f: np.clip(1 - ((f - 0.5) / 0.42) ** 2, 0, 1)
    warp_alpha, weft_alpha = np.clip(4 * profile(fu), 0, 1), np.clip(4 * profile(fv), 0, 1)
    warp_up = ((i + j) % 2 == 0)
    if scene["gap"] is not None:  # without the weft to ride over, the warp sinks into the gap
      row, first, last = scene["gap"]
      gap = (j == row) & (i >= first) & (i < last)
      weft_alpha, warp_up = np.where(gap, 0, weft_alpha), warp_up & ~gap
    # A thread is brightest across its crown and where it rises over the crossing thread.
    warp = (np.sqrt(profile(fu)) * (0.7 + 0.3 * np.sin(np.pi * fv))
            * scene["warp_var"][i % self.variations])
    weft = (np.sqrt(profile(fv)) * (0.7 + 0.3 * np.sin(np.pi * fu))
            * scene["weft_var"][j % self.variations])
    # The upper thread covers the lower one, which shows, in shadow, only between threads.
    top_alpha = np.where(warp_up, warp_alpha, weft_alpha)
    under_alpha = (1 - top_alpha) * np.where(warp_up, weft_alpha, warp_alpha)
    warp_weight = warp * np.where(warp_up, top_alpha, 0.6 * under_alpha)
    weft_weight = weft * np.where(warp_up, 0.6 * under_alpha, top_alpha)
    backing = 0.08 * (1 - top_alpha - under_alpha)
    return (warp_weight[..., None] * scene["warp"].astype(np.float32)
            + weft_weight[..., None] * scene["weft"].astype(np.float32) + backing[..., None])


# ----------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------

_RENDERERS = {"circuit": _Circuit(), "gear": _Gear(), "fabric": _Fabric()}
CATEGORIES = tuple(_RENDERERS)
DEFECTS = {name: tuple(r.structural) + r.logical for name, r in _RENDERERS.items()}


def _draw(rng, category, size):
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
  if category not in _RENDERERS:
    raise ValueError(f"unknown synthetic category {category!r}; expected one of {CATEGORIES}")
  if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
    raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
  renderer = _RENDERERS[category]
  scene = renderer.draw(rng)
  return renderer, scene, _draw_camera(rng, int(size))


def _paint_scene(renderer, scene, size):
  """Radiance [S, S, 3] and support [S, S], painted at twice the size and area-averaged."""
  radiance, support = renderer.paint(scene, 2 * size)
  shrink = lambda x: cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA)
  return shrink(radiance), shrink(support)


def render_normal(rng: np.random.Generator, category: str, size: int) -> np.ndarray:
  """A defect-free image of `category`: uint8 [size, size, 3] RGB."""
  renderer, scene, camera = _draw(rng, category, size)
  return _expose(_paint_scene(renderer, scene, size)[0], camera)


def render_anomalous(rng: np.random.Generator, category: str, size: int,
                     defect: str) -> tuple[np.ndarray, np.ndarray]:
  """An image of `category` carrying `defect`, and its exact mask.

  Returns (image uint8 [size, size, 3], mask bool [size, size]); the mask is
  True exactly where the image differs from `render_normal` given a generator
  in the same state. Anomalies whose visible change would cover fewer than
  max(4, 0.1% of the image) pixels are redrawn.
  """
  renderer, scene, camera = _draw(rng, category, size)
  if defect not in DEFECTS[category]:
    raise ValueError(f"unknown defect {defect!r} for synthetic category {category!r}; "
                     f"expected one of {DEFECTS[category]}")
  radiance, support = _paint_scene(renderer, scene, size)
  normal = _expose(radiance, camera)
  min_area = max(4, size * size // 1000)
  for _ in range(_MAX_TRIES):
    if defect in renderer.logical:
      damaged = _paint_scene(renderer, renderer.edit(rng, scene, defect), size)[0]
    else:
      damaged = radiance.copy()
      _STRUCTURAL[defect](rng, damaged, support, size, renderer.structural[defect])
    image = _expose(damaged, camera)
    mask = np.any(image != normal, axis=-1)
    if mask.sum() >= min_area:
      return image, mask
  raise RuntimeError(f"could not place a visible {defect!r} on {category!r} at size {size} "
                     f"in {_MAX_TRIES} tries")
