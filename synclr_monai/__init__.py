"""synclr-monai: SimCLR representation learning for 3D EM synapse volumes, built on MONAI.

The package follows the pipeline: ``data`` (read) -> ``transforms`` -> ``networks`` (encode) ->
``losses``/``optimizers``/``engines``/``handlers`` (train) -> ``evaluation`` (export and reuse).
"""

__version__ = "0.1.0"
