"""PNG encoding of RGB(A) and single-channel uint8 arrays (OpenCV stores BGR)."""

import cv2
import numpy as np


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of uint8 [H, W, 3] RGB, [H, W, 4] RGBA, [H, W, 1] or [H, W] gray."""
  if image.ndim == 3 and image.shape[-1] == 3:
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  elif image.ndim == 3 and image.shape[-1] == 4:
    image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
  ok, encoded = cv2.imencode(".png", image)
  if not ok:
    raise ValueError(f"cannot PNG-encode an array of shape {image.shape} and dtype {image.dtype}")
  return encoded.tobytes()
