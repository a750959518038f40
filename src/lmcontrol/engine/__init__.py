"""The serving engine: one model, a batch of requests that each carry their own controls and settings.

``Engine(lm).submit(Request(...)) -> RequestHandle``; see ``engine.py`` for the step, ``step.py`` for the
per-row forward, ``runner.py`` for the model forward over the slot cache (``cache.py``).
"""

from lmcontrol.engine.engine import Engine
from lmcontrol.engine.params import SamplingParams
from lmcontrol.engine.request import QueueFull, Request, RequestHandle, RequestOutput, TokenEvent

__all__ = ["Engine", "QueueFull", "Request", "RequestHandle", "RequestOutput", "SamplingParams", "TokenEvent"]
