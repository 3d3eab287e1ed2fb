"""dexed_data: DX7 SysEx collections → clean, deduplicated catalogue → rendered HDF5 dataset."""

__version__ = "0.1.0"
