"""Heat map over image: a matplotlib colormap alpha-blended onto the photo."""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image

from transferkit.data.images import as_rgb
from transferkit.errors import ConfigError, ImageError


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45,
            colormap: str = "jet") -> np.ndarray:
    """Blends a colour-mapped heat map onto an image.

    Args:
        image: RGB `[H, W, 3]`, RGBA (alpha dropped) or grayscale `[H, W]`; uint8 or
            numbers in 0-255 (`transferkit.data.images.as_rgb`: floats all in [0, 1]
            were scaled and are refused).
        heatmap: `[h, w]` values in [0, 1] (clipped); resized (bilinear) to `H x W`
            when its size differs, e.g. a model-resolution map over the original photo.
        alpha: Weight of the heat map colour: 0 gives the image, 1 the colour alone.
        colormap: A matplotlib colormap name.

    Returns:
        uint8 RGB `[H, W, 3]`: `(1 - alpha) * image + alpha * colormap(heatmap)`.

    Raises:
        ImageError: `image` is not 0-255 pixels, or it or `heatmap` has the wrong shape.
        ConfigError: `alpha` outside [0, 1], or an unknown colormap.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ConfigError(f"unknown colormap {colormap!r}; use a matplotlib colormap name "
                          "such as jet, viridis, inferno or turbo") from None
    image = as_rgb(image)
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim != 2:
        raise ImageError(f"expected a heat map [H, W], got shape {heatmap.shape}")
    height, width = image.shape[:2]
    if heatmap.shape != (height, width):
        heatmap = np.asarray(Image.fromarray(heatmap).resize(
            (width, height), Image.Resampling.BILINEAR))
    colors = cmap(np.clip(np.nan_to_num(heatmap), 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
