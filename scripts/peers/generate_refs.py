#!/usr/bin/env python3
"""Hugging Face `generate` on the golden trained tiny model, as references for cllm's generation.

    pip install torch==2.15 transformers==5.24   (the versions the committed fixture was made with)
    python3 scripts/peers/generate_refs.py [--model DIR] [--out FILE]

--model defaults to ../shared/golden/tiny/trained beside the repository (V = 389, 64 positions);
--out to engine/tests/fixtures/generate_hf.json, which engine/tests/generate_hf.rs reads. The
output is deterministic: no case samples, everything is greedy, beam search or a distribution.

The fixture holds:
  beam    num_beams 2-5, length_penalty -1/0/0.5/1/2, early_stopping True/False, one or two EOS
          tokens chosen among tokens the beams produce (so finishing early matters), 8-24 new
          tokens; in three cases three or four EOS tokens are among the first step's most likely,
          so more than num_beams of the best 2 * num_beams candidates end (generate keeps the
          best (1 + EOS tokens) * num_beams then; in the last case the winners start there). Every case keeps all
          num_beams hypotheses (num_return_sequences = num_beams): their new tokens (cut at their
          length, the EOS kept) and `sequences_scores`, the sum of the token log-probabilities
          divided by (new tokens)^length_penalty.
  greedy  argmax decoding with repetition_penalty 1.3 / 0.8 and with an EOS that ends the row.
  batch   one batch of prompts of different lengths, left-padded (pad id 0, attention mask);
          each row's new tokens, cut after its EOS.
  sample  the distribution `generate(do_sample=True)` draws from: the logits processors
          generate builds (`_get_logits_processor`: repetition penalty, then temperature, top-k,
          top-p, min-p) applied to a logits vector, then softmax. Each case lists the tokens left
          with non-zero probability (ascending ids) and their probabilities (8 digits). The vectors are the
          model's next-token logits at two prompts rounded to 3 decimals (the rounding makes exact
          ties, as real logits of a wide vocabulary sometimes have) and two short synthetic ones.
          No case has top-p's boundary fall among equal logits: which of them stay depends on
          torch.sort's order among equal values, which is not fixed (the script checks this).
          Every setting is passed explicitly (top_k 0 and top_p 1.0 when off, since generate would
          otherwise fill in top_k = 50), and for the model vectors the script checks that
          generate's own `scores` of one sampled step equal the processors' output.
"""
import argparse
import json
import os

import torch
import transformers
from transformers import GenerationConfig, GPT2LMHeadModel, LogitsProcessorList
from transformers.utils import logging as hf_logging

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

P1 = [190, 44, 376, 267, 149, 168]  # the golden greedy/beam prompt
P2 = [5, 17, 300, 2]
P3 = [100, 200, 300, 101, 250, 12, 7, 388, 3]
P4 = [42]
P5 = [4, 195, 351, 110, 216]

# (prompt, num_beams, max_new_tokens, length_penalty, eos ids, early_stopping)
BEAM = [
    (P1, 4, 16, 1.0, [78], False),
    (P1, 4, 16, 2.0, [137], False),
    (P1, 4, 16, 0.0, [98], True),
    (P1, 2, 12, 1.0, [98], True),
    (P1, 2, 12, 1.0, [78], True),
    (P1, 2, 10, 1.0, [66, 68, 345], False),
    (P2, 5, 24, 1.0, [301], False),
    (P2, 5, 24, 2.0, [372], True),
    (P2, 5, 24, 2.0, [372], False),
    (P2, 2, 20, 0.0, [147], False),
    (P2, 3, 16, 1.0, [371], False),
    (P3, 4, 20, 1.0, [170, 205], False),
    (P3, 5, 16, -1.0, [145], False),
    (P3, 4, 24, 1.0, [], False),
    (P4, 3, 8, 0.5, [197], False),
    (P4, 2, 10, 1.0, [68, 132, 308], False),
    (P5, 3, 10, 1.0, [148, 385, 230, 302], False),
]

# (prompt, max_new_tokens, repetition_penalty or None, eos ids)
GREEDY = [
    (P1, 24, 1.3, []),
    (P2, 24, 0.8, []),
    (P3, 24, 1.3, [145]),
    (P1, 24, None, [98]),
]

