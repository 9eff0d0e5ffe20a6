"""Behaviour descriptions of a clip by a vision-language model (paper section 2.2, appendix A.2).

``Describer(vlm=..., backend="transformers" | "vllm").describe_batch(clips)`` asks a VLM
(default Qwen2.5-VL-3B-Instruct) to describe each clip with a prompt (default the paper's,
``PROMPT``), greedy decoding, at most ``max_new_tokens`` (75) new tokens. ``num_frames``
frames are taken uniformly from each clip and, when larger than ``max_pixels``, downscaled
(aspect kept) before either backend sees them, so both backends get the same pixels and the
token count per frame stays bounded.

VLMs (``VLMS``, paper Table 5), by config name:

- ``qwen2.5-vl-3b``: Qwen/Qwen2.5-VL-3B-Instruct, both backends;
- ``internvl2.5-4b``: OpenGVLab/InternVL2_5-4B. That repository is InternVL's own format
  (model_type ``internvl_chat``, model code inside the repository); the transformers backend
  reads transformers' InternVL format (``internvl``, e.g. a checkpoint converted with
  transformers' ``models/internvl/convert_internvl_weights_to_hf.py``, given as
  ``local_dir``) and says so when handed the original. vLLM implements the original
  format itself (it still reads the repository's config code: ``trust_remote_code``);
- ``eagle2-2b``: nvidia/Eagle2-2B, whose model code exists only inside its repository: no
  transformers backend (the constructor says so); the vLLM backend passes the id through.

Prompts (``PROMPTS``, paper Table 4), by config name: ``full`` and ``short`` are appendix
A.2 verbatim (``PROMPT``, ``SHORT_PROMPT``); ``zhang2025`` and ``cheng2024`` are the
emotion-only prompts of Zhang et al. (2025b, DialogueLLM) and Cheng et al. (2024,
Emotion-LLaMA) that Table 4 compares with, which the paper cites without reproducing their
wording: they need the wording as ``prompt_text`` (as does ``custom``).

Qwen's prompt is its chat format written out (system "You are a helpful assistant.",
one user turn with the vision block then the prompt, then the assistant header): exactly what
the checkpoint's chat template renders for that conversation, and the form vLLM's own
Qwen2.5-VL example uses, so no chat template file is needed. The other VLMs' prompts come
from their checkpoint's chat template.

Backends:

- ``transformers`` (CPU or GPU): for Qwen2.5-VL, ``Qwen2_5_VLForConditionalGeneration`` with the
  tokenizer and the PIL Qwen2-VL image processor. The frames go in as a sequence of images (one
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
  and the same generated text. For InternVL, ``InternVLForConditionalGeneration`` with the
  PIL GotOcr2 image processor (one 448-pixel tile per frame) and the text
  ``InternVLProcessor`` writes for a video: ``Frame<i>: <img><IMG_CONTEXT>...</img>`` per
  frame, then the prompt.
- ``vllm`` (CUDA only; ``pip install -e .[gpu]``): ``LLM.generate`` with one
  ``{"prompt": ..., "multi_modal_data": {"video": frames}}`` request per clip
  (``vllm_request``), frames as a uint8 [T, H, W, 3] array, so the VLM sees a real video
  (for Qwen2.5-VL, two frames per temporal patch; vLLM assumes its default sampling rate
  for the temporal positions), decoded greedily (``vllm_sampling``). vllm is imported when
  the backend is built; without it the constructor raises ImportError naming the extra.
  vLLM itself has not run on this project's machines (it cannot be installed on them): the
  request is tested against the transformers backend's inputs for the same clip (same
  frames, the same text as Qwen2.5-VL's chat template, the same greedy decoding); the
  other VLMs follow vLLM's documented ``<video>`` placeholder for InternVL-style models.

The two backends therefore do not give identical text for a clip; the manifest records the
backend in ``info.settings``.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from extraction.encoder_base import ModelInfo, describe_model, resolve_source
from extraction.types import ModelCodeUnavailable, StageError
from scd_core.registry import Registry

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


@dataclass(frozen=True)
class Prompt:
    """A named prompt of Table 4: its wording (None where the paper does not give it) and source."""

    text: str | None
    source: str


PROMPTS: Registry[Prompt] = Registry("prompt")
PROMPTS.register("full")(Prompt(PROMPT, "paper appendix A.2, full proposed prompt (Table 4, Exp-1)"))
PROMPTS.register("short")(Prompt(SHORT_PROMPT, "paper appendix A.2, short proposed prompt (Table 4, Exp-2)"))
PROMPTS.register("zhang2025")(Prompt(None, "the prompt of Zhang et al. (2025b), DialogueLLM (Table 4, Exp-3), "
                                           "cited but not reproduced in the paper"))
PROMPTS.register("cheng2024")(Prompt(None, "the prompt of Cheng et al. (2024), Emotion-LLaMA (Table 4, Exp-4), "
                                           "cited but not reproduced in the paper"))
PROMPTS.register("custom")(Prompt(None, "a wording of your own"))


def resolve_prompt(name: str, text: str | None = None) -> str:
    """The wording of prompt ``name``: the paper's for ``full``/``short``, else ``text``, which the
    prompts without a known wording require and the others refuse (one prompt, one wording)."""
    prompt = PROMPTS.get(name)
    if prompt.text is not None:
        if text is not None:
            raise ValueError(f"prompt {name!r} has the paper's wording; drop prompt_text or use prompt 'custom'")
        return prompt.text
    if text is None or not text.strip():
        raise ValueError(f"prompt {name!r} ({prompt.source}) has no wording here: give it as prompt_text")
    return text


SYSTEM = "You are a helpful assistant."
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"  # InternVL's
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


def greedy_generation(max_new_tokens: int) -> dict:
    """``generate`` settings of the transformers backend: greedy, nothing else. Explicit values,
    because they override the checkpoint's sampling defaults (do_sample, top_k, top_p,
    temperature, repetition_penalty 1.05 in Qwen's generation_config.json)."""
    return {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0}


