"""Which kept queries of one image become panoptic segments, and with which ids.

The rule shared by the PyTorch post-processing (inference.py) and the NumPy one of exported
models (export/numpy_postprocess.py). Plain Python on per-query counts and no imports, so that
it serves both and is copied out with the NumPy runner.
"""
from typing import Collection, Dict, List, Sequence, Tuple

__all__ = ["assign_segments"]


def assign_segments(
    classes: Sequence[int],
    won_area: Sequence[int],
    own_area: Sequence[int],
    labelled_area: Sequence[int],
    *,
    overlap_threshold: float,
    thing_ids: Collection[int],
) -> Tuple[List[int], List[Dict]]:
    """(segment id of each query, 0 where it is dropped; segments_info), from per-query counts:
    pixels it wins, pixels of its own mask (>= 0.5), pixels it would label (won and own).

    Queries are visited in order, so segment ids follow query order as in the original. A query
    is dropped when any count is 0 or won / own < overlap_threshold; stuff queries of a class
    already seen join that class's segment.
    """
    segment_of_query = [0] * len(classes)
    segments_info: List[Dict] = []
    thing_ids = set(int(i) for i in thing_ids)
    stuff_segment_of_class: Dict[int, int] = {}
    for k, pred_class in enumerate(classes):
        if won_area[k] == 0 or own_area[k] == 0 or labelled_area[k] == 0:
            continue
        if won_area[k] / own_area[k] < overlap_threshold:
            continue
        isthing = pred_class in thing_ids
        if not isthing and pred_class in stuff_segment_of_class:
            segment_of_query[k] = stuff_segment_of_class[pred_class]
            continue
        segment_id = len(segments_info) + 1
        if not isthing:
            stuff_segment_of_class[pred_class] = segment_id
        segment_of_query[k] = segment_id
        segments_info.append({"id": segment_id, "isthing": isthing, "category_id": pred_class})
    return segment_of_query, segments_info
