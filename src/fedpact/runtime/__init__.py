"""The training runtime: the aggregator and participant processes of a task.

It speaks to the hub only through :class:`fedpact.client.HubClient`, so the same code runs
against an embedded hub on a laptop and a deployed hub across organisations.
"""

from fedpact.runtime.aggregator import AggregationFailed, Aggregator, AggregatorResult, run_aggregator
from fedpact.runtime.participant import (
    DataParticipant,
    Participant,
    ParticipantResult,
    TaskEnded,
    TrainConfig,
    run_participant,
)
from fedpact.runtime.progress import Events, Progress

__all__ = [
    "AggregationFailed",
    "Aggregator",
    "AggregatorResult",
    "DataParticipant",
    "Events",
    "Participant",
    "ParticipantResult",
    "Progress",
    "TaskEnded",
    "TrainConfig",
    "run_aggregator",
    "run_participant",
]
