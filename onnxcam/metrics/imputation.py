"""Noisy linear imputation (Rong et al. 2022, ROAD): removed pixels filled from their neighbours."""
from __future__ import annotations

import numpy as np

from onnxcam.errors import OnnxcamError

# (row offset, column offset, weight): edge neighbours 1/6, corner neighbours 1/12 (sum 1)
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
              (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))


def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray,
                            noise: np.ndarray | float = 0.0) -> np.ndarray:
    """``image`` [C, H, W] with the ``removed`` pixels (bool [H, W]) replaced: each becomes the
    weighted mean of its neighbours inside the image (edge neighbours 1/6, corner neighbours
    1/12, renormalized at the border), removed neighbours included, so all removed pixels are
    solved together as one sparse linear system; then ``noise`` (an array like ``image`` or a
    number) is added to them. Needs scipy."""
    try:
        from scipy.sparse import csc_matrix
        from scipy.sparse.linalg import splu
    except ImportError:
        raise OnnxcamError("metric road: needs scipy: pip install 'onnxcam[eval]'") from None
    channels, height, width = image.shape
    flat_removed = np.asarray(removed, bool).ravel()
    unknown = np.flatnonzero(flat_removed)
    out = image.reshape(channels, -1).astype(np.float64)
    if unknown.size == 0:
        return image.copy()
    if unknown.size == flat_removed.size:
        raise OnnxcamError("imputation: every pixel is removed; nothing to impute from")
    variable = np.full(flat_removed.size, -1)
    variable[unknown] = np.arange(unknown.size)
    ys, xs = np.divmod(unknown, width)
    rows, cols, weights = [], [], []
    diagonal = np.zeros(unknown.size)
    known_sum = np.zeros((unknown.size, channels))
    for dy, dx, weight in NEIGHBOURS:
        y, x = ys + dy, xs + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        row = np.flatnonzero(inside)
        neighbour = y[inside] * width + x[inside]
        diagonal[row] += weight
        free = flat_removed[neighbour]
        rows.append(row[free])
        cols.append(variable[neighbour[free]])
        weights.append(np.full(free.sum(), -weight))
        known_sum[row[~free]] += weight * out[:, neighbour[~free]].T
    index = np.arange(unknown.size)
    system = csc_matrix((np.concatenate([*weights, diagonal]),
                         (np.concatenate([*rows, index]), np.concatenate([*cols, index]))),
                        shape=(unknown.size, unknown.size))
    solved = splu(system, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(known_sum)
    noise = np.broadcast_to(np.asarray(noise, np.float64), image.shape).reshape(channels, -1)
    out[:, unknown] = solved.T + noise[:, unknown]
    return out.reshape(image.shape).astype(image.dtype)
