"""The demo model of fovea in plain PyTorch: exactly the LLaVA architecture fovea loads for
`assets/demo-model/` (HuatuoGPT-Vision / original LLaVA layout), plus the data, tokenizer and
VGRefine helpers shared by `train_demo_model.py` and `demo_model_report.py`.

The modules carry the checkpoint's own parameter names, so `DemoLlava().state_dict()` *is* the
checkpoint (keys `model.embed_tokens`, `model.layers.*`, `model.norm`, `lm_head`,
`model.mm_projector.{0,2}`, `model.vision_tower.vision_tower.vision_model.*`). The math is the
eager float32 math of transformers' CLIPVisionModel (quick_gelu, pre_layrnorm, hidden state -2,
CLS dropped), LLaVA's mlp2x_gelu projector (exact erf GELU) and Qwen2ForCausalLM (RMSNorm in f32,
rotate-half RoPE, GQA, q/k/v bias, SwiGLU, untied lm_head); `demo_model_report.py` checks it
against transformers itself.

Prompt (fovea's default for this layout, `PromptFormat::Huatuo`):
    "<|user|>\\n<image>\\n{question} Answer the question using a single word or phrase.\\n<|assistant|>\\n"
The text before and after `<image>` is tokenised separately (WordLevel, lowercase, whitespace
pre-tokenizer: newlines vanish), the image becomes 144 positions. So the sequence is
    [<|user|>] + 144 image tokens + question words + instruction words + [<|assistant|>]
and the answer is one word followed by <|endoftext|>.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
FOVEA = REPO / "target" / "release" / "fovea"

IMAGE_SIZE, PATCH = 192, 16
GRID = IMAGE_SIZE // PATCH  # 12
N_IMG = GRID * GRID  # 144
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

VISION = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
              image_size=IMAGE_SIZE, patch_size=PATCH, num_channels=3, hidden_act="quick_gelu",
              layer_norm_eps=1e-5)
SELECT_LAYER = -2  # hidden_states[-2]: the output of vision layer 2 (of 0..3)
TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6)
L, H = TEXT["num_hidden_layers"], TEXT["num_attention_heads"]

SUFFIX = "Answer the question using a single word or phrase."
GENERAL = "Write a general description of the image."
SPECIALS = ["<unk>", "<|endoftext|>", "<image>", "<|user|>", "<|assistant|>"]
UNK, EOS, IMAGE_TOKEN, USER, ASSISTANT = range(5)


def all_questions() -> list[str]:
    """Every question the phantom generator asks (src/demo/phantom.rs `Case::questions`)."""
    out = []
    for word, organ in (("nodule", "lung"), ("lesion", "hemisphere")):
        for side in ("left", "right"):
            out.append(f"Is there a {word} in the {side} {organ}?")
        out += [f"Which side is the {word} on?", f"Is the {word} brighter than the surrounding tissue?",
                f"Is the {word} large?"]
    return out


ANSWERS = ["yes", "no", "left", "right"]


def words_of(text: str) -> list[str]:
    from tokenizers import pre_tokenizers
    return [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text.lower())]


def vocabulary() -> dict[str, int]:
    words = set()
    for text in all_questions() + ANSWERS + [SUFFIX, GENERAL]:
        words.update(words_of(text))
    return {t: i for i, t in enumerate(SPECIALS + sorted(words))}


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    tok = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return tok


def prompt_text(question: str) -> str:
    return f"<|user|>\n<image>\n{question} {SUFFIX}\n<|assistant|>\n"


class Prompts:
    """Tokenised prompts (text after the image), cached; as fovea's PromptFormat::Huatuo."""

    def __init__(self, tok):
        self.tok = tok
        self.cache: dict[str, list[int]] = {}
        before = tok.encode(prompt_text("x").split("<image>")[0]).ids
        assert before == [USER], before

    def after(self, question: str) -> list[int]:
        if question not in self.cache:
            ids = self.tok.encode(prompt_text(question).split("<image>", 1)[1]).ids
            assert UNK not in ids and ids[-1] == ASSISTANT, (question, ids)
            self.cache[question] = ids
        return self.cache[question]

    def answer_id(self, answer: str) -> int:
        ids = self.tok.encode(answer).ids
        assert len(ids) == 1 and ids[0] != UNK, answer
        return ids[0]


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
class ClipAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.heads, self.hd = heads, d // heads

    def forward(self, x):
        b, t, d = x.shape
        sp = lambda y: y.view(b, t, self.heads, self.hd).transpose(1, 2)
        q, k, v = sp(self.q_proj(x)), sp(self.k_proj(x)), sp(self.v_proj(x))
        a = torch.softmax((q @ k.transpose(-1, -2)) * self.hd ** -0.5, dim=-1)
        return self.out_proj((a @ v).transpose(1, 2).reshape(b, t, d))