def vllm_sampling(max_new_tokens: int) -> dict:
    """``vllm.SamplingParams`` arguments that decode as ``greedy_generation`` does: temperature 0
    is vLLM's greedy, and an explicit SamplingParams leaves the checkpoint's generation_config
    (its repetition penalty) out."""
    return {"max_tokens": max_new_tokens, "temperature": 0.0, "repetition_penalty": 1.0}


def vllm_request(frames: np.ndarray, prompt: str, vlm: VLM, chat_template=None) -> dict:
    """The request ``LLM.generate`` receives for one clip: ``{"prompt": text, "multi_modal_data":
    {"video": frames}}``, frames uint8 [T, H, W, 3] (``Describer.prepare``'s).

    The text: for Qwen (``vlm.vllm_video`` None), Qwen's chat format written out with one video
    block (``<|vision_start|><|video_pad|><|vision_end|>``, which vLLM expands to the video's
    tokens) before the prompt; for the others, ``chat_template(messages)`` (the checkpoint
    tokenizer's ``apply_chat_template``) over one user turn "<video placeholder>\n<prompt>".
    """
    if vlm.vllm_video is None:
        text = chat_prompt(f"{VISION_START}{VIDEO_PAD}{VISION_END}", prompt)
    elif chat_template is None:
        raise ValueError(f"VLM {vlm.name!r}: its vLLM prompt comes from the checkpoint's chat template; pass it")
    else:
        text = chat_template([{"role": "user", "content": f"{vlm.vllm_video}\n{prompt}"}])
    return {"prompt": text, "multi_modal_data": {"video": frames}}


