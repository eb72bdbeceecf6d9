"""style-pipeline: neural style transfer as an unattended hot-folder daemon."""
__version__ = "0.1.0"
