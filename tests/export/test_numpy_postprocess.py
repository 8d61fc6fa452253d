"""numpy_postprocess: the rules of modeling/inference.py, in NumPy, on random outputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mask2former_dinat.export import numpy_postprocess as post
from mask2former_dinat.modeling import inference


def _outputs(queries=12, classes=6, size=(20, 28), seed=0):
    """Class logits [Q, K+1] and smooth mask logits [Q, H, W] (upsampled coarse noise, so that queries
    win regions, as trained ones do)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, queries, 3, 4, generator=g) * 6
    masks = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0]
    return torch.randn(queries, classes + 1, generator=g) * 3, masks


@pytest.mark.parametrize("size,out", [((16, 24), (64, 96)), ((5, 7), (13, 30)), ((9, 9), (4, 4))])
def test_resize_bilinear_is_torch_interpolate_without_align_corners(size, out):
    x = torch.randn(3, *size)
    want = F.interpolate(x[None], size=out, mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(post.resize_bilinear(x.numpy(), out), want, atol=2e-6)


def test_semantic_inference_matches_torch():
    cls, masks = _outputs()
    np.testing.assert_allclose(post.semantic_inference(cls.numpy(), masks.numpy()),
                               inference.semantic_inference(cls, masks).numpy(), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panoptic_inference_gives_torch_segments(seed):
    cls, masks = _outputs(seed=seed)
    settings = dict(object_mask_threshold=0.2, overlap_threshold=0.3, thing_ids=[0, 1, 2])
    seg, info = post.panoptic_inference(cls.numpy(), masks.numpy(), **settings)
    want_seg, want_info = inference.panoptic_inference(cls, masks, **settings)
    assert len(want_info) > 1 and info == want_info
    assert seg.dtype == np.int32
    np.testing.assert_array_equal(seg, want_seg.numpy())


def test_panoptic_inference_with_no_kept_query_is_all_void():
    cls, masks = _outputs()
    seg, info = post.panoptic_inference(cls.numpy(), masks.numpy(), object_mask_threshold=1.0,
                                        overlap_threshold=0.8, thing_ids=[0])
    assert info == [] and not seg.any()


@pytest.mark.parametrize("thing_ids", [None, [1, 3]])
def test_instance_inference_gives_torch_instances_in_score_order(thing_ids):
    cls, masks = _outputs()
    got = post.instance_inference(cls.numpy(), masks.numpy(), topk=10, thing_ids=thing_ids)
    want = inference.instance_inference(cls, masks, topk=10, thing_ids=thing_ids)
    order = torch.argsort(want.scores, descending=True)
    assert len(got["scores"]) == len(want) > 0
    np.testing.assert_array_equal(got["pred_classes"], want.pred_classes[order].numpy())
    np.testing.assert_allclose(got["scores"], want.scores[order].numpy(), atol=1e-6)
    np.testing.assert_array_equal(got["pred_masks"], want.pred_masks[order].numpy())
    np.testing.assert_array_equal(got["pred_boxes"], want.pred_boxes.tensor[order].numpy())


def test_masks_to_image_upsamples_to_the_padded_input_then_crops():
    masks = torch.randn(3, 16, 24)
    want = F.interpolate(masks[None], size=(64, 96), mode="bilinear", align_corners=False)[0, :, :50, :70]
    np.testing.assert_allclose(post.masks_to_image(masks.numpy(), (64, 96), (50, 70)), want.numpy(), atol=2e-6)


def test_wrong_shapes_are_refused_naming_the_layouts():
    with pytest.raises(ValueError, match=r"mask_cls \[Q, K\+1\] and mask_pred \[Q, H, W\]"):
        post.semantic_inference(np.zeros((1, 4, 3)), np.zeros((4, 2, 2)))