class ClipMlp(nn.Module):
    def __init__(self, d, i):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, i), nn.Linear(i, d)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # quick_gelu


class ClipLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.self_attn = ClipAttention(d, c["num_attention_heads"])
        self.layer_norm1 = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.mlp = ClipMlp(d, c["intermediate_size"])
        self.layer_norm2 = nn.LayerNorm(d, eps=c["layer_norm_eps"])

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.patch_embedding = nn.Conv2d(3, d, c["patch_size"], c["patch_size"], bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d))
        self.position_embedding = nn.Embedding(N_IMG + 1, d)

    def forward(self, px):
        p = self.patch_embedding(px).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(px.shape[0], 1, -1)
        return torch.cat([cls, p], 1) + self.position_embedding.weight[None]


class ClipEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList(ClipLayer(c) for _ in range(c["num_hidden_layers"]))


class ClipVisionModel(nn.Module):  # the `vision_model` level
    def __init__(self, c):
        super().__init__()
        self.embeddings = ClipEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.encoder = ClipEncoder(c)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])  # unused by LLaVA

    def features(self, px):
        """hidden_states[SELECT_LAYER] without CLS: (B, 144, Dv)."""
        x = self.pre_layrnorm(self.embeddings(px))
        for layer in self.encoder.layers[: VISION["num_hidden_layers"] + 1 + SELECT_LAYER]:
            x = layer(x)
        return x[:, 1:]


class Holder(nn.Module):
    def __init__(self, name, child):
        super().__init__()
        setattr(self, name, child)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class Qwen2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = d // h
        self.h, self.kv = h, kv
        self.q_proj = nn.Linear(d, h * self.hd)
        self.k_proj = nn.Linear(d, kv * self.hd)
        self.v_proj = nn.Linear(d, kv * self.hd)
        self.o_proj = nn.Linear(h * self.hd, d, bias=False)