class Describer:
    """``describe_batch(list of uint8 [T, H, W, 3]) -> list[str | StageError]``, one per clip.

    A clip whose description comes out empty (or that has no frames) gets
    ``StageError("describe", ...)`` in its place rather than an exception, so one bad clip
    does not discard the batch's other descriptions. ``describe(clip)`` raises instead.
    vlm: a name of ``VLMS`` (its checkpoint is the default ``model_id``); prompt: the wording
    (``resolve_prompt`` turns a config name into it); batch_size: clips per ``generate``
    call of the transformers backend (vLLM schedules its own batches); dtype: "auto" keeps
    the checkpoint's (bfloat16 for Qwen2.5-VL); trust_remote_code: lets vLLM run the Python
    code inside a checkpoint's repository (InternVL's and Eagle's original formats need it).
    """

    def __init__(self, backend: str = "transformers", model_id: str | None = None,
                 local_dir: str | Path | None = None, device: str = "cpu", max_new_tokens: int = 75,
                 num_frames: int = 8, max_pixels: int = DEFAULT_MAX_PIXELS, prompt: str = PROMPT,
                 batch_size: int = 4, dtype: str = "auto", vlm: str = "qwen2.5-vl-3b",
                 trust_remote_code: bool = False) -> None:
        if backend not in ("transformers", "vllm"):
            raise ValueError(f"unknown describer backend {backend!r}; choose 'transformers' or 'vllm'")
        spec = VLMS.get(vlm)
        self.model_id = model_id or spec.default_id
        source = resolve_source(self.model_id, local_dir)
        self.num_frames = num_frames
        self.max_pixels = max_pixels
        self.prompt = prompt
        self.batch_size = batch_size
        if backend == "vllm":
            self._backend = _VllmBackend(source, max_new_tokens, dtype, spec, trust_remote_code)
        elif spec.transformers is None:
            raise ModelCodeUnavailable(f"VLM {vlm!r} ({self.model_id}) has no transformers backend: {spec.note}")
        else:
            self._backend = spec.transformers(source, device, max_new_tokens, dtype, spec)
        self.info: ModelInfo = describe_model(vlm, self.model_id, source, None, {
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

    def prepare(self, clip: np.ndarray, where: str = "clip") -> np.ndarray:
        """The frames either backend receives for ``clip`` (uint8 [T, H, W, 3]): ``num_frames``
        of them, uniformly spaced, downscaled to ``max_pixels`` -> uint8 [t, h, w, 3]."""
        clip = np.asarray(clip)
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            raise ValueError(f"{where}: expected uint8 frames [T, H, W, 3], got {clip.dtype} {clip.shape}")
        return fit_frames(sample_frames(clip, self.num_frames), self.max_pixels) if len(clip) else clip

    def requests(self, clips: list[np.ndarray]):
        """What the backend's model receives for ``clips`` (each uint8 [T, H, W, 3], non-empty):
        transformers, one tokenised batch (``input_ids``, ``attention_mask``, ``pixel_values``,
        ``image_grid_thw`` ...); vLLM, one ``vllm_request`` per clip."""
        return self._backend.requests([self.prepare(c, f"clip {i}") for i, c in enumerate(clips)], self.prompt)

    def describe_batch(self, clips: list[np.ndarray]) -> list[str | StageError]:
        results: list[str | StageError] = []
        ready = []
        for i, clip in enumerate(clips):
            frames = self.prepare(clip, f"clip {i}")
            results.append(StageError("describe", "no frames"))
            if len(frames):
                ready.append((i, frames))
        # vLLM schedules its own batches: hand it everything at once.
        step = self.batch_size if isinstance(self._backend, _TransformersBackend) else max(len(ready), 1)
        for start in range(0, len(ready), step):
            chunk = ready[start : start + step]
            texts = self._backend.generate([frames for _, frames in chunk], self.prompt)
            for (i, _), text in zip(chunk, texts):
                text = text.strip()
                results[i] = text if text else StageError("describe", "empty description")
        return results


def _model_type(source: str) -> str | None:
    """``model_type`` of the checkpoint's config.json (read as JSON: no repository code runs)."""
    from transformers import PretrainedConfig

    return PretrainedConfig.get_config_dict(source)[0].get("model_type")


class _TransformersBackend:
    """A VLM in transformers, frames as images; subclasses load the model and build its inputs.

    ``model_type``: the config's model_type the subclass reads; any other raises
    ``ModelCodeUnavailable`` before weights are loaded, quoting the VLM's ``note``.
    """

    model_type: ClassVar[str]

    def __init__(self, source: str, device: str, max_new_tokens: int, dtype: str, spec: VLM) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        found = _model_type(source)
        if found != self.model_type:
            raise ModelCodeUnavailable(f"{source} has model_type {found!r}; the transformers backend for "
                                       f"{spec.name!r} reads {self.model_type!r}: {spec.note}")
        self.tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
        # The PIL backend on every machine, so that the pixels do not depend on torchvision.
        self.image_processor = AutoImageProcessor.from_pretrained(source, backend="pil")
        self.model = self._load(source, dtype).to(device).eval()
        self.device = device
        self.generate_kwargs = {**greedy_generation(max_new_tokens), "pad_token_id": self.tokenizer.pad_token_id}

    def _load(self, source: str, dtype: str):
        raise NotImplementedError

    def requests(self, clips: list[np.ndarray], prompt: str) -> dict:
        """Tokenised prompts (left-padded) and pixel inputs for a batch of clips."""
        raise NotImplementedError

    def generate(self, clips: list[np.ndarray], prompt: str) -> list[str]:
        import torch

        inputs = self.requests(clips, prompt).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **self.generate_kwargs)
        return self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


class _QwenBackend(_TransformersBackend):
    """Qwen2.5-VL in transformers, frames as images (see the module docstring for why)."""

    model_type = "qwen2_5_vl"

    def _load(self, source: str, dtype: str):
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=dtype)
        self.image_token_id = model.config.image_token_id
        # transformers >= 5 derives the 3D rotary positions from mm_token_type_ids; 4.x from input_ids.
        self.pass_token_types = "mm_token_type_ids" in inspect.signature(model.forward).parameters
        return model

    def requests(self, clips: list[np.ndarray], prompt: str) -> dict:
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
        return inputs


