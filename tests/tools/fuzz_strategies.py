"""Hypothesis strategies for garbled model output, shared by the tests and the long fuzz run."""

from __future__ import annotations

from hypothesis import strategies as st

loc_tokens = st.integers(0, 9999).map(lambda v: f"<loc{v:04d}>")
valid_locs = st.integers(0, 1023).map(lambda v: f"<loc{v:04d}>")
seg_tokens = st.integers(0, 999).map(lambda v: f"<seg{v:03d}>")
valid_segs = st.integers(0, 127).map(lambda v: f"<seg{v:03d}>")
malformed = st.sampled_from(
    ["<loc12>", "<loc", "<seg0", "<loc00001>", "<seg12>", "<loc-001>", "<locabcd>", "<>", "<", ">"]
)
label_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
separators = st.sampled_from([" ; ", ";", " ", "  ", "\n", ""])

pieces = st.one_of(
    loc_tokens, valid_locs, valid_locs, seg_tokens, valid_segs, valid_segs, malformed, label_text, separators
)
garbled_answers = st.lists(pieces, max_size=60).map("".join)


@st.composite
def plausible_answers(draw: st.DrawFn) -> str:
    """Answers shaped like PaliGemma's, with some parts broken."""
    objects = []
    for _ in range(draw(st.integers(0, 5))):
        locs = "".join(draw(st.lists(valid_locs, min_size=0, max_size=5)))
        segs = "".join(draw(st.lists(valid_segs, min_size=0, max_size=17)))
        objects.append(f"{locs}{draw(st.sampled_from(['', ' ']))}{segs} {draw(label_text)}")
    return draw(separators).join(objects) if objects else draw(garbled_answers)


answers = st.one_of(garbled_answers, plausible_answers())
image_sizes = st.tuples(st.integers(1, 300), st.integers(1, 300))