class Qwen2Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, i = c["hidden_size"], c["intermediate_size"]
        self.gate_proj, self.up_proj = nn.Linear(d, i, bias=False), nn.Linear(d, i, bias=False)
        self.down_proj = nn.Linear(i, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Qwen2Attention(c)
        self.mlp = Qwen2Mlp(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Inner(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        d = TEXT["hidden_size"]
        self.embed_tokens = nn.Embedding(vocab_size, d)
        self.layers = nn.ModuleList(Qwen2Layer(TEXT) for _ in range(L))
        self.norm = RMSNorm(d, TEXT["rms_norm_eps"])
        self.mm_projector = nn.Sequential(nn.Linear(VISION["hidden_size"], d), nn.GELU(), nn.Linear(d, d))
        self.vision_tower = Holder("vision_tower", Holder("vision_model", ClipVisionModel(VISION)))


def rope(x, pos, theta):
    """Rotate-half RoPE (HF): x (..., T, hd), pos (T,) absolute positions."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    f = pos.float()[:, None] * inv[None]
    emb = torch.cat([f, f], -1)
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class DemoLlava(nn.Module):
    """Checkpoint-named LLaVA-Qwen2. The decoder runs a shared prefix ([<|user|>] + image, B rows)
    and per-question suffixes (M rows, `idx` says which prefix row each belongs to), which is
    mathematically one causal pass over prefix + suffix, as fovea's prefix cache does it."""

    def __init__(self, vocab_size):
        super().__init__()
        self.model = Inner(vocab_size)
        self.lm_head = nn.Linear(TEXT["hidden_size"], vocab_size, bias=False)

    @property
    def vision(self):
        return self.model.vision_tower.vision_tower.vision_model

    def image_features(self, px):
        """Vision features (B, 144, Dv) (before the projector)."""
        return self.vision.features(px)

    def _attn(self, layer, xp, xs, idx, P, knock=None, probe=None):
        """One decoder attention. xp (B,P,D) prefix, xs (M,S,D) suffix (absolute positions P..)."""
        a = layer.self_attn
        B, M, S = xp.shape[0], xs.shape[0], xs.shape[1]
        hd, h, kv = a.hd, a.h, a.kv
        th = TEXT["rope_theta"]
        sp = lambda y, n: y.view(y.shape[0], y.shape[1], n, hd).transpose(1, 2)
        pos_p = torch.arange(P)
        pos_s = torch.arange(P, P + S)
        qp = rope(sp(a.q_proj(xp), h), pos_p, th)
        kp = rope(sp(a.k_proj(xp), kv), pos_p, th)
        vp = sp(a.v_proj(xp), kv)
        qs = rope(sp(a.q_proj(xs), h), pos_s, th)
        ks = rope(sp(a.k_proj(xs), kv), pos_s, th)
        vs = sp(a.v_proj(xs), kv)
        g = h // kv
        rep = lambda y: y.repeat_interleave(g, dim=1)
        scale = hd ** -0.5
        # prefix: causal among itself
        sc = (qp @ rep(kp).transpose(-1, -2)) * scale
        causal_p = torch.ones(P, P, dtype=torch.bool).triu(1)
        sc = sc.masked_fill(causal_p, float("-inf"))
        op = torch.softmax(sc, -1) @ rep(vp)
        # suffix: all of its prefix row, causal among itself
        K = torch.cat([kp[idx], ks], 2)
        V = torch.cat([vp[idx], vs], 2)
        sc = (qs @ rep(K).transpose(-1, -2)) * scale  # (M,h,S,P+S)
        mask = torch.zeros(S, P + S)
        mask[:, P:] = torch.full((S, S), float("-inf")).triu(1)
        sc = sc + mask
        if knock is not None:
            # (M, P) bool: prefix keys blocked for every suffix query; (M, S, P): per query row
            # (prefill-only knockout: the rows of generated tokens are not blocked)
            add = torch.where(knock, torch.finfo(torch.float32).min, 0.0)
            add = add[:, None, None, :] if knock.dim() == 2 else add[:, None, :, :]
            sc = torch.cat([sc[..., :P] + add, sc[..., P:]], -1)
        pr = torch.softmax(sc, -1)
        if probe is not None:
            probe.append(pr)
        os_ = pr @ rep(V)
        op = a.o_proj(op.transpose(1, 2).reshape(B, P, h * hd))
        os_ = a.o_proj(os_.transpose(1, 2).reshape(M, S, h * hd))
        return op, os_

    def decode(self, feats, suffix_ids, idx, knock_layers=(), knock=None, probe=None):
        """feats (B,144,Dv) vision features; suffix_ids (M,S) token ids after the image (right-padded);
        idx (M,) prefix row of each suffix. Returns final-normed hidden states of the suffix (M,S,D)."""
        m = self.model
        B = feats.shape[0]
        xp = torch.cat([m.embed_tokens(torch.full((B, 1), USER)), m.mm_projector(feats)], 1)
        xs = m.embed_tokens(suffix_ids)
        P = xp.shape[1]
        for li, layer in enumerate(m.layers):
            op, os_ = self._attn(layer, layer.input_layernorm(xp), layer.input_layernorm(xs), idx, P,
                                 knock if li in knock_layers else None, probe)
            xp, xs = xp + op, xs + os_
            xp = xp + layer.mlp(layer.post_attention_layernorm(xp))
            xs = xs + layer.mlp(layer.post_attention_layernorm(xs))
        return m.norm(xs)


# ----------------------------------------------------------------------------------------------
# Images and data
# ----------------------------------------------------------------------------------------------
MEAN32 = np.array(CLIP_MEAN, np.float32)[:, None, None]
STD32 = np.array(CLIP_STD, np.float32)[:, None, None]


def pixel_values(grey: np.ndarray) -> torch.Tensor:
    """uint8 (B,192,192) greyscale -> (B,3,192,192) f32, exactly fovea's path for square 192 px
    images: RGB replicated, pad/resize are no-ops, x * f32(1/255), then (x - mean) / std in f32."""
    x = grey.astype(np.float32)[:, None] * np.float32(0.00392156862745098)
    return torch.from_numpy(((x - MEAN32) / STD32).astype(np.float32))


def load_grey(path: Path) -> np.ndarray:
    im = Image.open(path)
    if im.mode != "L":
        im = im.convert("RGB")
        a = np.asarray(im)
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()
        return a[..., 0].copy()
    return np.asarray(im).copy()


def run_phantom(out: Path, n: int, seed: int, difficulty: float = 1.0, distractors: float = 0.3,
                dicom: bool = False) -> None:
    if (out / "cases.jsonl").exists():
        return
    cmd = [str(FOVEA), "phantom", "--out", str(out), "--n", str(n), "--seed", str(seed),
           "--difficulty", repr(float(difficulty)), "--distractors", repr(float(distractors))]
    if dicom:
        cmd.append("--dicom")
    subprocess.run(cmd, check=True, capture_output=True)


class Dataset:
    """One `fovea phantom` folder in memory: images (N,192,192) uint8, rows grouped per image,
    and per-image lesions [(cx, cy, r, side, bright or None)]."""

    def __init__(self, folder: Path, difficulty: float = 1.0):
        rows = [json.loads(line) for line in (folder / "cases.jsonl").read_text().splitlines()]
        names = sorted({r["image"] for r in rows}, key=lambda s: s)
        self.names = names
        self.folder = folder
        pos = {n: i for i, n in enumerate(names)}
        self.images = np.stack([load_grey(folder / n) for n in names])
        self.rows = [[] for _ in names]
        for r in rows:
            self.rows[pos[r["image"]]].append(r)
        self.difficulty = difficulty
        self.lesions = []
        for rs in self.rows:
            les = []
            bright = next((r["answer"] == "yes" for r in rs if "brighter" in r["question"]), None)
            for r in rs:
                if r["question"].startswith("Is there"):
                    side = "left" if " left " in r["question"] else "right"
                    for x0, y0, x1, y1 in r["original_bboxes"]:
                        b = bright if bright is not None else (True if r["family"] == "chest-xray" else None)
                        les.append(((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, side, b))
            self.lesions.append(les)

    def __len__(self):
        return len(self.names)

    def token_targets(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Per image token: [lesion, bright, large] soft targets and their weights (144, 3).
        lesion = the blob's value (sigma = r/2) at the cell point nearest to the lesion centre."""
        t = np.zeros((N_IMG, 3), np.float32)
        w = np.zeros((N_IMG, 3), np.float32)
        w[:, 0] = 1.0
        cells = np.arange(GRID) * PATCH
        scale = 1.0 + 0.4 * (1.0 - self.difficulty)
        for cx, cy, r, _side, bright in self.lesions[i]:
            dx = np.maximum(np.maximum(cells - cx, cx - (cells + PATCH)), 0.0)
            dy = np.maximum(np.maximum(cells - cy, cy - (cells + PATCH)), 0.0)
            d2 = dy[:, None] ** 2 + dx[None, :] ** 2
            v = np.exp(-d2 / (2 * (r / 2) ** 2)).reshape(-1)
            large = r / (IMAGE_SIZE * scale) > 0.06
            t[:, 0] = np.maximum(t[:, 0], v)
            near = v > 0.3
            t[near, 2] = float(large)
            w[near, 2] = v[near]
            if bright is not None:
                t[near, 1] = float(bright)
                w[near, 1] = v[near]
        return t, w


def region_tokens(boxes: list[list[float]]) -> list[int]:
    """fovea's Region::Box::tokens on the 12x12 grid of a 192 px square image (scale 1, no offset):
    columns floor(x0/16)..ceil(x1/16), rows likewise, union over boxes, sorted."""
    out = set()
    for x0, y0, x1, y1 in boxes:
        c0 = max(0, math.floor(min(x0, x1) / PATCH))
        c1 = min(GRID, max(0, math.ceil(max(x0, x1) / PATCH)))
        r0 = max(0, math.floor(min(y0, y1) / PATCH))
        r1 = min(GRID, max(0, math.ceil(max(y0, y1) / PATCH)))
        for row in range(r0, r1):
            for col in range(c0, c1):
                out.add(row * GRID + col)
    return sorted(out)


def attention_ratio(p: np.ndarray, region: list[int]) -> float:
    """fovea's metrics::attention_ratio: sum_G p / (sum p * |G| / N + 1e-8)."""
    p = np.asarray(p, np.float64)
    return float(p[region].sum() / (p.sum() * len(region) / len(p) + 1e-8))


def np_percentile_rule(S: np.ndarray, p: float) -> list[int]:
    thr = float(np.percentile(np.asarray(S, np.float64), p))
    return [int(i) for i in np.nonzero(np.asarray(S, np.float64) < thr)[0]]
