"""Stand-ins for the modelscope names that ChatGLM2's modeling code (copied from the modelscope package) imports.

glmops's own file: the checkpoint's remote code must load with transformers alone, as THUDM/chatglm3-6b's does.
"""

from transformers.utils import logging  # get_logger(); its loggers have warning_once


class Model:
    """modelscope's model base: nothing of it is needed to load or run a checkpoint with transformers."""

    def __init__(self, *args, **kwargs):
        pass


class TorchModel(Model):
    pass


class _Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


class _Names:
    def __getattr__(self, name):
        return name


MODELS = _Registry()
Models = Tasks = _Names()


class OutputKeys:
    RESPONSE = "response"
    HISTORY = "history"


__all__ = ["MODELS", "Model", "Models", "OutputKeys", "Tasks", "TorchModel", "logging"]
