"""imagen-tutorial: an encoder-decoder Transformer that draws Fashion-MNIST images pixel by pixel.

The reference package the course's notebooks import. Start with `ModelConfig` and `ImageTransformer`.
"""

from .attention import KVCache, MultiHeadAttention, attention
from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .config import ModelConfig, TrainConfig
from .model import ImageTransformer
from .pretrained import load_pretrained
from .text import Tokenizer

__version__ = "0.1.0"
__all__ = [
    "CheckpointError", "ImageTransformer", "KVCache", "ModelConfig", "MultiHeadAttention", "Tokenizer",
    "TrainConfig", "attention", "load_checkpoint", "load_model", "load_pretrained", "save_checkpoint",
]
