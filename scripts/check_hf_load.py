#!/usr/bin/env python3
"""Check that Hugging Face transformers loads a checkpoint directory written by cllm as-is.

The golden model (config.json + model.safetensors made by transformers' save_pretrained) is read
and re-saved by cllm's checkpoint layer (the `golden_model_resaved_as_a_checkpoint_dir` test with
CLLM_CHECK_HF_OUT set), then both directories are loaded with GPT2LMHeadModel.from_pretrained and
run on the reference batch `x`: the logits must be identical, and loading must report no missing,
unexpected or mismatched tensors.

Needs: pip install torch transformers safetensors numpy
Usage: python3 scripts/check_hf_load.py [--golden DIR] [--resaved DIR]
"""

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--golden", default=os.environ.get("CLLM_GOLDEN", os.path.join(ROOT, "..", "shared", "golden", "tiny")))
    ap.add_argument("--resaved", help="a directory cllm already wrote (default: write one now with cargo test)")
    args = ap.parse_args()
    golden = os.path.abspath(args.golden)

    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    tmp = tempfile.TemporaryDirectory()
    resaved = args.resaved
    if resaved is None:
        resaved = os.path.join(tmp.name, "resaved")
        env = dict(os.environ, CLLM_GOLDEN=golden, CLLM_CHECK_HF_OUT=resaved)
        subprocess.run(
            ["cargo", "test", "-q", "-p", "cllm-engine", "--test", "checkpoint", "golden_model_resaved_as_a_checkpoint_dir"],
            cwd=ROOT, env=env, check=True,
        )
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"golden:  {golden}\nresaved: {resaved} ({sorted(os.listdir(resaved))})")

    names = sorted(load_file(os.path.join(resaved, "model.safetensors")).keys())
    assert not any(n.startswith("transformer.") for n in names), names[:3]

    expect = load_file(os.path.join(golden, "expect.safetensors"))
    x = expect["x"].long()

    def run(d, cls):
        model, info = cls.from_pretrained(d, output_loading_info=True, dtype=torch.float32)
        model.eval()
        problems = {k: v for k, v in info.items() if v}
        assert not problems, f"{d}: {problems}"
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "head not tied"
        with torch.no_grad():
            return model(x).logits

    ref = run(golden, GPT2LMHeadModel)
    ours = run(resaved, GPT2LMHeadModel)
    auto = run(resaved, AutoModelForCausalLM)
    max_diff = (ref - ours).abs().max().item()
    print(f"logits {tuple(ours.shape)}: max |golden - resaved| = {max_diff}")
    assert torch.equal(ref, ours) and torch.equal(ref, auto), "logits differ"

    want = expect["logits"]
    rel = ((ours.double() - want).norm() / want.norm()).item()
    print(f"relative L2 vs the float64 reference logits: {rel:.3e}")
    assert rel < 1e-5
    print("OK: transformers loads cllm's checkpoint directory as-is, identical logits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
