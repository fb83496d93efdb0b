"""Every special-token spelling of the PaliGemma 2 tokenizer (Gemma 2's SentencePiece model plus
PaliGemma's additions), as data: text that contains one of these is tokenized as that token.

Where the list comes from (the tokenizer files could not be downloaded where this was written,
so it was not checked against `tokenizer.json` itself; re-check it with `transformers`:
`[t for t in tok.get_vocab() if t in SPECIAL_TOKENS]` and the `added_tokens` of
google/paligemma2-3b-mix-224):
- ids 0-3, the SentencePiece control pieces: <pad>, <eos>, <bos>, <unk>;
- Gemma 2's user-defined symbols, in order: <mask>, <2mass>, [@BOS@], <unused0>..<unused98>,
  <start_of_turn>, <end_of_turn>, runs of 1-31 newlines, runs of 2-31 "▁" (U+2581, the
  SentencePiece space), and the HTML-like tags below, as a public script reproducing
  Gemma 2's tokenizer training options lists them (`user_defined_symbols`, "same as gemma-2");
- pieces of the Gemma vocabulary known from its model card and tokenizer files, not from
  that list: [multimodal], [toxicity=0], and the image markers later Gemma tokenizers
  carry, <start_of_image>, <end_of_image>, <image_soft_token> (refused as well: harmless
  to refuse, and a checkpoint on a newer tokenizer would read them);
- PaliGemma's additions: <image> (the image placeholder of the Hugging Face processor),
  <loc0000>..<loc1023> and <seg000>..<seg127>.
"""

from __future__ import annotations

CONTROL = ("<pad>", "<eos>", "<bos>", "<unk>")
GEMMA_SYMBOLS = (
    "<mask>",
    "<2mass>",
    "[@BOS@]",
    *(f"<unused{i}>" for i in range(99)),
    "<start_of_turn>",
    "<end_of_turn>",
    *("\n" * n for n in range(1, 32)),
    *("\u2581" * n for n in range(2, 32)),
)
HTML_TAGS = (
    "<table>",
    "<caption>",
    "<thead>",
    "<tbody>",
    "<tfoot>",
    "<tr>",
    "<th>",
    "<td>",
    "</table>",
    "</caption>",
    "</thead>",
    "</tbody>",
    "</tfoot>",
    "</tr>",
    "</th>",
    "</td>",
    "<h1>",
    "<h2>",
    "<h3>",
    "<h4>",
    "<h5>",
    "<h6>",
    "<blockquote>",
    "</h1>",
    "</h2>",
    "</h3>",
    "</h4>",
    "</h5>",
    "</h6>",
    "</blockquote>",
    "<strong>",
    "<em>",
    "<b>",
    "<i>",
    "<u>",
    "<s>",
    "<sub>",
    "<sup>",
    "<code>",
    "</strong>",
    "</em>",
    "</b>",
    "</i>",
    "</u>",
    "</s>",
    "</sub>",
    "</sup>",
    "</code>",
)
GEMMA_OTHER = ("[multimodal]", "[toxicity=0]", "<start_of_image>", "<end_of_image>", "<image_soft_token>")
PALIGEMMA = ("<image>", *(f"<loc{i:04d}>" for i in range(1024)), *(f"<seg{i:03d}>" for i in range(128)))

SPECIAL_TOKENS: frozenset[str] = frozenset((*CONTROL, *GEMMA_SYMBOLS, *HTML_TAGS, *GEMMA_OTHER, *PALIGEMMA))
