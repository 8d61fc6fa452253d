"""The alias that lets upstream detectron2's Cityscapes code find cityscapesscripts."""
import subprocess
import sys

import mask2former_dinat  # noqa: F401  (installs the alias where detectron2 needs it)
from mask2former_dinat.compat import cityscapesscripts_import_path as alias


def test_internal_name_resolves_to_the_same_modules_as_cityscapesscripts():
    code = (
        "import sys\n"
        "from mask2former_dinat.compat.cityscapesscripts_import_path import CityscapesScriptsAlias\n"
        "sys.meta_path.insert(0, CityscapesScriptsAlias())\n"
        "import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as public\n"
        "import deeplearning.projects.cityscapesApi.cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as internal\n"
        "from deeplearning.projects.cityscapesApi.cityscapesscripts.helpers.labels import name2label\n"
        "import cityscapesscripts.helpers.labels as labels\n"
        "assert internal is public and name2label is labels.name2label\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('deeplearning.other') is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_alias_is_installed_exactly_where_detectron2_imports_the_internal_name():
    installed = any(isinstance(f, alias.CityscapesScriptsAlias) for f in sys.meta_path)
    assert installed == alias.detectron2_uses_internal_path()
    # either way detectron2's Cityscapes evaluator finds the official scripts
    from detectron2.evaluation import CityscapesInstanceEvaluator  # noqa: F401
    if installed:
        import deeplearning.projects.cityscapesApi.cityscapesscripts.helpers.labels as labels
        import cityscapesscripts.helpers.labels as public
        assert labels is public
