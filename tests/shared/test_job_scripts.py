"""The Lua scripts take their vocabulary from the job model's enums, checked at import."""

from __future__ import annotations

import pytest

from shared.errors import ScriptVocabularyError
from shared.jobs.model import EventType, JobStatus, ResultStatus
from shared.jobs.store import (
    _FINISH_RESULT,
    FINISH_RESULT,
    START_RESULT,
    VOCABULARY,
)
from shared.jobs.store import (
    render_script as render,
)


def test_the_scripts_spell_the_enums_values():
    for word in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.PARTIAL, EventType.FINISHED):
        assert f"'{word}'" in FINISH_RESULT
    assert f"'{ResultStatus.FAILED}'" in FINISH_RESULT
    for word in (JobStatus.QUEUED, JobStatus.RUNNING, EventType.STARTED):
        assert f"'{word}'" in START_RESULT
    assert "$" not in FINISH_RESULT + START_RESULT


def test_a_word_missing_from_the_vocabulary_is_a_real_error_not_an_assert():
    with pytest.raises(ScriptVocabularyError, match="job_partial"):
        render(_FINISH_RESULT, {k: v for k, v in VOCABULARY.items() if k != "job_partial"})


def test_a_placeholder_the_template_cannot_fill_is_refused():
    with pytest.raises(ScriptVocabularyError):
        render("return '$'")
