"""Models and what feeds them: backbones, layers, the tf.data loader, augmentation, saved runs."""