class _InternVLBackend(_TransformersBackend):
    """InternVL (transformers' format) in transformers: each frame one tile of the vision
    tower's size, written into the prompt as ``InternVLProcessor`` writes a video's frames."""

    model_type = "internvl"

    def _load(self, source: str, dtype: str):
        from transformers import InternVLForConditionalGeneration

        model = InternVLForConditionalGeneration.from_pretrained(source, dtype=dtype)
        config = model.config
        size = np.atleast_1d(config.vision_config.image_size)[0] // np.atleast_1d(config.vision_config.patch_size)[0]
        # Pixel shuffle merges downsample_ratio^-2 patches into one token.
        self.tokens_per_frame = int(size**2 * config.downsample_ratio**2)
        if self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT) != config.image_token_id:
            raise ValueError(f"{source}: the tokenizer's {IMG_CONTEXT} is not the config's image_token_id")
        return model

    def requests(self, clips: list[np.ndarray], prompt: str) -> dict:
        frames = [frame for clip in clips for frame in clip]
        vision = self.image_processor(images=frames, crop_to_patches=False, return_tensors="pt")
        texts = []
        for clip in clips:
            video = "\n".join(f"Frame{i + 1}: {IMG_START}{IMG_CONTEXT * self.tokens_per_frame}{IMG_END}"
                              for i in range(len(clip)))
            texts.append(self.tokenizer.apply_chat_template([{"role": "user", "content": f"{video}\n{prompt}"}],
                                                            tokenize=False, add_generation_prompt=True))
        inputs = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs["pixel_values"] = vision["pixel_values"]
        return inputs


class _VllmBackend:
    """A VLM in vLLM, frames as one video per request (CUDA; vLLM picks the GPU itself)."""

    def __init__(self, source: str, max_new_tokens: int, dtype: str, spec: VLM, trust_remote_code: bool) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as error:
            raise ImportError(
                "the 'vllm' describer backend needs vLLM, a CUDA-only optional extra: "
                "pip install -e .[gpu] (or use backend='transformers')"
            ) from error
        # 8192 tokens hold the prompt (~400), 75 new tokens and the video at the default
        # frame budget with room to spare; the model's own 128k would reserve a huge KV cache.
        self.llm = LLM(model=source, dtype=dtype, max_model_len=8192, limit_mm_per_prompt={"video": 1}, seed=0,
                       trust_remote_code=trust_remote_code)
        self.params = SamplingParams(**vllm_sampling(max_new_tokens))
        self.spec = spec

    def requests(self, clips: list[np.ndarray], prompt: str) -> list[dict]:
        def template(messages: list[dict]) -> str:
            return self.llm.get_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

        return [vllm_request(clip, prompt, self.spec, template) for clip in clips]

    def generate(self, clips: list[np.ndarray], prompt: str) -> list[str]:
        outputs = self.llm.generate(self.requests(clips, prompt), sampling_params=self.params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]


@dataclass(frozen=True)
class VLM:
    """A describer VLM: default checkpoint, transformers backend (None: none exists), the
    video placeholder its vLLM prompt uses (None: Qwen's written-out format) and a note on
    formats for the errors."""

    name: str
    default_id: str
    transformers: type[_TransformersBackend] | None
    vllm_video: str | None
    note: str


VLMS: Registry[VLM] = Registry("VLM")
for spec in (
    VLM("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", _QwenBackend, None,
        "give a Qwen2.5-VL checkpoint"),
    VLM("internvl2.5-4b", "OpenGVLab/InternVL2_5-4B", _InternVLBackend, "<video>",
        "OpenGVLab/InternVL2_5-4B is InternVL's own format (model_type 'internvl_chat', model code inside the "
        "repository); convert it to transformers' InternVL format with transformers' "
        "models/internvl/convert_internvl_weights_to_hf.py and give the result as local_dir, or use the vllm "
        "backend (with trust_remote_code)"),
    VLM("eagle2-2b", "nvidia/Eagle2-2B", None, "<video>",
        "Eagle2's model code (model_type 'eagle_chat') exists only inside its Hub repository and transformers has "
        "no Eagle2 class; use the vllm backend (with trust_remote_code) if your vLLM supports it"),
):
    VLMS.register(spec.name)(spec)
