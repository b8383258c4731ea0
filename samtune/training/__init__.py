"""Training: the LightningModule, the loss, the optimiser and the training run."""
