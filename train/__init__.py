"""Training side: data, models, the training run, evaluation. May import TensorFlow/Keras."""
