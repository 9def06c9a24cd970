"""torch.utils's counterparts: minivlm.utils.data (Dataset, DataLoader)."""
