"""mask2former-dinat: Mask2Former with a DiNAT backbone on current PyTorch.

detectron2 is not on PyPI, so it is not listed here: `make setup`
(tools/setup_env.py) installs it first, then this package. panopticapi comes from
PyPI's `panopticapi-lite`, installed by the same script with --no-deps because its
metadata asks for a Pillow newer than detectron2 0.6 accepts (its code runs on both).
"""
from setuptools import find_packages, setup

setup(
    name="mask2former-dinat",
    version="0.1.0",
    description="Mask2Former with a DiNAT backbone on current PyTorch and detectron2",
    python_requires=">=3.10",  # `X | None` annotations; the suite is run on 3.10
    packages=find_packages(include=["mask2former_dinat", "mask2former_dinat.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision",
        # cityscapesscripts 2.3.0 (the newest) calls np.in1d, which numpy 2.4 removed
        "numpy<2.4",
        "scipy",
        "opencv-python-headless>=4.5,<5",
        "pycocotools>=2.0.2",
        "cityscapesscripts>=2.2",
        "tqdm",
    ],
    extras_require={
        # natten >= 0.20 has no positional bias; it only serves bias-free calls (optional accelerator).
        "natten": ["natten>=0.21,<0.22"],
        "test": ["pytest>=7"],
        # ONNX / torch.export deployment (mask2former_dinat/export): the ONNX exporter that keeps sizes
        # symbolic is torch.onnx's dynamo one, which needs onnxscript (export/onnx_export.py says why)
        "export": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
    },
)
