#!/usr/bin/env python3
"""The speed anchor for `fovea bench`: transformers on the same shapes, on the same machine.

Builds a LLaVA model with HuatuoGPT-Vision-7B's shapes (Qwen2-7B decoder with q/k/v biases,
CLIP ViT-L/14-336, two-layer GELU projector) or LLaVA-Med-v1.5's (Mistral-7B), random bf16
weights, and times on a 600-token prompt with 576 image tokens:

- `plain`: one answer as transformers users run it (sdpa attention, `generate`, 1 new token);
- `authors_vgrefine`: the paper authors' pipeline as their code runs it: eager attention with
  `output_attentions=True`, the question prompt and the general-description prompt each
  prefilled in full (image encoded each time), relative attention of the top heads averaged,
  the tokens under the 80th percentile knocked out, and a third full prefill with those
  question -> image edges blocked (a 4D mask), answering from its last logits.

`--model-dir DIR` instead builds the model a fovea-written shape folder describes (`fovea bench
--write-model DIR --shape qwen2.5-vl-7b|medgemma-4b|...`: its config.json, tokenizer and
preprocessor, random bf16 weights from transformers' own init), and prompts it with
the token counts fovea's bench reported (`--image-grid`, `--before`, `--after`), so both sides
see the same sequence. The knockout pass then passes a 4D mask (the family's
own visibility: causal, plus Gemma 3's bidirectional image block, plus the blocked edges) and,
for M-RoPE, the position ids transformers computes for the 2D mask.

Prints one JSON object. Not part of `cargo test`: run by `tools/bench_vs_transformers.sh`,
which runs fovea's side (`fovea bench --model`) in the same go. Requirements: torch and
transformers >= 5 from PyPI (`tools/bench_transformers_requirements.txt`).
"""
import argparse
import json
import resource
import time

import torch
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration
from transformers import MistralConfig, Qwen2Config

SHAPES = {
    # For checking the script itself in seconds.
    "tiny": dict(
        text=Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=20, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=False),
    ),
    # `fovea bench`'s generated checkpoint (src/model/bench.rs): CLIP-L/336 and a 4-layer,
    # 256-wide Qwen2, stored in f32 (so transformers runs it in f32 too).
    "bench": dict(
        text=Qwen2Config(vocab_size=69, hidden_size=256, intermediate_size=1024,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                         head_dim=32, rope_theta=1e4, rms_norm_eps=1e-6,
                         tie_word_embeddings=False),
        dtype=torch.float32,
    ),
    "huatuogpt-vision-7b": dict(
        text=Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                         num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                         max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                         tie_word_embeddings=False),
    ),
    "llava-med-7b": dict(
        text=MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                           num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                           max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-5,
                           sliding_window=None),
    ),
}


def build(shape, attn):
    text = SHAPES[shape]["text"]
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              projection_dim=768, hidden_act="quick_gelu")
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=text.vocab_size - 1,
                         projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=576)
    config._attn_implementation = attn
    torch.manual_seed(0)
    # Built in the checkpoint's dtype directly (bf16 for the 7B shapes; transformers' own random
    # init, std 0.02): never an f32 copy of a bf16 model.
    torch.set_default_dtype(SHAPES[shape].get("dtype", torch.bfloat16))
    model = LlavaForConditionalGeneration(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    return model, config


def prompt(config, tokens, image_tokens, seed):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, config.text_config.vocab_size - 2, (1, tokens), generator=g)
    text[0, 5:5 + image_tokens] = config.image_token_index
    return text


