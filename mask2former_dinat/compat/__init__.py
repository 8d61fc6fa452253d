"""Fixes for bugs of particular detectron2 releases, each in a file named for what it fixes and
applied only where a feature probe finds the bug."""
from .cityscapesscripts_import_path import install_if_needed as _install_cityscapesscripts_alias

_install_cityscapesscripts_alias()
