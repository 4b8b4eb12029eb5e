"""Training for vsr-upscale: data, degradations, losses, the local trainer and federated runners."""
