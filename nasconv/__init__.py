"""nasconv: neural architecture search over convolution types."""
