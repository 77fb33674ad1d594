"""A user's own image folders laid out like MVTec AD, registered with TFDS as `folder`.

Any category name works (the name of its folder in `--manual_dir`); see
`data_builders.folder.builder` for the layout, the naming rules and the error cases.
"""

from af_jax.data_builders.folder.builder import check_category
from af_jax.data_builders.folder.builder import config_for
from af_jax.data_builders.folder.builder import Folder
from af_jax.data_builders.folder.builder import parse_config_name
