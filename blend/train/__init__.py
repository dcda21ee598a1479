"""Training loops, kept apart from inference: CLIP, the unCLIP image decoder and the text inverter."""
