"""Explaining a dataset on Ray (``pip install 'onnxcam[ray]'``): Ray Data actors that each hold
one :class:`~onnxcam.Explainer`, rows streamed to the driver and on to Parquet. Imports the
API and render; nothing but the command line imports it.
"""
from onnxcam.distributed.job import (
    ParquetSink,
    explain_dataset,
    ray_session,
    stream_rows,
)

__all__ = ["ParquetSink", "explain_dataset", "ray_session", "stream_rows"]
