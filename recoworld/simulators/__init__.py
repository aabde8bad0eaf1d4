"""Simulated users: the contract, the parametric user and its parts."""

from recoworld.simulators.base import SlateFeedback, UserSimulator
from recoworld.simulators.choice import ChoiceModel
from recoworld.simulators.instructions import InstructionWriter
from recoworld.simulators.parametric import BatchFeedback, ParametricUser, ParametricUsers
from recoworld.simulators.return_gap import ReturnGapModel

__all__ = [
    "BatchFeedback",
    "ChoiceModel",
    "InstructionWriter",
    "ParametricUser",
    "ParametricUsers",
    "ReturnGapModel",
    "SlateFeedback",
    "UserSimulator",
]
