"""Seconds of GPU compute per second of video for the extraction models, at their real
sizes with random weights (nothing can be downloaded): CLIP ViT-B/32 on 30 face crops,
CLAP (HTSAT, fused) on the audio, Whisper large-v3-turbo transcribing it, Qwen2.5-VL-3B
describing 8 frames with 75 new tokens, RoBERTa-base on the transcript and the description.

    python benchmarks/bench_extract_gpu.py [--clip-seconds 10] [--batch 16] [--tiny]

The paper reports 1.11 s per second of video on an A100, 0.69 s of it in the VLM; the aim
here is 0.2 s or less through batching. MediaPipe runs on the CPU (see bench_extract.py).
Whisper runs through transformers here (the pipeline uses faster-whisper/CTranslate2,
which the GPU image lacks), so its figure is an upper bound. ``--tiny`` shrinks every
model so the script can be checked on a CPU. Writes JSON to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up call, with device synchronisation."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    samples = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - tic)
    return sorted(samples)[len(samples) // 2]


def clip_stage(args, device, dtype):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig() if not args.tiny else CLIPConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                       "patch_size": 32}, text_config={"hidden_size": 32, "num_hidden_layers": 1,
                                                       "num_attention_heads": 2, "intermediate_size": 64})
    model = CLIPModel(cfg).to(device, dtype).eval()
    crops = torch.randn(args.batch * 30, 3, 224, 224, device=device, dtype=dtype)

    def run():
        with torch.inference_mode():
            model.get_image_features(pixel_values=crops)

    return timed(run, device, args.repeats)


def clap_stage(args, device, dtype):
    from transformers import ClapConfig, ClapModel

    audio = {"enable_fusion": True} if not args.tiny else {
        "enable_fusion": True, "hidden_size": 32, "patch_embeds_hidden_size": 8, "depths": [1, 1],
        "num_attention_heads": [2, 2], "spec_size": 64, "window_size": 4, "num_mel_bins": 16}
    model = ClapModel(ClapConfig(audio_config=audio)).to(device, dtype).eval()
    mel, frames = (64, 1001) if not args.tiny else (16, 201)
    # The fused feature extractor gives 4 x 1001 frames x 64 mel bins per 10 s window.
    windows = args.batch * max(1, round(args.clip_seconds / 10))
    features = torch.randn(windows, 4, frames, mel, device=device, dtype=dtype)
    longer = torch.ones(windows, 1, dtype=torch.bool, device=device)

    def run():
        with torch.inference_mode():
            model.audio_model(input_features=features, is_longer=longer)

    return timed(run, device, args.repeats)


def whisper_stage(args, device, dtype):
    from transformers import GenerationMixin, WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(d_model=1280, encoder_layers=32, encoder_attention_heads=20, decoder_layers=4,
                        decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
                        vocab_size=51866) if not args.tiny else WhisperConfig(
        d_model=32, encoder_layers=1, encoder_attention_heads=2, decoder_layers=1, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=128, vocab_size=51866)
    model = WhisperForConditionalGeneration(cfg).to(device, dtype).eval()
    features = torch.randn(args.batch, 128, 3000, device=device, dtype=dtype)  # Whisper pads to 30 s
    start = torch.full((args.batch, 4), 50258, device=device)  # <|startoftranscript|><|en|><|transcribe|>...
    tokens = round(3.5 * args.clip_seconds)  # about 2.5 words per second of speech, 1.4 tokens per word

    def run():
        with torch.inference_mode():
            # The generic loop: a fixed number of tokens whatever the random weights predict.
            GenerationMixin.generate(model, input_features=features, decoder_input_ids=start, do_sample=False,
                                     max_new_tokens=tokens, min_new_tokens=tokens, eos_token_id=None)

    return timed(run, device, args.repeats)


def qwen_stage(args, device, dtype):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, tie_word_embeddings=True)
    vision = dict(depth=32, hidden_size=1280, out_hidden_size=2048, intermediate_size=3420, num_heads=16,
                  fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    if args.tiny:
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
        vision.update(depth=2, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=2,
                      fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=151655,
                              vision_start_token_id=151652, vision_end_token_id=151653)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(dtype).eval()
    frames, grid_h, grid_w = 8, 26, 30  # 364 x 420 pixels per frame: the describer's max_pixels budget
    merged = grid_h * grid_w // 4  # tokens per frame after the 2 x 2 merge
    prompt_tokens = 220  # the paper's prompt with the chat template
    per_clip = [151644, *([9707] * 5), *([151652, *([151655] * merged), 151653] * frames), *([9707] * prompt_tokens)]
    input_ids = torch.tensor([per_clip] * args.batch, device=device)
    patches = args.batch * frames * grid_h * grid_w
    pixel_values = torch.randn(patches, 3 * 2 * 14 * 14, device=device, dtype=dtype)
    grid = torch.tensor([[1, grid_h, grid_w]] * (args.batch * frames), device=device)
    extra = {}
    import inspect

    if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
        extra["mm_token_type_ids"] = (input_ids == 151655).int()

    def run():
        with torch.inference_mode():
            model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values,
                           image_grid_thw=grid, do_sample=False, max_new_tokens=75, min_new_tokens=75,
                           eos_token_id=None, pad_token_id=0, **extra)

    return timed(run, device, args.repeats)


def roberta_stage(args, device, dtype):
    from transformers import RobertaConfig, RobertaModel

    cfg = RobertaConfig() if not args.tiny else RobertaConfig(hidden_size=32, num_hidden_layers=1,
                                                              num_attention_heads=2, intermediate_size=64)
    model = RobertaModel(cfg).to(device, dtype).eval()
    # A transcript (~3.5 tokens per second) and a <= 75-token description per clip, padded.
    length = max(round(3.5 * args.clip_seconds), 96)
    ids = torch.randint(5, 1000, (2 * args.batch, length), device=device)

    def run():
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))

    return timed(run, device, args.repeats)


STAGES = {"clip": clip_stage, "clap": clap_stage, "whisper": whisper_stage, "qwen2.5-vl": qwen_stage,
          "roberta": roberta_stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="length of each video")
    parser.add_argument("--batch", type=int, default=16, help="videos processed together per model call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--only", nargs="*", choices=list(STAGES))
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name}, {args.batch} videos of {args.clip_seconds:g} s per call, {dtype}")
    results = {}
    for stage, fn in STAGES.items():
        if args.only and stage not in args.only:
            continue
        try:
            seconds = fn(args, device, dtype)
        except Exception as err:  # one failing model must not cost the others' figures
            print(f"{stage:>11}: failed: {type(err).__name__}: {err}")
            continue
        per_video_second = seconds / (args.batch * args.clip_seconds)
        results[stage] = per_video_second
        print(f"{stage:>11}: {seconds:7.3f} s per call, {per_video_second:.4f} s per second of video", flush=True)
        torch.cuda.empty_cache() if device.type == "cuda" else None
    total = sum(results.values())
    print(f"{'total':>11}: {total:.4f} s of compute per second of video "
          f"(paper: 1.11 on an A100, 0.69 of it in the VLM; aim <= 0.2); VLM share "
          f"{results.get('qwen2.5-vl', float('nan')) / total:.0%}" if total else "no stage ran")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"device": name, "batch": args.batch, "clip_seconds": args.clip_seconds,
                       "seconds_per_video_second": results, "total": total}, handle, indent=2)


if __name__ == "__main__":
    main()
