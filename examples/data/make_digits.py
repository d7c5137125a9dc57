"""Write scikit-learn's bundled handwritten digits (1797 images of 8 × 8 pixels) as examples/data/digits.npy.

Run once (scikit-learn is not a dependency of ntkdist; the .npy file is committed):

    python examples/data/make_digits.py

Each image becomes one row of 64 pixel intensities scaled to [0, 1], centred and then scaled to unit norm, so
the NTK sees directions only, as on the sphere (the kernel of unnormalised rows mixes norm and angle).
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

if __name__ == "__main__":
    images = load_digits().data / 16.0
    centred = images - images.mean(axis=0)
    rows = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    out = Path(__file__).with_name("digits.npy")
    np.save(out, rows.astype(np.float64), allow_pickle=False)
    print(f"{out}: {rows.shape[0]} × {rows.shape[1]} float64")
