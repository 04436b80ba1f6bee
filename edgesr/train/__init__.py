"""Training and distillation: ``train(recipe, out_dir)``; a recipe is a validated dataclass."""

from .distill import Distiller, capture_features, feature_module
from .loop import TrainingInterrupted, lr_at, train
from .recipe import TrainRecipe, load_train_recipe

__all__ = ["train", "TrainRecipe", "load_train_recipe", "Distiller", "capture_features", "feature_module",
           "TrainingInterrupted", "lr_at"]
