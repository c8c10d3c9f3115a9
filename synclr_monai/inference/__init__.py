"""Inference: the synapses of a dataset through an exported encoder into ``embeddings.h5`` (``inference.yaml``)."""

from synclr_monai.inference.workflow import embeddings_attrs, loaded_encoder, run_inference
from synclr_monai.inference.writer import EmbeddingsWriter

__all__ = ["EmbeddingsWriter", "embeddings_attrs", "loaded_encoder", "run_inference"]
