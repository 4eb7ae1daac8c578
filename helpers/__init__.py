"""Skill neurons in pre-trained Transformers: the tested helpers behind the book."""

__version__ = "0.1.0"
