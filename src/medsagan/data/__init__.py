"""Reading images, dataset sources and the in-memory training data."""