# (prompts, max_new_tokens, eos ids)
BATCH = [
    ([P1, P2, P3, P4], 20, []),
    ([P3, P4, P1], 16, [98]),
]

# (logits name, history, temperature, top_k, top_p, min_p, repetition_penalty); None = off.
TIES = [3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 0, 0, 0, 0, -1, -2]
SIGNS = [-2.5, 1.5, -0.5, 0.0, 2.0, -3.0, 0.75, 1.25]
SAMPLE = [
    ("ties", [], None, 2, None, None, None),
    ("ties", [], None, 5, None, None, None),
    ("ties", [], None, None, 0.5, None, None),
    ("ties", [], None, None, None, 0.3, None),
    ("ties", [], 2.0, None, None, 0.3, None),
    ("ties", [0, 3, 3, 10], 1.0, 3, 0.5, None, 1.5),
    ("signs", [0, 1, 3, 5, 5], None, None, None, None, 1.5),
    ("signs", [0, 1, 3, 5, 5], None, None, None, None, 0.8),
    ("p1", P1, 0.7, 30, None, None, None),
    ("p1", P1, None, 20, None, None, None),
    ("p1", P1, None, None, 0.25, None, None),
    ("p1", P1, 1.5, None, None, 0.5, None),
    ("p1", P1, 0.8, 40, 0.9, 0.05, 1.3),
    ("p3", P3, 1.3, 50, 0.8, None, None),
    ("p3", P3, None, None, 0.12, None, 0.8),
    ("p3", P3, 0.5, 10, None, 0.2, 1.3),
]


def new_tokens(seq, prompt_len, length):
    return [int(t) for t in seq[prompt_len : prompt_len + length]]


def cut_after_eos(tokens, eos):
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def beam_case(model, prompt, beams, n, lp, eos, early):
    gc = GenerationConfig(
        num_beams=beams,
        num_return_sequences=beams,
        max_new_tokens=n,
        length_penalty=lp,
        early_stopping=early,
        do_sample=False,
        eos_token_id=eos or None,
        pad_token_id=0,
    )
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        generation_config=gc,
        return_dict_in_generate=True,
        output_scores=True,
    )
    # A hypothesis' length: the steps its beam_indices record (-1 beyond its end).
    lengths = (out.beam_indices >= 0).sum(dim=1).tolist()
    hyps = []
    for seq, score, length in zip(out.sequences, out.sequences_scores, lengths):
        tokens = new_tokens(seq, len(prompt), length)
        assert tokens == cut_after_eos(tokens, eos), "an EOS inside a hypothesis"
        hyps.append({"tokens": tokens, "score": float(score)})
    return {
        "prompt": prompt,
        "num_beams": beams,
        "max_new_tokens": n,
        "length_penalty": lp,
        "eos": eos,
        "early_stopping": early,
        "hyps": hyps,
    }


def greedy_rows(model, prompts, n, rp, eos):
    """Greedy continuations of `prompts` as one left-padded batch (pad id 0)."""
    t = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (t - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (t - len(p)) + [1] * len(p) for p in prompts])
    gc = GenerationConfig(
        max_new_tokens=n,
        do_sample=False,
        repetition_penalty=rp if rp is not None else 1.0,
        eos_token_id=eos or None,
        pad_token_id=0,
    )
    out = model.generate(ids, attention_mask=mask, generation_config=gc)
    return [cut_after_eos(new_tokens(row, t, n), eos) for row in out]


def sample_config(temperature, top_k, top_p, min_p, rp):
    return GenerationConfig(
        do_sample=True,
        temperature=temperature if temperature is not None else 1.0,
        top_k=top_k if top_k is not None else 0,
        top_p=top_p if top_p is not None else 1.0,
        min_p=min_p,
        repetition_penalty=rp if rp is not None else 1.0,
        eos_token_id=None,
        pad_token_id=0,
    )


def processors(model, gc, history):
    hist = torch.tensor([history], dtype=torch.long)
    return model._get_logits_processor(
        generation_config=gc,
        input_ids_seq_length=len(history),
        encoder_input_ids=hist,
        logits_processor=LogitsProcessorList(),
        device="cpu",
        model_kwargs={},
    )


