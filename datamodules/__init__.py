"""LightningDataModules: each owns one data set, from files on disk to batches on the device."""
