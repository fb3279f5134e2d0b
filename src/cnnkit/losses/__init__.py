"""Loss functions that are more than one torch call.

- cnnkit.losses.classification: class weights and focal loss for imbalanced classification.
- cnnkit.losses.segmentation: per-pixel cross-entropy, Dice, focal and their weighted sums.
"""
