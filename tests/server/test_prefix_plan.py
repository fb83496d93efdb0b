"""Which rows of a vLLM batch attend the prefix two-way (server/prefix_plan.py; pure, no vLLM)."""

from __future__ import annotations

import numpy as np
import pytest

from server.prefix_plan import PrefixSplitError, prefix_plan


def plan_of(requests: list[tuple[int, int, int]]) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """requests: (rows this step, seq_len after it, prompt length) -> the prefix pass, flattened."""
    lengths = np.array([q for q, _, _ in requests], dtype=np.int32)
    query_start_loc = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    seq_lens = np.array([s for _, s, _ in requests], dtype=np.int32)
    prompts = np.array([p for _, _, p in requests], dtype=np.int64)
    plan = prefix_plan(query_start_loc, seq_lens, prompts)
    if plan is None:
        return None
    return (
        plan.prefix.rows.tolist(),
        plan.prefix.query_start_loc.tolist(),
        plan.prefix.seq_lens.tolist(),
        plan.prefix.requests.tolist(),
    )


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        pytest.param([(1, 300, 260), (1, 280, 260)], None, id="decode-only-step-untouched"),
        pytest.param([(260, 260, 260)], (list(range(260)), [0, 260], [260], [0]), id="fresh-prefill"),
        pytest.param(
            [(1, 300, 260), (5, 5, 5), (1, 270, 262)],
            ([1, 2, 3, 4, 5], [0, 5], [5], [1]),
            id="prefill-between-decodes",
        ),
        pytest.param([(4, 260, 260)], ([0, 1, 2, 3], [0, 4], [260], [0]), id="cache-hit-tail-sees-the-whole-prefix"),
        pytest.param(
            [(263, 263, 260)], (list(range(260)), [0, 260], [260], [0]), id="preempted-recompute-prompt-and-answer"
        ),
        pytest.param([(3, 3, 0)], None, id="unknown-prompt-length-stays-causal"),
        pytest.param([(0, 7, 7), (7, 7, 7)], (list(range(7)), [0, 7], [7], [1]), id="request-without-rows"),
    ],
)
def test_prefix_rows(
    requests: list[tuple[int, int, int]], expected: tuple[list[int], list[int], list[int], list[int]] | None
) -> None:
    assert plan_of(requests) == expected


def test_answer_rows_are_causal_up_to_their_own_position() -> None:
    """A preempted request recomputes prompt and answer in one step: answer rows after the prefix."""
    lengths = np.array([1, 263], dtype=np.int32)
    plan = prefix_plan(np.array([0, 1, 264], dtype=np.int32), np.array([300, 263], dtype=np.int32), np.array([9, 260]))
    assert plan is not None and plan.answer is not None
    assert plan.prefix.rows.tolist() == list(range(1, 261))
    assert plan.answer.rows.tolist() == [0, 261, 262, 263]
    assert plan.answer.query_start_loc.tolist() == [0, 1, 4]
    assert plan.answer.seq_lens.tolist() == [300, 263]  # causal rows end at seq_len - 1
    assert plan.answer.requests.tolist() == [0, 1]
    assert not plan.prefix.covers(int(lengths.sum()))


def test_a_prefill_only_batch_needs_no_gather() -> None:
    plan = prefix_plan(np.array([0, 5, 12], dtype=np.int32), np.array([5, 7], dtype=np.int32), np.array([5, 7]))
    assert plan is not None and plan.answer is None and plan.prefix.covers(12)


@pytest.mark.parametrize(
    "requests",
    [
        pytest.param([(100, 100, 260)], id="first-chunk-of-a-prefix"),
        pytest.param([(100, 200, 260)], id="middle-chunk-of-a-prefix"),
    ],
)
def test_a_split_prefix_is_refused(requests: list[tuple[int, int, int]]) -> None:
    with pytest.raises(PrefixSplitError, match="chunked prefill"):
        plan_of(requests)
