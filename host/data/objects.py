"""The object catalogue of the grasping task: ids, merges, shapes and sizes.

The real sessions number objects by turntable and position: id = 10 * turntable + position.
Turntables 2-7 each hold one shape in six sizes (position 1 = smallest), so neighbouring ids on
one turntable are the same shape one size apart, i.e. a very similar grip. That is why class
order matters: relaxed accuracy counts a prediction one class away as right. Turntable 1 is a
mixed group whose objects mostly duplicate objects elsewhere; the merges are listed in
docs/method.md ("Objects"). Turntable 8 holds special objects; ids >= 85 are not grasp trials and
are never kept.
"""

from __future__ import annotations

import numpy as np

# Identical physical objects recorded under two ids (docs/method.md, "Objects").
DUPLICATE_IDS: dict[int, int] = {11: 41, 13: 34, 14: 44, 16: 25, 12: 54}
FIRST_EXCLUDED_ID = 85  # trials with obj >= 85 are dropped by the trial selection
SHAPES: dict[int, str] = {
    2: "ring", 3: "cube", 4: "sphere", 5: "cylinder", 6: "horizontal bar", 7: "vertical plate",
}
MIXED_TURNTABLE = 1
SPECIAL_TURNTABLE = 8
SIZES_PER_SHAPE = 6


def all_object_ids() -> np.ndarray:
    """Every object id a session may contain (before merging), ascending."""
    mixed = [10 * MIXED_TURNTABLE + p for p in range(1, 7)]
    shaped = [10 * t + p for t in SHAPES for p in range(1, SIZES_PER_SHAPE + 1)]
    special = [10 * SPECIAL_TURNTABLE + p for p in range(1, 5)]
    return np.array(mixed + shaped + special, dtype=np.int16)


def merge_duplicates(object_ids: np.ndarray) -> np.ndarray:
    """Map duplicate ids onto their canonical id (vectorised over any int array)."""
    merged = np.asarray(object_ids).copy()
    for duplicate, canonical in DUPLICATE_IDS.items():
        merged[merged == duplicate] = canonical
    return merged


def shape_of(object_id: int) -> str | None:
    """Shape name of an object, or None for mixed/special objects that have no shape series."""
    return SHAPES.get(int(object_id) // 10)


def size_of(object_id: int) -> int | None:
    """Size rank 1 (smallest) .. 6 of a shaped object, or None for mixed/special objects."""
    return int(object_id) % 10 if shape_of(object_id) is not None else None


def class_labels(object_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept ids in catalogue order, class index of each trial): the decoders' label map.

    Ascending ids are catalogue order, so neighbouring classes are neighbouring sizes of a shape.
    """
    classes = np.unique(object_ids)
    return classes, np.searchsorted(classes, object_ids).astype(np.uint8)
