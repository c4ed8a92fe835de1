"""What the tests share and no test module defines: synthetic and small models, reference
implementations, photos and command-line helpers. Importable as ``support`` because
``tests`` is on pytest's ``pythonpath``; no test module imports another test module."""