def distribution(model, logits, history, settings):
    gc = sample_config(*settings)
    hist = torch.tensor([history], dtype=torch.long).reshape(1, len(history))
    scores = processors(model, gc, history)(hist, logits[None, :].clone())
    probs = torch.softmax(scores, dim=-1)[0]
    kept = torch.nonzero(probs > 0).flatten().tolist()
    # Top-k, top-p and min-p keep the most likely tokens after the penalty and temperature. Where
    # top-p's boundary splits equal logits, which of them stay depends on torch.sort's order among
    # equal values, which is not fixed: such a case is no reference, so none may be one.
    t, _, _, _, rp = settings
    unfiltered = sample_config(t, None, None, None, rp)
    z = processors(model, unfiltered, history)(hist, logits[None, :].clone())[0]
    dropped = probs == 0
    if dropped.any():
        assert z[~dropped].min() > z[dropped].max(), ("the boundary splits equal logits", settings)
    return kept, [float("%.8g" % probs[i]) for i in kept]


def check_against_generate(model, prompt, settings):
    """generate's own processed scores of one sampled step equal what `distribution` applies."""
    gc = sample_config(*settings)
    gc.max_new_tokens = 1
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        generation_config=gc,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    mine = processors(model, sample_config(*settings), prompt)(ids, out.logits[0].clone())
    assert torch.equal(torch.isinf(mine), torch.isinf(out.scores[0])), settings
    finite = torch.isfinite(mine)
    assert torch.equal(mine[finite], out.scores[0][finite]), settings


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "..", "shared", "golden", "tiny", "trained"))
    ap.add_argument("--out", default=os.path.join(ROOT, "engine", "tests", "fixtures", "generate_hf.json"))
    args = ap.parse_args()
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(args.model, dtype=torch.float32).eval()

    with torch.no_grad():
        beam = [beam_case(model, *case) for case in BEAM]
        greedy = []
        for prompt, n, rp, eos in GREEDY:
            row = greedy_rows(model, [prompt], n, rp, eos)[0]
            greedy.append({"prompt": prompt, "max_new_tokens": n, "repetition_penalty": rp, "eos": eos, "tokens": row})
        batch = []
        for prompts, n, eos in BATCH:
            rows = greedy_rows(model, prompts, n, None, eos)
            batch.append({"prompts": prompts, "max_new_tokens": n, "eos": eos, "rows": rows})

        vectors = {"ties": TIES, "signs": SIGNS}
        for name, prompt in [("p1", P1), ("p3", P3)]:
            logits = model(torch.tensor([prompt])).logits[0, -1]
            vectors[name] = [round(float(x), 3) for x in logits]
        sample = []
        for name, history, *settings in SAMPLE:
            if name in ("p1", "p3"):
                check_against_generate(model, history, settings)
            logits = torch.tensor(vectors[name], dtype=torch.float64).to(torch.float32)
            kept, probs = distribution(model, logits, history, settings)
            t, k, p, m, rp = settings
            sample.append(
                {"logits": name, "history": history, "temperature": t, "top_k": k, "top_p": p,
                 "min_p": m, "repetition_penalty": rp, "kept": kept, "probs": probs}
            )

    fixture = {
        "about": (
            "Hugging Face transformers %s, torch %s, CPU float32, on ../shared/golden/tiny/trained; "
            "made by scripts/peers/generate_refs.py" % (transformers.__version__, torch.__version__)
        ),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "beam": beam,
        "greedy": greedy,
        "batch": batch,
        "logits": vectors,
        "sample": sample,
    }
    with open(args.out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", args.out, os.path.getsize(args.out), "bytes")
    for c in beam:
        ended = sum(1 for h in c["hyps"] if h["tokens"] and h["tokens"][-1] in c["eos"])
        lens = [len(h["tokens"]) for h in c["hyps"]]
        print("beam", c["num_beams"], c["length_penalty"], c["eos"], c["early_stopping"], "ended on EOS:", ended, "lengths:", lens)
    for c in greedy:
        print("greedy", c["repetition_penalty"], c["eos"], c["tokens"])
    for c in batch:
        print("batch", c["rows"])
    for c in sample:
        print("sample", c["logits"], c["temperature"], c["top_k"], c["top_p"], c["min_p"], c["repetition_penalty"], "kept", len(c["kept"]))


if __name__ == "__main__":
    main()
