"""newsclf: fine-tune a fake-news classifier locally or on Google Cloud."""

__version__ = "0.1.0"
