"""Drawing and writing results: overlays, titled grids, deletion/insertion curves, the
weakly-supervised boxes of a map, and the files ``onnxcam explain`` writes. Imports the
layers below (runtime, images, methods), never the API or the commands.
"""
