"""Upstream detectron2 main (seen at 02b5c4e, 2026-06) imports cityscapesscripts under a
Meta-internal name, `deeplearning.projects.cityscapesApi.cityscapesscripts`, in its Cityscapes
loaders and evaluators, so they fail with "No module named 'deeplearning'". detectron2 0.6
imports `cityscapesscripts` and needs nothing.

Where detectron2's source names that path and no such package exists, an import hook makes
every module under it the very module of the same name under `cityscapesscripts` (no second
copy: detectron2 sets options on `evalInstanceLevelSemanticLabeling.args`).
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

INTERNAL = "deeplearning.projects.cityscapesApi.cityscapesscripts"
PUBLIC = "cityscapesscripts"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        if self.target is None:  # a parent of INTERNAL: an empty package
            module = types.ModuleType(spec.name)
            module.__path__ = []
            return module
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass


class CityscapesScriptsAlias(importlib.abc.MetaPathFinder):
    """Resolves `deeplearning.projects.cityscapesApi.cityscapesscripts[.X]` to `cityscapesscripts[.X]`."""

    def find_spec(self, name, path=None, target=None):
        if name == INTERNAL or name.startswith(INTERNAL + "."):
            real = PUBLIC + name[len(INTERNAL):]
            return importlib.machinery.ModuleSpec(name, _AliasLoader(real), is_package=True)
        if INTERNAL.startswith(name + "."):
            return importlib.machinery.ModuleSpec(name, _AliasLoader(None), is_package=True)
        return None


def detectron2_uses_internal_path():
    """Feature probe: does this detectron2's Cityscapes loader import the internal name?"""
    spec = importlib.util.find_spec("detectron2.data.datasets.cityscapes")
    if spec is None or not spec.origin:
        return False
    with open(spec.origin, encoding="utf-8") as f:
        return INTERNAL in f.read()


def install_if_needed():
    """Install the alias where detectron2 needs it and no real `deeplearning` package exists."""
    if any(isinstance(f, CityscapesScriptsAlias) for f in sys.meta_path):
        return True
    if not detectron2_uses_internal_path() or importlib.util.find_spec("deeplearning") is not None:
        return False
    sys.meta_path.insert(0, CityscapesScriptsAlias())  # before PathFinder, which would load a second copy
    return True
