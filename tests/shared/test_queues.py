"""What the producer sends: ids and names only, the primary effect first and foremost."""

from __future__ import annotations

from shared.queues import (
    PRIORITY_OTHER,
    PRIORITY_PRIMARY,
    QUEUE_CPU,
    TASK_APPLY_EFFECT,
    enqueue_effects,
)


class RecordingCelery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], str, int]] = []

    def send_task(self, name, args, queue, priority):
        self.sent.append((name, args, queue, priority))


def test_the_primary_effect_is_sent_first_at_the_highest_priority():
    celery = RecordingCelery()
    enqueue_effects(celery, "job1", ["popart", "color", "dithering"], primary="popart")
    assert celery.sent == [
        (TASK_APPLY_EFFECT, ["job1", "popart"], QUEUE_CPU, PRIORITY_PRIMARY),
        (TASK_APPLY_EFFECT, ["job1", "color"], QUEUE_CPU, PRIORITY_OTHER),
        (TASK_APPLY_EFFECT, ["job1", "dithering"], QUEUE_CPU, PRIORITY_OTHER),
    ]
    assert PRIORITY_PRIMARY < PRIORITY_OTHER, "Redis transport: lower number is served first"
