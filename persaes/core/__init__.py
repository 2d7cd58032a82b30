"""The model and the method: backbones, the attention head, losses, training stages, KNN, scoring."""
