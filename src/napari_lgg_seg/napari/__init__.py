"""napari layer of napari-lgg-seg: reader, writers, sample data and dock widgets.

Importing this package imports neither Qt nor TensorFlow; the widget modules import
Qt, and TensorFlow is imported only inside workers that run a model.
"""
