"""Camera frames as stored -> the size a policy sees."""
import numpy as np


def resize_images(frames, size):
    """uint8 frames (..., H, W, 3) -> (..., h, w, 3) with size = (h, w); unchanged when already that size."""
    h, w = size
    if frames.shape[-3:-1] == (h, w):
        return frames
    import cv2
    flat = frames.reshape(-1, *frames.shape[-3:])  # (N, H, W, 3)
    shrink = h * w < flat.shape[1] * flat.shape[2]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (w, h), interpolation=interpolation) for f in flat])  # (N, h, w, 3)
    return out.reshape(*frames.shape[:-3], h, w, 3)

