"""Behaviour descriptions of a clip by a vision-language model (paper section 2.2, appendix A.2).

``Describer(backend="transformers" | "vllm").describe_batch(clips)`` asks Qwen2.5-VL-3B-Instruct
to describe each clip with the paper's prompt (``PROMPT``, appendix A.2 verbatim; the paper's
shorter variant is ``SHORT_PROMPT``), greedy decoding, at most ``max_new_tokens`` (75) new
tokens. ``num_frames`` frames are taken uniformly from each clip and, when larger than
``max_pixels``, downscaled (aspect kept) before either backend sees them, so both backends
get the same pixels and the token count per frame stays bounded.

The prompt text is the Qwen chat format written out (system "You are a helpful assistant.",
one user turn with the vision block then the prompt, then the assistant header): exactly what
the checkpoint's chat template renders for that conversation, and the form vLLM's own
Qwen2.5-VL example uses, so no chat template file is needed.

Backends:

- ``transformers`` (CPU or GPU): ``Qwen2_5_VLForConditionalGeneration`` with the tokenizer and
  the PIL Qwen2-VL image processor. The frames go in as a sequence of images (one
  ``<|vision_start|><|image_pad|>...<|vision_end|>`` block per frame), not as a video:
  Qwen2-VL's video processor needs torchvision, which cannot be installed beside the CPU
  torch build here, and without torchvision transformers 5.24 cannot even construct
  ``Qwen2_5_VLProcessor`` (its argument check looks the video processor class up in a
  mapping that is a dummy object). So this module does the processor's two remaining jobs
  itself: it expands each image placeholder to the number of merged patches the image
  processor reports, and builds ``mm_token_type_ids`` (1 at image tokens), from which
  transformers 5 computes the 3D rotary positions. Checked on a GPU machine that has
  torchvision (transformers 5.17): for a batch of two clips the official processor gave
  identical input_ids, attention_mask, mm_token_type_ids, pixel_values and image_grid_thw,
  and the same generated text.
- ``vllm`` (CUDA only; ``pip install -e .[gpu]``): ``LLM.generate`` with one
  ``{"prompt": ..., "multi_modal_data": {"video": frames}}`` request per clip, frames as a
  uint8 [T, H, W, 3] array, so Qwen2.5-VL sees a real video (two frames per temporal patch;
  vLLM assumes its default sampling rate for the temporal positions). vllm is imported when
  the backend is built; without it the constructor raises ImportError naming the extra.

The two backends therefore do not give identical text for a clip; the manifest records the
backend in ``info.settings``.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np

from extraction.encoders import ModelInfo, describe_model, resolve_source
from extraction.types import StageError

PROMPT = (
    "You are an expert in visual human behavior analysis. Carefully examine the provided video "
    "clip, which features a person facing the camera. Your task is to describe, in continuous "
    "natural language, the person's visible emotional state, personality tendencies, or "
    "possible signs of ambivalence and hesitancy as reflected through their nonverbal "
    "behavior.\n"
    "\n"
    "Focus exclusively on observable cues such as facial muscle movements (eyes, eyebrows, "
    "mouth, gaze), body posture, gestures, and head motions. Infer emotional tendencies "
    "(neutral, anger, disgust, fear, happiness, sadness, surprise), personality traits "
    "(Openness, Conscientiousness, Extraversion, Agreeableness, Neuroticism), or subtle "
    "conflicting signals of uncertainty and hesitation when visible.\n"
    "\n"
    "In your description:\n"
    "\n"
    "- Comment on the person's appearance, posture, gestures, and expressiveness as indicators "
    "of emotional state, personality, or ambivalence.\n"
    "- Observe and explain facial expressions and body movements as cues, highlighting "
    "consistency or discordance across behaviors.\n"
    "- Avoid assumptions about personal background, spoken content, or context beyond what is "
    "visually observable.\n"
    "- If the state appears mixed or ambiguous, briefly mention this with a short explanation "
    "based on visible cues.\n"
    "\n"
    "Your final response must be a fluent, continuous natural language interpretation of the "
    "person's visible behavior in the video, written as a single coherent paragraph without any "
    "line breaks, bullet points, special characters, or formatting. The response must express a "
    "complete, finished thought and must not exceed 75 tokens in total."
)

SHORT_PROMPT = (
    "You are an expert in visual human behavior analysis. Analyze the provided video of a "
    "person facing the camera and describe, in continuous natural language, their visible "
    "emotional state, personality tendencies, or signs of ambivalence based only on facial "
    "expressions, posture, gestures, and head movements. Avoid assumptions beyond what is "
    "visually observable. Write one coherent paragraph not exceeding 75 tokens."
)

SYSTEM = "You are a helpful assistant."
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
# Qwen's recommended per-frame budget for video (qwen-vl-utils examples): a 640x360 frame
# becomes 504x280 pixels, 180 tokens as an image, 90 per frame as a video.
DEFAULT_MAX_PIXELS = 360 * 420


def chat_prompt(vision: str, prompt: str) -> str:
    """One user turn (vision block(s) then ``prompt``) in Qwen's chat format, ready to generate."""
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{vision}{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def sample_frames(clip: np.ndarray, num_frames: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [min(T, num_frames), H, W, 3], uniformly spaced, first and last kept."""
    if len(clip) <= num_frames:
        return clip
    return clip[np.linspace(0, len(clip) - 1, num_frames).round().astype(int)]


def fit_frames(frames: np.ndarray, max_pixels: int) -> np.ndarray:
    """Downscale uint8 [T, H, W, 3] (bicubic, aspect kept) so that H * W <= max_pixels."""
    height, width = frames.shape[1:3]
    scale = (max_pixels / (height * width)) ** 0.5
    if scale >= 1:
        return frames
    from PIL import Image

    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames])


class Describer:
    """``describe_batch(list of uint8 [T, H, W, 3]) -> list[str | StageError]``, one per clip.

    A clip whose description comes out empty (or that has no frames) gets
    ``StageError("describe", ...)`` in its place rather than an exception, so one bad clip
    does not discard the batch's other descriptions. ``describe(clip)`` raises instead.
    batch_size: clips per ``generate`` call of the transformers backend (vLLM schedules its
    own batches); dtype: "auto" keeps the checkpoint's (bfloat16 for Qwen2.5-VL).
    """

    default_id = "Qwen/Qwen2.5-VL-3B-Instruct"

    def __init__(self, backend: str = "transformers", model_id: str | None = None,
                 local_dir: str | Path | None = None, device: str = "cpu", max_new_tokens: int = 75,
                 num_frames: int = 8, max_pixels: int = DEFAULT_MAX_PIXELS, prompt: str = PROMPT,
                 batch_size: int = 4, dtype: str = "auto") -> None:
        if backend not in ("transformers", "vllm"):
            raise ValueError(f"unknown describer backend {backend!r}; choose 'transformers' or 'vllm'")
        self.model_id = model_id or self.default_id
        source = resolve_source(self.model_id, local_dir)
        self.num_frames = num_frames
        self.max_pixels = max_pixels
        self.prompt = prompt
        self.batch_size = batch_size
        if backend == "vllm":
            self._backend = _VllmBackend(source, max_new_tokens, dtype)
        else:
            self._backend = _TransformersBackend(source, device, max_new_tokens, dtype)
        self.info: ModelInfo = describe_model("qwen2.5-vl", self.model_id, source, None, {
            "backend": backend,
            "frames_as": "video" if backend == "vllm" else "images",
            "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
            "max_new_tokens": max_new_tokens,
            "num_frames": num_frames,
            "max_pixels": max_pixels,
        })

    def describe(self, clip: np.ndarray) -> str:
        result = self.describe_batch([clip])[0]
        if isinstance(result, StageError):
            raise result
        return result

    def describe_batch(self, clips: list[np.ndarray]) -> list[str | StageError]:
        results: list[str | StageError] = []
        ready = []
        for i, clip in enumerate(clips):
            clip = np.asarray(clip)
            if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
                raise ValueError(f"clip {i}: expected uint8 frames [T, H, W, 3], got {clip.dtype} {clip.shape}")
            results.append(StageError("describe", "no frames"))
            if len(clip):
                ready.append((i, fit_frames(sample_frames(clip, self.num_frames), self.max_pixels)))
        # vLLM schedules its own batches: hand it everything at once.
        step = self.batch_size if isinstance(self._backend, _TransformersBackend) else max(len(ready), 1)
        for start in range(0, len(ready), step):
            chunk = ready[start : start + step]
            texts = self._backend.generate([frames for _, frames in chunk], self.prompt)
            for (i, _), text in zip(chunk, texts):
                text = text.strip()
                results[i] = text if text else StageError("describe", "empty description")
        return results


class _TransformersBackend:
    """Qwen2.5-VL in transformers, frames as images (see the module docstring for why)."""

    def __init__(self, source: str, device: str, max_new_tokens: int, dtype: str) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        self.tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
        # The PIL backend on every machine, so that the pixels do not depend on torchvision.
        self.image_processor = AutoImageProcessor.from_pretrained(source, backend="pil")
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=dtype).to(device).eval()
        self.device = device
        # Greedy and nothing else: explicit values override the checkpoint's sampling defaults
        # (do_sample, top_k, top_p, temperature, repetition_penalty 1.05 in generation_config.json).
        self.generate_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                    repetition_penalty=1.0, pad_token_id=self.tokenizer.pad_token_id)
        self.image_token_id = self.model.config.image_token_id
        # transformers >= 5 derives the 3D rotary positions from mm_token_type_ids; 4.x from input_ids.
        self.pass_token_types = "mm_token_type_ids" in inspect.signature(self.model.forward).parameters

    def generate(self, clips: list[np.ndarray], prompt: str) -> list[str]:
        import torch

        vision = self.image_processor(images=[frame for clip in clips for frame in clip], return_tensors="pt")
        merged = (vision["image_grid_thw"].prod(dim=-1) // self.image_processor.merge_size**2).tolist()
        texts, first = [], 0
        for clip in clips:
            # One block per frame, its placeholder repeated once per merged patch of that frame.
            blocks = "".join(f"{VISION_START}{IMAGE_PAD * n}{VISION_END}" for n in merged[first : first + len(clip)])
            texts.append(chat_prompt(blocks, prompt))
            first += len(clip)
        inputs = self.tokenizer(texts, padding=True, return_tensors="pt")
        inputs.update(vision)
        if self.pass_token_types:
            inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.image_token_id).int()
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **self.generate_kwargs)
        return self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


class _VllmBackend:
    """Qwen2.5-VL in vLLM, frames as one video per request (CUDA; vLLM picks the GPU itself)."""

    def __init__(self, source: str, max_new_tokens: int, dtype: str) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as error:
            raise ImportError(
                "the 'vllm' describer backend needs vLLM, a CUDA-only optional extra: "
                "pip install -e .[gpu] (or use backend='transformers')"
            ) from error
        # 8192 tokens hold the prompt (~400), 75 new tokens and the video at the default
        # frame budget with room to spare; the model's own 128k would reserve a huge KV cache.
        self.llm = LLM(model=source, dtype=dtype, max_model_len=8192, limit_mm_per_prompt={"video": 1}, seed=0)
        self.params = SamplingParams(max_tokens=max_new_tokens, temperature=0)

    def generate(self, clips: list[np.ndarray], prompt: str) -> list[str]:
        text = chat_prompt(f"{VISION_START}{VIDEO_PAD}{VISION_END}", prompt)
        requests = [{"prompt": text, "multi_modal_data": {"video": clip}} for clip in clips]
        outputs = self.llm.generate(requests, sampling_params=self.params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]
