"""Images on their way in: decoding with limits, naming and listing inputs, what a plain
file's input takes, and the geometry from a photo to the network input and back. Imports
``onnxcam.runtime`` (the contract) and nothing above it.
"""
