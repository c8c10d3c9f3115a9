"""The synapse atlas: using a trained encoder's embeddings without retraining anything.

- :mod:`.neighbours`: exact cosine nearest-synapse search (``python -m synclr_monai neighbours``).
- :mod:`.propagate`: labels of every synapse from a few labelled ones, with a confidence; the
  accuracy-versus-labelled-fraction curve beside the baselines (``propagate``).
- :mod:`.outliers`: distance to the k-th neighbour as a score for candidate segmentation errors (``outliers``).
- :mod:`.explore`: one self-contained HTML page to browse the map of all synapses (``explore``).
- :mod:`.common`, :mod:`.gallery`: the embeddings as an :class:`~.common.Atlas`, synapse ids, cubes and pictures.

Every command reads ``embeddings.h5`` (from inference) and the dataset; bad input exits with code 2
and a message naming the file or id.
"""

from synclr_monai.atlas.common import Atlas, AtlasInputError, load_atlas, parse_synapse_id, synapse_id

__all__ = ["Atlas", "AtlasInputError", "load_atlas", "parse_synapse_id", "synapse_id"]
