"""ftcourse: the tested companion package of a notebook course on fine-tuning Transformers."""
__version__ = "0.1.0"
