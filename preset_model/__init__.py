"""preset_model: the DAFx 2021 spectrogram VAE + latent flow + preset regression, on dexed_data datasets."""

__version__ = "0.1.0"
