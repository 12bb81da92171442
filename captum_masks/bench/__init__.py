"""The bench: everything that evaluates or demonstrates the library, behind the ``bench`` extra.

``zoo`` (EfficientNet-Lite0, sample photos, pasted-object composites), ``synthetic`` (the
ground-truth suite and its reference models), ``benchmark`` (the ``benchmark`` and
``class-masking`` commands), ``speed`` (the ``speed`` command), ``demo`` and ``cli`` (the
command line behind ``python -m captum_masks``). The library never imports this package.
"""
