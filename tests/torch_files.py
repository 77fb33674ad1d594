"""A minimal torch.save writer (no torch installed): .pth files written from scratch for tests.

The zip archive form (`archive/data.pkl`, a protocol-2 pickle emitted opcode by opcode, naming
the same globals and persistent ids as `torch.save`, and the raw little-endian storages under
`archive/data/<key>`) and the legacy form (before PyTorch 1.6): header pickles, the same kind
of object pickle with 6-field persistent ids, the storage key list, then each storage's count
and elements.
"""

import pickle
import struct
import zipfile

import numpy as np

from af_jax.models import torch_weights

def pickle_global(module: str, name: str) -> bytes:
  return b"c" + f"{module}\n{name}\n".encode()


def pickle_str(text: str) -> bytes:
  data = text.encode()
  return b"X" + struct.pack("<I", len(data)) + data


def pickle_int(value: int) -> bytes:
  return b"J" + struct.pack("<i", value)


def pickle_tuple(*items: bytes) -> bytes:
  return b"(" + b"".join(items) + b"t"


EMPTY_ORDERED_DICT = pickle_global("collections", "OrderedDict") + b")R"


def pickle_tensor(storage_key: str, numel: int, offset: int, size, stride, legacy_view=False) -> bytes:
  """A `_rebuild_tensor_v2` call; `legacy_view` adds the legacy format's 6th id field.

  `legacy_view` is False (zip format: 5 fields), None (legacy, whole storage) or a
  (view key, offset, size) triple (legacy, a view into the storage).
  """
  fields = [pickle_str("storage"), pickle_global("torch", "FloatStorage"), pickle_str(storage_key), pickle_str("cpu"),
            pickle_int(numel)]
  if legacy_view is not False:
    fields.append(b"N" if legacy_view is None else pickle_tuple(
        pickle_str(legacy_view[0]), pickle_int(legacy_view[1]), pickle_int(legacy_view[2])))
  storage = pickle_tuple(*fields) + b"Q"
  args = pickle_tuple(storage, pickle_int(offset), pickle_tuple(*map(pickle_int, size)), pickle_tuple(*map(pickle_int, stride)),
                b"\x89", EMPTY_ORDERED_DICT)
  return pickle_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def write_torch_zip(path, state: dict[str, np.ndarray], *, prefix: str = "module.",
                    fortran_keys=()) -> None:
  """Writes `{'epoch': 3, 'state_dict': OrderedDict(prefix + key -> float32 tensor)}`.

  Tensors named in `fortran_keys` are stored column-major (non-contiguous strides).
  """
  items, storages = b"", {}
  for i, (key, array) in enumerate(state.items()):
    array = np.asarray(array, np.float32)
    order = "F" if key in fortran_keys else "C"
    strides = [s // 4 for s in (np.asfortranarray(array) if order == "F" else array).strides]
    storages[str(i)] = array.ravel(order=order).tobytes()
    items += pickle_str(prefix + key) + pickle_tensor(str(i), array.size, 0, array.shape, strides)
  state_dict = EMPTY_ORDERED_DICT + b"(" + items + b"u"
  top = b"}(" + pickle_str("epoch") + pickle_int(3) + pickle_str("state_dict") + state_dict + b"u"
  write_archive(path, b"\x80\x02" + top + b".", storages)


def write_archive(path, pickled: bytes, storages: dict[str, bytes]) -> None:
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr("archive/data.pkl", pickled)
    archive.writestr("archive/byteorder", "little")
    for key, data in storages.items():
      archive.writestr(f"archive/data/{key}", data)
    archive.writestr("archive/version", "3\n")


def write_torch_legacy(path, state: dict[str, np.ndarray]) -> None:
  """Writes an OrderedDict of float32 tensors the way `torch.save` did before PyTorch 1.6."""
  items, storages = b"", {}
  for i, (key, array) in enumerate(state.items()):
    array = np.ascontiguousarray(array, np.float32)
    storages[str(i)] = array
    strides = [s // 4 for s in array.strides]
    items += pickle_str(key) + pickle_tensor(str(i), array.size, 0, array.shape, strides, legacy_view=None)
  body = b"\x80\x02" + EMPTY_ORDERED_DICT + b"(" + items + b"u."
  write_legacy(path, body, storages)


def write_legacy(path, body: bytes, storages: dict[str, np.ndarray]) -> None:
  header = b"".join(pickle.dumps(x, protocol=2) for x in (
      torch_weights.LEGACY_MAGIC_NUMBER, torch_weights.LEGACY_PROTOCOL_VERSION,
      {"protocol_version": 1001, "little_endian": True,
       "type_sizes": {"short": 2, "int": 4, "long": 4}}))
  data = b"".join(struct.pack("<q", a.size) + a.astype("<f4").tobytes()
                  for a in storages.values())
  with open(path, "wb") as f:
    f.write(header + body + pickle.dumps(list(storages), protocol=2) + data)
