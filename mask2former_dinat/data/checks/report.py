"""What a data check finds: problems, each naming the file and entry that has it, and per-dataset
counts; formatted as the report that --check-data prints and training refuses broken data with."""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["PROBLEM_KINDS", "Problem", "DatasetReport", "format_reports"]

# kind -> what it means (the README lists these)
PROBLEM_KINDS = {
    "bad file": "the annotation file cannot be read or lacks a required part",
    "missing image": "an image file that does not exist",
    "unreadable image": "an image file that cannot be decoded",
    "image size": "an image whose size differs from the height/width its annotation file gives",
    "duplicate image": "an image id listed twice",
    "unknown image": "an annotation of an image id the file does not list",
    "unknown category": "an annotation or segment whose category is not among the categories",
    "short polygon": "a polygon with fewer than 3 points",
    "outside image": "a box, polygon or mask that reaches outside its image",
    "empty category": "a category that no annotation, segment or label pixel uses",
    "missing label": "an image without its label PNG (or panoptic PNG)",
    "unreadable label": "a label PNG that cannot be decoded or is not one class id per pixel",
    "label size": "a label PNG whose size differs from its image",
    "class id above NUM_CLASSES": "a label value that is neither a class id (0..K-1) nor the ignore label",
    "segment without pixels": "a panoptic segment that the PNG does not contain",
    "unlisted segment": "pixels of a panoptic PNG with a segment id its segments_info does not list",
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """kind: a key of PROBLEM_KINDS; file: the file that has it; entry: which entry of that file
    (e.g. "annotation 7 (image 3)"), or ""; detail: what is wrong; image: the image the problem
    makes unusable (dropped by --skip-bad), or None when nothing can be dropped for it."""

    kind: str
    file: str
    entry: str
    detail: str
    image: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.file}{f' {self.entry}' if self.entry else ''}: {self.detail}"


@dataclasses.dataclass
class DatasetReport:
    """The check of one dataset: name, format, the file it was checked from, counts
    ("images", "annotations", "categories") and the problems found."""

    name: str
    format: str
    source: str
    counts: Dict[str, int] = dataclasses.field(default_factory=dict)
    problems: List[Problem] = dataclasses.field(default_factory=list)

    def add(self, kind, file, entry, detail, image=None):
        assert kind in PROBLEM_KINDS, kind
        self.problems.append(Problem(kind, file, entry, detail, image))

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_images(self) -> Tuple[str, ...]:
        """The images with problems, which --skip-bad leaves out."""
        return tuple(sorted({p.image for p in self.problems if p.image}))

    @property
    def droppable(self) -> bool:
        """Whether leaving out bad_images leaves no problem that matters for training (an empty
        category stays one, but training runs)."""
        return all(p.image or p.kind == "empty category" for p in self.problems)

    def text(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        head = f"{self.name} ({self.format}, {self.source}): {counts}"
        if self.ok:
            return f"{head}: no problems"
        by_kind: Dict[str, int] = {}
        for p in self.problems:
            by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
        lines = [f"{head}: {len(self.problems)} problem(s) ({', '.join(f'{n} {k}' for k, n in by_kind.items())})"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def format_reports(reports: Sequence[DatasetReport]) -> str:
    return "\n".join(r.text() for r in reports)
