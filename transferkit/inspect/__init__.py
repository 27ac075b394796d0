"""Inside the network: the lecture's views of a convolutional network, on your model.

    transferkit inspect architecture runs/flowers     # shapes, padding, params, receptive fields
    transferkit inspect dream runs/flowers --objective logit --class tulip

Each view is one function that takes a run (or run directory, or Keras model), writes its
pictures to `out` (default `RUN/inspect/`) and returns a JSON-ready record with `view`
and `files`; the computations under them are plain functions too (`layer_table`,
`max_pool`, `feature_maps`, `top_patches`, `dream`, `invariance`, `toy_networks`, ...).

Modules: `base` (a sub-model up to layer L, checked choices, output), `architecture`,
`pooling`, `feature_maps`, `filters`, `patches`, `dream`, `invariance`, `gradients`,
`case_studies`, `embedding` (t-SNE of the CNN codes), `depth_probe` (linear
separability by depth), and `command` (the `inspect` subcommand).
"""

from transferkit.inspect.architecture import (
    architecture_view, calculator, conv_output, geometries, layer_table)
from transferkit.inspect.case_studies import case_studies, case_studies_view
from transferkit.inspect.depth_probe import (
    depth_probe, depth_probe_view, pooled_features, probe_accuracy, probe_layers)
from transferkit.inspect.dream import OBJECTIVES, dream, dream_view
from transferkit.inspect.embedding import (
    embedding, embedding_view, grid_cells, knn_accuracy, perplexity_for, tsne)
from transferkit.inspect.feature_maps import feature_maps, feature_maps_view
from transferkit.inspect.filters import effective_filters, filter_kernels, filters_view
from transferkit.inspect.gradients import gradient_norms, gradients_view, toy_networks
from transferkit.inspect.invariance import (
    invariance, invariance_view, shifted_feature_error)
from transferkit.inspect.patches import top_patches, top_patches_view
from transferkit.inspect.pooling import max_pool, pooling_view

__all__ = [
    "OBJECTIVES", "architecture_view", "calculator", "case_studies",
    "case_studies_view", "conv_output", "depth_probe", "depth_probe_view", "dream",
    "dream_view", "effective_filters", "embedding", "embedding_view", "feature_maps",
    "feature_maps_view", "filter_kernels", "filters_view", "geometries",
    "gradient_norms", "gradients_view", "grid_cells", "invariance", "invariance_view",
    "knn_accuracy", "layer_table", "max_pool", "perplexity_for", "pooled_features",
    "pooling_view", "probe_accuracy", "probe_layers", "shifted_feature_error",
    "top_patches", "top_patches_view", "toy_networks", "tsne"]
