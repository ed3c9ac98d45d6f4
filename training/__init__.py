"""Training pipeline: FER2013 preparation, architectures, training and evaluation."""
