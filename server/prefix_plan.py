"""Which query rows of a vLLM batch attend PaliGemma's prefix two-way, and which attend causally.

Pure numpy, no vLLM: the CPU attention backend (`server.prefix_attention`) turns a plan into
two calls of vLLM's own kernel, and the tests check plans row by row.

PaliGemma's mask, as transformers builds it: query q and key k of one sequence with prompt
length P see each other when (k <= q and k > q - window) or (q < P and k < P). vLLM's prompt
is exactly the prefix (image, `<bos>`, prompt, `\\n`), so P is the prompt length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Int64s = npt.NDArray[np.int64]
Int32s = npt.NDArray[np.int32]


class PrefixSplitError(RuntimeError):
    """A prefill step holds only part of a prefix: its rows cannot be exact (chunked prefill must be off)."""


@dataclass(frozen=True)
class Pass:
    """One kernel call over some rows of the batch, as pseudo-requests of consecutive rows.

    `rows[j]` is the batch row of the call's j-th query row; pseudo-request r holds the call's
    rows `query_start_loc[r]:query_start_loc[r + 1]`, which end at position `seq_lens[r] - 1`
    of batch request `requests[r]` when causal, and see keys `[0, seq_lens[r])` when not.
    """

    rows: Int64s
    query_start_loc: Int32s
    seq_lens: Int32s
    requests: Int64s

    @property
    def num_rows(self) -> int:
        return int(self.rows.size)

    def covers(self, num_tokens: int) -> bool:
        """True when the call's rows are the whole batch in order (no gather or scatter needed)."""
        return self.num_rows == num_tokens and bool(np.array_equal(self.rows, np.arange(num_tokens)))


@dataclass(frozen=True)
class PrefixPlan:
    """Prefix rows (two-way over `[0, P)`, no window) and answer rows (causal, the layer's window)."""

    prefix: Pass
    answer: Pass | None


def _pass(segments: list[tuple[int, int, int, int]]) -> Pass:
    # segment: (request, first batch row, number of rows, seq_len)
    rows = np.concatenate([np.arange(start, start + n, dtype=np.int64) for _, start, n, _ in segments])
    lengths = np.array([n for _, _, n, _ in segments], dtype=np.int32)
    query_start_loc = np.zeros(len(segments) + 1, dtype=np.int32)
    np.cumsum(lengths, out=query_start_loc[1:])
    return Pass(
        rows=rows,
        query_start_loc=query_start_loc,
        seq_lens=np.array([s for *_, s in segments], dtype=np.int32),
        requests=np.array([r for r, *_ in segments], dtype=np.int64),
    )


def prefix_plan(query_start_loc: Int32s, seq_lens: Int32s, prompt_lens: Int64s | Int32s) -> PrefixPlan | None:
    """The plan for one batch, or None when no row belongs to a prefix (decode-only steps).

    Request i computes positions `[seq_lens[i] - q_i, seq_lens[i])`, q_i its number of rows. A
    fresh prefill, the uncached tail after a prefix-cache hit and the recompute of a preempted
    request (prompt and answer so far) all work; a step that stops inside a prefix raises
    PrefixSplitError. A prompt length of 0 (unknown) leaves the request causal.
    """
    prefix: list[tuple[int, int, int, int]] = []
    answer: list[tuple[int, int, int, int]] = []
    for i in range(seq_lens.size):
        first_row, num_rows = int(query_start_loc[i]), int(query_start_loc[i + 1] - query_start_loc[i])
        if num_rows <= 0:
            continue
        end, prompt = int(seq_lens[i]), int(prompt_lens[i])
        start = end - num_rows
        if start < prompt:
            if end < prompt:
                raise PrefixSplitError(
                    f"request row {i} computes positions {start}..{end - 1} of a {prompt}-token PaliGemma prefix: "
                    "a prefix split across steps cannot attend two-way exactly (is chunked prefill on?)"
                )
            prefix.append((i, first_row, prompt - start, prompt))
        answer_start = max(start, prompt)
        if answer_start < end:
            answer.append((i, first_row + answer_start - start, end - answer_start, end))
    if not prefix:
        return None
    return PrefixPlan(_pass(prefix), _pass(answer) if answer else None)
