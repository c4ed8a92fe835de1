"""Real photos (scikit-image's) and the ImageNet classes they show."""
from __future__ import annotations

import cv2
import numpy as np
import skimage.data

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def side_by_side() -> np.ndarray:
    """Chelsea the cat on the left, a cup of espresso on the right, same height."""
    cat, coffee = skimage.data.chelsea(), skimage.data.coffee()
    height = cat.shape[0]
    coffee = cv2.resize(coffee, (round(coffee.shape[1] * height / coffee.shape[0]), height))
    return np.concatenate([cat, coffee], axis=1)