def run_dir(args, out):
    """The plain answer and the authors' pipeline on a fovea-written shape folder."""
    from transformers import AutoConfig, AutoModelForImageTextToText
    config = AutoConfig.from_pretrained(args.model_dir)
    start = time.perf_counter()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa")
    torch.set_default_dtype(torch.float32)
    model.eval()
    out["build_s"] = time.perf_counter() - start
    gemma = config.model_type == "gemma3"
    text = config.text_config
    image_id = config.image_token_index if gemma else config.image_token_id
    rows, cols = args.image_grid
    image_tokens = rows * cols
    if gemma:
        pixels = {"pixel_values": torch.randn(1, 3, 896, 896, dtype=torch.bfloat16)}
        opener, closer = config.boi_token_index, config.eoi_token_index
    else:
        patch = config.vision_config.patch_size
        temporal = config.vision_config.temporal_patch_size
        pixels = {"pixel_values": torch.randn(4 * image_tokens, 3 * temporal * patch * patch,
                                              dtype=torch.bfloat16),
                  "image_grid_thw": torch.tensor([[1, 2 * rows, 2 * cols]])}
        opener, closer = config.vision_start_token_id, config.vision_end_token_id

    def ids(seed):
        # `before` text tokens (the template, opener last), the image, the closer, `after` text
        # tokens: the token counts fovea's bench reported for the same image.
        g = torch.Generator().manual_seed(seed)
        words = lambda n: torch.randint(100, text.vocab_size - 100, (n,), generator=g)
        parts = [words(args.before - 1), torch.tensor([opener]),
                 torch.full((image_tokens,), image_id), torch.tensor([closer]),
                 words(args.after - 1)]
        return torch.cat(parts)[None]

    question, general = ids(1), ids(2)
    first = args.before
    image_pos = torch.arange(first, first + image_tokens)
    n = question.shape[1]
    out["tokens"], out["image_tokens"] = n, image_tokens
    extra = {"token_type_ids": (question == image_id).long()} if gemma else {}
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(input_ids=question, **pixels, **extra, max_new_tokens=1, do_sample=False)
        out["plain_s"] = time.perf_counter() - start

        model.set_attn_implementation("eager")
        start = time.perf_counter()
        maps = []
        for p in (question, general):
            kw = {"token_type_ids": (p == image_id).long()} if gemma else {}
            o = model(input_ids=p, **pixels, **kw, output_attentions=True)
            maps.append(torch.stack([a[0, :, -1, image_pos].float() for a in o.attentions]))
            del o
        relative = maps[0] / (maps[1] + 1e-6)
        top = maps[0].sum(-1).flatten().topk(args.top_heads).indices
        triage = relative.flatten(0, 1)[top].mean(0)
        keep = triage >= torch.quantile(triage, 0.8)
        allowed = torch.ones(n, n, dtype=torch.bool).tril()
        if gemma:
            block = torch.zeros(n, dtype=torch.bool)
            block[image_pos] = True
            allowed |= block[:, None] & block[None, :]
        after = torch.arange(first + image_tokens, n)
        allowed[after[:, None], image_pos[~keep][None, :]] = False
        mask = torch.zeros(1, 1, n, n, dtype=torch.bfloat16)
        mask[0, 0][~allowed] = float("-inf")
        kw = dict(extra)
        if not gemma:
            kw["position_ids"], _ = model.model.get_rope_index(
                question, mm_token_type_ids=(question == image_id).int(),
                image_grid_thw=pixels["image_grid_thw"], attention_mask=torch.ones_like(question))
        o = model(input_ids=question, **pixels, **kw, attention_mask=mask,
                  output_attentions=True)
        out["answer_token"] = int(o.logits[0, -1].argmax())
        out["authors_vgrefine_s"] = time.perf_counter() - start
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", help="a fovea-written shape folder (instead of --shape)")
    ap.add_argument("--image-grid", type=lambda t: tuple(int(v) for v in t.split(",")),
                    default=(16, 16), help="with --model-dir: image tokens as ROWS,COLS")
    ap.add_argument("--before", type=int, default=15,
                    help="with --model-dir: text tokens before the image (opener included)")
    ap.add_argument("--after", type=int, default=20,
                    help="with --model-dir: tokens after the image (closer included)")
    ap.add_argument("--shape", default="huatuogpt-vision-7b", choices=sorted(SHAPES))
    ap.add_argument("--tokens", type=int, default=600)
    ap.add_argument("--image-tokens", type=int, default=576)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--layer", type=int, default=16, help="knockout layer (the paper's 16)")
    ap.add_argument("--top-heads", type=int, default=8)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {"shape": args.shape, "tokens": args.tokens, "image_tokens": args.image_tokens,
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    import transformers
    out["transformers"] = transformers.__version__
    if args.model_dir:
        out["shape"] = args.model_dir
        return run_dir(args, out)

    start = time.perf_counter()
    model, config = build(args.shape, "sdpa")
    out["build_s"] = time.perf_counter() - start
    pixels = torch.randn(1, 3, 336, 336, dtype=SHAPES[args.shape].get("dtype", torch.bfloat16))
    ids = prompt(config, args.tokens, args.image_tokens, 1)
    first = 5
    image = slice(first, first + args.image_tokens)

    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=1, do_sample=False)
        out["plain_s"] = time.perf_counter() - start

        model.set_attn_implementation("eager")
        start = time.perf_counter()
        # 1-2: the question and the general-description prompt, each in full, with attentions.
        maps = []
        for seed in (1, 2):
            p = prompt(config, args.tokens, args.image_tokens, seed)
            o = model(input_ids=p, pixel_values=pixels, output_attentions=True)
            # (layers, heads, image tokens): the last token's attention to the image.
            maps.append(torch.stack([a[0, :, -1, image].float() for a in o.attentions]))
            del o
        relative = maps[0] / (maps[1] + 1e-6)
        # Visual sensitivity per head: attention mass on the image, the top heads averaged.
        score = maps[0].sum(-1).flatten()
        top = score.topk(args.top_heads).indices
        triage = relative.flatten(0, 1)[top].mean(0)
        keep = triage >= torch.quantile(triage, 0.8)
        # 3: the question again, with question -> knocked-out image edges blocked.
        n = args.tokens
        mask = torch.zeros(1, 1, n, n, dtype=SHAPES[args.shape].get("dtype", torch.bfloat16))
        mask[0, 0] = torch.triu(torch.full((n, n), float("-inf")), 1)
        blocked = torch.arange(first, first + args.image_tokens)[~keep]
        question = torch.arange(first + args.image_tokens, n)
        mask[0, 0, question[:, None], blocked[None, :]] = float("-inf")
        o = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, output_attentions=True)
        answer = int(o.logits[0, -1].argmax())
        out["authors_vgrefine_s"] = time.perf_counter() - start
        out["answer_token"] = answer
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
