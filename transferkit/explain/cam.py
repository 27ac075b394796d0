"""Class activation maps: which regions of a feature map drive a class score.

Each method weighs the K channels of a convolutional feature map `A` (default: the
backbone's last one) and sums them: `ReLU(sum_k w_k A_k)`. `CAM` does that once; the
methods differ only in the weights (`CAM.cam_weights`, as pytorch-grad-cam's
`BaseCAM.get_cam_weights`):

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
from transferkit.explain.base import Explainer, normalize, upsample


class CAM(Explainer):
    """Base of the class activation maps: one gradient pass, then `ReLU(sum_k w_k A_k)`.

    Subclasses implement `cam_weights` only.

    Args:
        model: The classifier (see `Explainer`).
        layer_name: Feature-map layer (default: the last convolutional one).
        batch_size: Images per forward/backward pass.
    """

    def _explain(self, images: np.ndarray, classes: np.ndarray) -> tf.Tensor:
        activations, grads, classes, _ = self._gradients(images, classes)
        weights = tf.cast(self.cam_weights(images, activations, grads, classes),
                          activations.dtype)
        return tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))

    def cam_weights(self, images: np.ndarray, activations: tf.Tensor, grads: tf.Tensor,
                    classes: np.ndarray) -> tf.Tensor | np.ndarray:
        """The weight of each channel, per image.

        Args:
            images: float32 `[n, H, W, 3]`.
            activations: The layer's feature maps `A`, `[n, h, w, K]`.
            grads: d class logit / d `A`, `[n, h, w, K]`.
            classes: int32 `[n]`, the explained classes (top predictions resolved).

        Returns:
            `[n, 1, 1, K]`.
        """
        raise NotImplementedError


class GradCAM(CAM):
    """Grad-CAM: channels weighted by their mean gradient; one forward + backward pass.

    Takes the arguments of `CAM`.
    """

    name = "gradcam"
    label = "Grad-CAM"

    def cam_weights(self, images: np.ndarray, activations: tf.Tensor, grads: tf.Tensor,
                    classes: np.ndarray) -> tf.Tensor:
        return tf.reduce_mean(grads, axis=(1, 2), keepdims=True)


class GradCAMPlusPlus(CAM):
    """Grad-CAM++: channels weighted by a per-pixel weighted sum of positive gradients.

    Uses the closed form with an exponential score (the second and third derivatives
    become powers of the first), as in the paper and pytorch-grad-cam. Takes the
    arguments of `CAM`.
    """

    name = "gradcam++"
    label = "Grad-CAM++"

    def cam_weights(self, images: np.ndarray, activations: tf.Tensor, grads: tf.Tensor,
                    classes: np.ndarray) -> tf.Tensor:
        grads_2 = tf.square(grads)
        grads_3 = grads_2 * grads
        sum_activations = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
        alpha = grads_2 / (2.0 * grads_2 + sum_activations * grads_3 + 1e-7)
        alpha = tf.where(grads != 0, alpha, tf.zeros_like(alpha))
        return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2), keepdims=True)


class ScoreCAM(CAM):
    """Score-CAM: channels weighted by the class probability of the image they mask.

    Only the `top_k` channels with the largest mean activation are used (every channel
    costs one forward pass; weak channels add little; the others weigh 0); the masked
    copies of an image run through the model `batch_size` at a time. The choice does not
    depend on the class, so with a small `top_k` the maps of two classes are made of the
    same channels. The weight is the masked image's class probability, as in the
    authors' implementation (masked-out pixels become black).

    Args:
        model: The classifier (see `Explainer`).
        layer_name: Feature-map layer (default: the last convolutional one).
        batch_size: Masked images per forward pass.
        top_k: Channels used per image (all of them when the layer has fewer).

    Raises:
        ConfigError: `top_k` < 1.
    """

    name = "scorecam"
    label = "Score-CAM"

    def __init__(self, model: keras.Model, layer_name: str | None = None,
                 batch_size: int = 32, top_k: int = 64):
        super().__init__(model, layer_name, batch_size)
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        self.top_k = int(top_k)

    def cam_weights(self, images: np.ndarray, activations: tf.Tensor, grads: tf.Tensor,
                    classes: np.ndarray) -> np.ndarray:
        # The gradients are unused: the pass is the shared traced graph's (see
        # make_explainers), whose backward half costs about two of the top_k masked
        # forward passes; a second, forward-only graph would cost a trace.
        activations = activations.numpy()
        k = min(self.top_k, activations.shape[-1])
        weights = np.zeros((len(activations), 1, 1, activations.shape[-1]), np.float32)
        for i, (image, acts, cls) in enumerate(zip(images, activations, classes)):
            channels = np.argsort(-acts.mean(axis=(0, 1)), kind="stable")[:k]
            # Each channel upsampled and scaled to [0, 1]: a mask [k, H, W].
            masks = normalize(upsample(np.moveaxis(acts[..., channels], -1, 0),
                                       image.shape[:2]))
            masked = image[None] * masks[..., None]  # [k, H, W, 3]
            weights[i, 0, 0, channels] = self._probabilities(masked.astype(np.float32))[:, cls]
        return weights
