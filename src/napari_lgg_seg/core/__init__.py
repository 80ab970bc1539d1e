"""Qt-free core of napari-lgg-seg: reading, preprocessing, model, inference, training, metrics.

Modules that need TensorFlow (``model``, ``inference``, ``dataset``, ``training``,
``evaluation``) import it at module level and are only imported when a model runs.
"""
