"""icreward: image-to-video consistency rewards and reward-guided fine-tuning of video diffusion models."""

__version__ = "0.1.0.dev0"
