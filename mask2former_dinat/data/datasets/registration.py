"""Shared machinery of the register_*.py modules: the datasets root, (re-)registration, and
load-time checks that turn a missing or incomplete dataset folder into one clear error.

Every dataset is registered with paths under a root folder: the ``root`` argument, else the
environment variable DETECTRON2_DATASETS, else ``./datasets``. Registration only records
paths; nothing is read until ``DatasetCatalog.get(name)``.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["ENV_VAR", "datasets_root", "register_dataset", "checked_loader", "require_paths"]

ENV_VAR = "DETECTRON2_DATASETS"
README = "datasets/README.md"


def datasets_root(root=None):
    """The folder holding all datasets: ``root`` if given, else $DETECTRON2_DATASETS, else "datasets"."""
    if root is not None:
        return str(root)
    return os.environ.get(ENV_VAR, "datasets")


def register_dataset(name, loader, **metadata):
    """Register ``name`` (replacing any earlier registration, e.g. detectron2's builtin one or a
    registration under another root) with a lazy ``loader`` and its metadata."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def require_paths(what, root, top, paths):
    """Raise FileNotFoundError naming the first missing path, the root and how to fix it.

    what: dataset description ("ADE20K semantic"); root: the datasets root the paths were
    built from; top: the dataset's folder under the root ("ADEChallengeData2016");
    paths: each a path, or (path, hint) where hint says how to make a generated file.
    """
    for item in paths:
        path, hint = item if isinstance(item, tuple) else (item, "")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{what}: expected {path}, which does not exist. "
                + (f"{hint}. " if hint else "")
                + f"Set {ENV_VAR} to the folder holding {top}/ (datasets were registered under "
                f"{os.path.abspath(root)!r}; {ENV_VAR}={os.environ.get(ENV_VAR, '<unset>')!r}); "
                f"see {README}."
            )


def checked_loader(what, root, top, paths, load, hint=""):
    """A DatasetCatalog function: checks ``paths`` (as in require_paths) exist, then calls
    ``load()``; assertion failures deep in a loader (detectron2's loaders assert on missing
    files) come back as one ValueError naming the dataset, with ``hint``."""

    def _load():
        require_paths(what, root, top, paths)
        try:
            return load()
        except AssertionError as e:
            raise ValueError(
                f"{what}: the files under {os.path.join(os.path.abspath(root), top)} are incomplete "
                f"or inconsistent ({e}). {hint + '. ' if hint else ''}See {README}."
            ) from e

    return _load
