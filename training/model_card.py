"""The model card (README.md) `paligemma finetune` writes beside the adapter or checkpoint."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.model_source import ModelSource
    from training.finetune import FinetuneResult, FinetuneSettings

# The metadata block is Hugging Face's: `base_model` names the model this one was made from, by the
# name it is served under. `paligemma serve --model OUT` lists OUT with it as parent, which is how
# the tools know what OUT sees and which VQ-VAE decodes its masks (server/model_parent.py).
CARD = """\
---
base_model: {base_model}
library_name: {library}
tags:
- paligemma
- paligemma-tools
---

# Fine-tuned PaliGemma: {name} ({method})

Made by `paligemma finetune` (paligemma-tools) from {base} on `{data}` (task `{task}`,
{train} training examples, {held} held out).

| | |
|---|---|
| method | {method_long} |
| steps | {steps} of batch {batch}, learning rate {lr:g} (warm-up, cosine decay), seed {seed} |
| objective | PaliGemma's prefix-LM: image and prompt attend both ways, loss on the answer only |
| held-out {metric} | {score} |
| time | {minutes:.1f} minutes |

Prompts are the tools' own (`{example_prompt}`); answers are written by the tools' format code, so
the tools read this model's answers as they read PaliGemma's. The score is computed by
`training/finetune_eval.py` from greedy transformers answers parsed by the tools' parsers.

## Serve it and use it

```bash
{serve}
```

```python
import tools
{use}
```

`base_model` in the metadata above names, by the name it is served under, the model this one was
made from ({base_role}). Served, `/v1/models` lists this model with it as `parent` ({lister}), and
the tools send this model the images that model sees and decode its masks with that model's
VQ-VAE. `eval.json` beside this card holds the score and the loss of every step.
"""


def text(settings: FinetuneSettings, base: ModelSource, result: FinetuneResult) -> str:
    """The card for one finished run. An adapter's base model is `base`; a whole checkpoint's is
    the one `base` was itself made from, if its own card says (it sees what the first base sees)."""
    from training.finetune import adapter_name, serve_command

    name = adapter_name(settings.out) if settings.method == "lora" else settings.out.resolve().name
    serve = serve_command(settings)
    if settings.method == "lora":
        method_long = f"LoRA rank {settings.lora_rank} on the text model's projections (vision tower frozen)"
    else:
        method_long = "full fine-tuning (every weight)"
    calls = {
        "detect": 'found = tools.locate_objects("photo.jpg", ["thing"], client=client)',
        "segment": 'found = tools.segment_objects("photo.jpg", "thing", client=client)',
        "ocr": 'text = tools.read_text("photo.jpg", client=client)',
        "caption": 'caption = tools.caption_image("photo.jpg", client=client)',
        "answer": 'reply = tools.answer_visual_question("photo.jpg", "what is it?", client=client)',
    }
    use = f'client = tools.PaliGemmaClient(model="{name}")  # or PALIGEMMA_MODEL={name}\n{calls[settings.task]}'
    examples = {
        "detect": "detect thing",
        "segment": "segment thing",
        "ocr": "ocr",
        "caption": "caption en",
        "answer": "answer en what is it?",
    }
    return CARD.format(
        name=name,
        method=settings.method,
        method_long=method_long,
        # an adapter runs on the model it was trained on; a whole checkpoint sees what the first base sees
        base_model=json.dumps(base.served_name if settings.method == "lora" else base.first_base),
        base_role="the model the adapter runs on" if settings.method == "lora" else "the first of its line",
        lister="vLLM lists adapters so" if settings.method == "lora" else "`paligemma serve --model` lists it so",
        library="peft" if settings.method == "lora" else "transformers",
        base=f"`{settings.model}`" if settings.model == base.location else f"`{settings.model}` (`{base.location}`)",
        data=settings.data.name,
        task=settings.task,
        train=result.train_examples,
        held=result.eval_examples,
        steps=result.steps,
        batch=settings.batch_size,
        lr=settings.learning_rate,
        seed=settings.seed,
        metric=result.metric,
        score=result.score_text,
        minutes=result.minutes,
        example_prompt=examples[settings.task],
        serve=serve,
        use=use,
    )
