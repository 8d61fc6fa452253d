"""mask2former_dinat.imagenet_pretraining: the ImageNet DiNAT classification checkpoints in every layout
they come in, their kernel size, the classifier left out, the rpb tables resized only on request."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import imagenet_checkpoints as imagenet

from mask2former_dinat.imagenet_pretraining import (
    KernelSizeMismatchError,
    convert,
    interpolate_rpb,
    is_classification_state,
    kernel_size_of,
    unwrap_state_dict,
)


def test_manifest_lists_both_imagenet_22k_dinat_large_files_as_bare_state_dicts():
    assert sorted(imagenet.MANIFEST) == [imagenet.KERNEL_7, imagenet.KERNEL_11]
    for name, entry in imagenet.MANIFEST.items():
        assert entry["url"] == "https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/" + name
        assert entry["layout"].startswith("a bare state dict")
        assert len(entry["state_dict"]) == 409 and len(imagenet.backbone_names(name)) == 405


@pytest.mark.parametrize("layout", imagenet.LAYOUTS)
def test_every_layout_unwraps_to_the_classifier_state_dict(layout):
    state = imagenet.state(imagenet.KERNEL_11, device="meta")
    found, description = unwrap_state_dict(imagenet.in_layout(state, layout), "ckpt.pth")
    assert list(found) == list(state)
    wrapper, _, prefix = layout.partition("+")
    assert description.startswith("a bare state dict" if wrapper == "bare" else f"a state dict under '{wrapper}'")
    assert ("'module.' prefix" in description) == bool(prefix)
    assert is_classification_state(found)


def test_a_checkpoint_without_a_state_dict_is_refused_naming_the_file_and_its_keys():
    with pytest.raises(ValueError, match=r"ckpt\.pth is not a DiNAT checkpoint: .*'model' nor a 'state_dict'.*weights"):
        unwrap_state_dict({"weights": {"a": torch.zeros(1)}, "epoch": 3}, "ckpt.pth")
    with pytest.raises(ValueError, match=r"ckpt\.pth holds a list"):
        unwrap_state_dict([torch.zeros(1)], "ckpt.pth")


@pytest.mark.parametrize("name, kernel", [(imagenet.KERNEL_7, 7), (imagenet.KERNEL_11, 11)])
def test_kernel_size_is_read_from_the_relative_position_biases(name, kernel):
    assert kernel_size_of(imagenet.state(name, device="meta"), name) == kernel


@pytest.mark.parametrize("name", [imagenet.KERNEL_7, imagenet.KERNEL_11])
def test_conversion_keeps_the_backbone_and_leaves_out_exactly_the_classifier_and_its_final_norm(name):
    state = imagenet.state(name, device="meta")
    result = convert(state, source=name)
    assert list(result.backbone) == imagenet.backbone_names(name)
    assert all(result.backbone[k] is state[k] for k in result.backbone)
    assert result.classifier == imagenet.CLASSIFIER and result.unknown == () and result.total == 409
    assert result.interpolated == () and result.kernel_size == result.source_kernel_size


def test_kernel_7_for_kernel_11_is_refused_by_name_without_the_option():
    with pytest.raises(KernelSizeMismatchError) as err:
        convert(imagenet.state(imagenet.KERNEL_7, device="meta"), kernel_size=11, source=imagenet.KERNEL_7)
    message = str(err.value)
    assert message.startswith(f"{imagenet.KERNEL_7}: its relative position biases are for kernel size 7 ")
    assert "levels.0.blocks.0.attn.rpb [6, 13, 13] and 29 more tables" in message
    assert "but the target has kernel size 11 ([6, 21, 21])" in message
    assert "--interpolate-rpb" in message and "bicubic, align_corners=False" in message


def test_kernel_7_for_kernel_11_with_interpolation_resizes_every_table_and_nothing_else():
    state = imagenet.state(imagenet.KERNEL_7, compact=True)
    result = convert(state, kernel_size=11, interpolate=True)
    expected_11 = imagenet.shapes(imagenet.KERNEL_11)
    assert {k: list(v.shape) for k, v in result.backbone.items()} == {k: expected_11[k] for k in result.backbone}
    assert len(result.interpolated) == 30 and all(k.endswith("attn.rpb") for k in result.interpolated)
    assert (result.source_kernel_size, result.kernel_size) == (7, 11)
    for name, value in result.backbone.items():
        if name in result.interpolated:
            ref = F.interpolate(state[name][None], size=(21, 21), mode="bicubic", align_corners=False)[0]
            torch.testing.assert_close(value, ref, rtol=0, atol=0)
        else:
            assert value is state[name]


def test_interpolation_keeps_offset_zero_at_the_centre_and_a_constant_table_constant():
    rpb = torch.randn(3, 13, 13, dtype=torch.float64)
    resized = interpolate_rpb(rpb, 11)
    assert resized.shape == (3, 21, 21) and resized.dtype == torch.float64
    torch.testing.assert_close(resized[:, 10, 10], rpb[:, 6, 6])
    torch.testing.assert_close(interpolate_rpb(torch.full((2, 5, 5), 0.25), 5 + 2), torch.full((2, 13, 13), 0.25))
    torch.testing.assert_close(interpolate_rpb(rpb, 7), rpb)  # same size: unchanged


def test_numpy_output_of_bfloat16_weights_is_float32():
    state = {k: v.to(torch.bfloat16) for k, v in imagenet.state(imagenet.KERNEL_11, compact=True).items()}
    arrays = convert(state).numpy()
    assert all(a.dtype == np.float32 for a in arrays.values()) and len(arrays) == 405


@pytest.mark.parametrize("state, match", [
    ({"conv1.weight": torch.zeros(4, 3, 7, 7)}, r"x\.pth is not a DiNAT checkpoint: no backbone tensors.*conv1\.weight"),
    ({"backbone.patch_embed.proj.0.weight": torch.zeros(1)}, r"x\.pth is a detectron2 model checkpoint.*no conversion"),
    ({"patch_embed.proj.0.weight": torch.zeros(1)}, r"x\.pth is not a DiNAT checkpoint: it has no relative position biases"),
    ({"levels.0.blocks.0.attn.rpb": torch.zeros(2, 13, 12)}, r"levels\.0\.blocks\.0\.attn\.rpb has shape \[2, 13, 12\], not \[heads, 2k-1, 2k-1\]"),
    ({"levels.0.blocks.0.attn.rpb": torch.zeros(2, 13, 13), "levels.1.blocks.0.attn.rpb": torch.zeros(2, 21, 21)},
     r"different kernel sizes \(kernel 7: 1 blocks, e\.g\. levels\.0\.blocks\.0\.attn\.rpb; kernel 11: "),
])
def test_what_is_no_dinat_checkpoint_is_refused_with_the_reason(state, match):
    with pytest.raises(ValueError, match=match):
        convert(state, source="x.pth")


def test_recognition_tells_a_classifier_from_a_detectron2_backbone():
    state = imagenet.state(imagenet.KERNEL_11, device="meta")
    assert is_classification_state(state)
    d2 = {k: v for k, v in state.items() if k not in imagenet.CLASSIFIER}
    d2["norm0.weight"] = torch.empty(192, device="meta")  # a D2DiNAT's own state dict loads as it is
    assert not is_classification_state(d2)
    assert not is_classification_state({"backbone." + k: v for k, v in state.items()})
