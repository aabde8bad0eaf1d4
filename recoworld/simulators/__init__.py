"""Simulated users: the batch contract, the parametric user and its parts, and scripted users.

LLM users live in `recoworld.simulators.llm_user` (`LLMUsers`), imported where used.
"""

from recoworld.simulators.base import BatchFeedback, BatchUserSimulator, SlateFeedback
from recoworld.simulators.choice import ChoiceModel
from recoworld.simulators.instructions import InstructionWriter
from recoworld.simulators.parametric import ParametricUsers
from recoworld.simulators.return_gap import ReturnGapModel
from recoworld.simulators.scripted import Script, ScriptedUsers

__all__ = [
    "BatchFeedback",
    "BatchUserSimulator",
    "ChoiceModel",
    "InstructionWriter",
    "ParametricUsers",
    "ReturnGapModel",
    "Script",
    "ScriptedUsers",
    "SlateFeedback",
]
