"""The model's lifecycle: training, registry, activation, classification, reclassification."""
