#!/usr/bin/env python3
"""Write a GGUF file of Qwen2-7B's decoder shape (HuatuoGPT-Vision-7B's language model) for
llama.cpp: the speed anchor of tools/llama_cpp_anchor.sh.

Architecture "qwen2": vocab 152064, hidden 3584, intermediate 18944, 28 layers, 28 heads, 4 KV
heads (head_dim 128), rope_theta 1e6, RMS eps 1e-6, q/k/v biases, untied head (output.weight).
Every matrix is Q8_0 (like `llama-quantize ... Q8_0` of the real checkpoint), norms and biases
F32. The header, the metadata and the tensor infos are written through gguf's GGUFWriter (so
offsets and alignment are its own), then the ~8 GB of tensor data:

- `--fill random` (the default): every Q8_0 block a random f16 scale (2^-13..2^-11) and 32 random
  int8s, norms 1, biases random; 8 GB of real disk, ~1 min to write.
- `--fill sparse`: nothing; the file is extended to its full length with os.truncate, a sparse
  file that reads as zeros (no disk, no time). Arithmetic costs the same, but decoding reads
  weights at memory speed and holes do not: on this project's VMs, pages of a file's holes mapped
  by llama.cpp read at 57-59 GB/s on 2 cores, pages of written data (random or constant) at
  26-38 GB/s, so tg (decode) rates on a sparse file are not what a real checkpoint gets.

The vocab is a stand-in of the right size (byte tokens, filler, Qwen2's special tokens
at their real ids, one merge): llama.cpp's loader needs one, llama-bench never tokenizes.

    python tools/gguf_shape.py OUT.gguf [--fill random|sparse]

Needs: gguf==0.19.0 (PyPI; the gguf-py vendored by llama-cpp-python 0.3.36's llama.cpp), numpy.
"""

import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType
from gguf.constants import GGML_QUANT_SIZES

VOCAB = 152064
HIDDEN = 3584
INTERMEDIATE = 18944
LAYERS = 28
HEADS = 28
KV_HEADS = 4
HEAD_DIM = HIDDEN // HEADS
ROPE_THETA = 1_000_000.0
RMS_EPS = 1e-6
CONTEXT = 32768
# Qwen2's special tokens, at their real ids.
ENDOFTEXT, IM_START, IM_END = 151643, 151644, 151645


def bytes_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet: the 256 single-byte tokens, in its order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def vocab() -> tuple[list[str], list[int], list[str]]:
    tokens = bytes_to_unicode() + ["ĠĠ"]
    tokens += [f"tok{i}" for i in range(len(tokens), ENDOFTEXT)]
    tokens += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens += [f"[PAD{i}]" for i in range(len(tokens), VOCAB)]
    assert len(tokens) == VOCAB and len(set(tokens)) == VOCAB
    types = [TokenType.NORMAL] * ENDOFTEXT + [TokenType.CONTROL] * 3
    types += [TokenType.UNUSED] * (VOCAB - len(types))
    return tokens, types, ["Ġ Ġ"]


def tensors() -> list[tuple[str, tuple[int, ...], GGMLQuantizationType]]:
    """(name, numpy-order shape (rows, cols), type), in convert_hf_to_gguf's order."""
    q8, f32 = GGMLQuantizationType.Q8_0, GGMLQuantizationType.F32
    kv = KV_HEADS * HEAD_DIM
    out = [("token_embd.weight", (VOCAB, HIDDEN), q8)]
    for i in range(LAYERS):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (HIDDEN,), f32),
            (b + "attn_q.weight", (HIDDEN, HIDDEN), q8),
            (b + "attn_q.bias", (HIDDEN,), f32),
            (b + "attn_k.weight", (kv, HIDDEN), q8),
            (b + "attn_k.bias", (kv,), f32),
            (b + "attn_v.weight", (kv, HIDDEN), q8),
            (b + "attn_v.bias", (kv,), f32),
            (b + "attn_output.weight", (HIDDEN, HIDDEN), q8),
            (b + "ffn_norm.weight", (HIDDEN,), f32),
            (b + "ffn_gate.weight", (INTERMEDIATE, HIDDEN), q8),
            (b + "ffn_up.weight", (INTERMEDIATE, HIDDEN), q8),
            (b + "ffn_down.weight", (HIDDEN, INTERMEDIATE), q8),
        ]
    out += [("output_norm.weight", (HIDDEN,), f32), ("output.weight", (VOCAB, HIDDEN), q8)]
    return out


def nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    assert shape[-1] % block == 0, (shape, qtype)
    return int(np.prod(shape)) // block * size


def write_random(fout, infos, alignment: int) -> None:
    """Each tensor's data, padded to the alignment, in the order of the tensor infos."""
    rng = np.random.default_rng(7)
    q8 = np.dtype([("d", "<f2"), ("q", "i1", (32,))])
    assert q8.itemsize == GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0][1]
    for name, shape, qtype in infos:
        size = nbytes(shape, qtype)
        if qtype == GGMLQuantizationType.F32:
            values = np.ones(shape, np.float32) if name.endswith("norm.weight") else (
                rng.standard_normal(shape).astype(np.float32) * 0.02)
            fout.write(values.tobytes())
        else:
            blocks = size // q8.itemsize
            step = 1 << 20
            for start in range(0, blocks, step):
                chunk = np.empty(min(step, blocks - start), q8)
                chunk["d"] = np.exp2(rng.uniform(-13, -11, len(chunk))).astype(np.float16)
                chunk["q"] = rng.integers(-127, 128, (len(chunk), 32), dtype=np.int8)
                fout.write(chunk.tobytes())
        fout.write(bytes(GGUFWriter.ggml_pad(size, alignment) - size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the GGUF file to write")
    parser.add_argument("--fill", choices=["random", "sparse"], default="random")
    args = parser.parse_args()
    path = args.out

    w = GGUFWriter(path, "qwen2")
    w.add_name(f"Qwen2-7B shape ({args.fill} weights, fovea speed anchor)")
    w.add_file_type(LlamaFileType.MOSTLY_Q8_0)
    w.add_quantization_version(2)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTERMEDIATE)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    tokens, types, merges = vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ENDOFTEXT)
    w.add_eos_token_id(IM_END)
    w.add_pad_token_id(ENDOFTEXT)
    w.add_add_bos_token(False)

    infos = tensors()
    for name, shape, qtype in infos:
        # float32 + raw_dtype: the shape is taken as the logical one, the type as given.
        w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes(shape, qtype), raw_dtype=qtype)

    # What write_tensors_to_file does: header, KV, tensor infos, padding to the alignment, then
    # each tensor padded to the alignment (offsets as write_ti_data_to_file).
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None and len(w.fout) == 1
    fout = w.fout[0]
    w.write_padding(fout, fout.tell())
    data_start = fout.tell()
    data = sum(GGUFWriter.ggml_pad(nbytes(s, q), w.data_alignment) for _, s, q in infos)
    if args.fill == "random":
        write_random(fout, infos, w.data_alignment)
        assert fout.tell() == data_start + data
    w.close()
    if args.fill == "sparse":
        os.truncate(path, data_start + data)

    # Read it back: every tensor where gguf's reader (and so llama.cpp) expects it, in the file.
    from gguf import GGUFReader

    r = GGUFReader(path)
    assert len(r.tensors) == len(infos)
    size = os.path.getsize(path)
    for t, (name, shape, qtype) in zip(r.tensors, infos):
        assert t.name == name and t.tensor_type == qtype, (t.name, name)
        assert tuple(int(d) for d in reversed(t.shape)) == shape, (name, t.shape, shape)
        assert t.data_offset % w.data_alignment == 0 and t.data_offset + t.n_bytes <= size, name
    params = sum(int(np.prod(s)) for _, s, _ in infos)
    print(
        f"wrote {path}: {len(infos)} tensors, {params / 1e9:.2f} B parameters, "
        f"{size / 2**30:.2f} GiB ({args.fill}; header {data_start} bytes)"
    )


if __name__ == "__main__":
    main()
