"""Class activation maps: which regions of a feature map drive a class score.

Each method weighs the K channels of a convolutional feature map `A` (default: the
backbone's last one) and sums them: `ReLU(sum_k w_k A_k)`. They differ in the weights:

- Grad-CAM (Selvaraju et al. 2017): the spatial mean of the class logit's gradient.
- Grad-CAM++ (Chattopadhay et al. 2018): a pixel-weighted mean of the positive gradient,
  so several instances of a class all show up.
- Score-CAM (Wang et al. 2020): gradient-free; the class probability when the image is
  masked by each (upsampled, [0, 1]-scaled) channel.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from transferkit.errors import ConfigError
from transferkit.explain.base import Explainer


class GradCAM(Explainer):
    """Grad-CAM: channels weighted by their mean gradient; one forward + backward pass.

    Args:
        model: The classifier (see `Explainer`).
        layer_name: Feature-map layer (default: the last convolutional one).
        batch_size: Images per forward/backward pass.
    """

    name = "gradcam"

    def _explain(self, images: np.ndarray, classes: np.ndarray) -> tf.Tensor:
        activations, grads, _, _ = self._gradients(images, classes)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))


class GradCAMPlusPlus(Explainer):
    """Grad-CAM++: channels weighted by a per-pixel weighted sum of positive gradients.

    Uses the closed form with an exponential score (the second and third derivatives
    become powers of the first), as in the paper and pytorch-grad-cam.

    Args:
        model: The classifier (see `Explainer`).
        layer_name: Feature-map layer (default: the last convolutional one).
        batch_size: Images per forward/backward pass.
    """

    name = "gradcam++"

    def _explain(self, images: np.ndarray, classes: np.ndarray) -> tf.Tensor:
        activations, grads, _, _ = self._gradients(images, classes)
        grads_2 = tf.square(grads)
        grads_3 = grads_2 * grads
        sum_activations = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
        alpha = grads_2 / (2.0 * grads_2 + sum_activations * grads_3 + 1e-7)
        alpha = tf.where(grads != 0, alpha, tf.zeros_like(alpha))
        weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))


class ScoreCAM(Explainer):
    """Score-CAM: channels weighted by the class probability of the image they mask.

    Only the `top_k` channels with the largest mean activation are used (every channel
    costs one forward pass; weak channels add little); the masked copies of an image run
    through the model `batch_size` at a time. The choice does not depend on the class,
    so with a small `top_k` the maps of two classes are made of the same channels. The
    weight is the masked image's class probability, as in the authors' implementation
    (masked-out pixels become black).

    Args:
        model: The classifier (see `Explainer`).
        layer_name: Feature-map layer (default: the last convolutional one).
        batch_size: Masked images per forward pass.
        top_k: Channels used per image (all of them when the layer has fewer).

    Raises:
        ConfigError: `top_k` < 1.
    """

    name = "scorecam"

    def __init__(self, model: keras.Model, layer_name: str | None = None,
                 batch_size: int = 32, top_k: int = 64):
        super().__init__(model, layer_name, batch_size)
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        self.top_k = int(top_k)

    def _explain(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        # The shared traced graph (see make_explainers): its backward pass is wasted
        # here, but costs about two of the top_k masked forward passes; a second graph
        # would cost a trace.
        activations, _, classes, _ = self._gradients(images, classes)
        activations = activations.numpy()
        k = min(self.top_k, activations.shape[-1])
        maps = []
        for image, acts, cls in zip(images, activations, classes):
            channels = np.argsort(-acts.mean(axis=(0, 1)), kind="stable")[:k]
            selected = acts[..., channels]  # [h, w, k]
            masks = tf.image.resize(selected, image.shape[:2], method="bilinear").numpy()
            low = masks.min(axis=(0, 1), keepdims=True)
            span = masks.max(axis=(0, 1), keepdims=True) - low
            masks = np.where(span > 0, (masks - low) / np.maximum(span, 1e-12), 0.0)
            masked = image[None] * np.moveaxis(masks, -1, 0)[..., None]  # [k, H, W, 3]
            scores = self._probabilities(masked.astype(np.float32))[:, cls]
            maps.append(np.maximum((selected * scores).sum(axis=-1), 0.0))
        return np.stack(maps)
