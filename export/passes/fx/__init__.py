"""Passes on the torch side: the decompositions the backward is traced with, the class-token
tail of a ViT, and the broadcast expands of the traced FX graph.
"""
